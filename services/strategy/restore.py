"""After a restart: which of the OMS's orders give each strategy back its positions, and which strategies cannot
be restored exactly from them (they start paused, with the reason, rather than trade on a wrong position).

Pure: the module asks ListOrders (by strategy_tag) and hands the replies here; the engine applies the result.

What the OMS contract offers (ListOrdersRequest: open_only, strategy_tag, limit; no day filter, no paging; each
order as its latest row, newest created first) bounds what can be exact:
- A reply holding `limit` orders may have lost older ones. For an intraday-only strategy (Strategy.intraday_only)
  only today's (IST) orders matter, MIS positions not surviving the day: its reply is complete for today when it
  reaches an order last updated before today (the list is newest-created first, and created <= last updated).
  Otherwise a full reply is truncated: the strategy starts paused.
- An order's fills come as one (its latest row's filled_quantity), applied at its latest sequence. A square-off
  fill between two fills of a strategy order on the same token and product cannot be placed: when applying that
  order before the square-off instead gives the strategy another position, it starts paused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.strategy.engine import StrategyEngine
from services.strategy.plugins import Strategy
from shared.clock import Clock, ist_day_number
from shared.contracts import trading_pb2
from shared.instruments import InstrumentBook

RESTORE_LIMIT = 10_000  # ListOrdersRequest.limit of each read
_INTRADAY = frozenset({trading_pb2.PRODUCT_UNSPECIFIED, trading_pb2.PRODUCT_MIS})


@dataclass
class Plan:
    orders: list[trading_pb2.OrderUpdate] = field(default_factory=list)  # to apply (engine.load_orders)
    refused: dict[str, str] = field(default_factory=dict)  # strategy name -> why it starts paused


def plan(strategies: Iterable[Strategy], own: dict[str, list[trading_pb2.OrderUpdate]],
         squareoffs: list[trading_pb2.OrderUpdate], squareoff_tag: str, today: int, limit: int) -> Plan:
    """The orders to apply: each strategy's own (only today's for an intraday-only one) and the square-offs that
    can still close a position (today's intraday ones, and every delivery/carry-forward one); and the strategies
    whose replies were cut at `limit` before what they need."""
    out = Plan()
    strategies = list(strategies)
    for strategy in strategies:
        orders = [o for o in own.get(strategy.name, []) if o.request.strategy_tag == strategy.name]
        if len(own.get(strategy.name, [])) >= limit and not _reaches_before(orders, today, strategy):
            out.refused[strategy.name] = (f"its orders were read with ListOrders(limit={limit}) and the reply was "
                                          "full: older ones, and the positions they hold, may be missing")
        out.orders.extend(o for o in orders if not strategy.intraday_only or _day(o) == today)
    tagged = [o for o in squareoffs if o.request.strategy_tag == squareoff_tag]
    if len(squareoffs) >= limit:
        for strategy in strategies:
            if not _reaches_before(tagged, today, strategy) and strategy.name not in out.refused:
                out.refused[strategy.name] = (f"the square-off orders were read with ListOrders(limit={limit}) and "
                                              "the reply was full: an older square-off may have closed its position")
    out.orders.extend(o for o in tagged if o.request.product not in _INTRADAY or _day(o) == today)
    return out


def _day(order: trading_pb2.OrderUpdate) -> int:
    return ist_day_number(order.ts_ns)


def _reaches_before(orders: list[trading_pb2.OrderUpdate], today: int, strategy: Strategy) -> bool:
    """A full reply is enough for an intraday-only strategy when it holds an order of an earlier day."""
    return strategy.intraday_only and any(_day(o) < today for o in orders)


def ambiguous(strategies: Iterable[Strategy], instruments: InstrumentBook, clock: Clock,
              orders: list[trading_pb2.OrderUpdate], squareoff_tag: str) -> dict[str, str]:
    """Strategies whose restored positions depend on where a square-off fell among the fills of one of their
    orders: replayed again with each square-off after the first later-finished order of each strategy on its
    token and product (as if that order had filled before it), their positions differ."""
    by_sequence = sorted(orders, key=lambda u: u.sequence)
    as_listed = _positions(strategies, instruments, clock, by_sequence)
    keys: dict[int, float] = {}
    for i, sq in enumerate(by_sequence):
        if sq.request.strategy_tag != squareoff_tag or not sq.filled_quantity:
            continue
        later = {}
        for order in by_sequence[i + 1:]:
            if (order.request.strategy_tag != squareoff_tag and order.filled_quantity
                    and _same_position(order, sq) and order.request.strategy_tag not in later):
                later[order.request.strategy_tag] = order.sequence
        if later:
            keys[id(sq)] = max(later.values()) + 0.5
    if not keys:
        return {}
    moved = sorted(by_sequence, key=lambda u: keys.get(id(u), u.sequence))
    other = _positions(strategies, instruments, clock, moved)
    return {name: ("a square-off filled while one of its orders may still have been filling: its position in "
                   f"{_differences(as_listed[name], other[name])} cannot be told from the OMS's orders")
            for name in as_listed if as_listed[name] != other[name]}


def _same_position(a: trading_pb2.OrderUpdate, b: trading_pb2.OrderUpdate) -> bool:
    return a.request.token == b.request.token and (a.request.product or trading_pb2.PRODUCT_MIS) == (
        b.request.product or trading_pb2.PRODUCT_MIS)


def _positions(strategies: Iterable[Strategy], instruments: InstrumentBook, clock: Clock,
               orders: list[trading_pb2.OrderUpdate]) -> dict[str, dict[tuple[int, int], int]]:
    """Each strategy's positions after applying `orders` in this order, on fresh copies of the strategies."""
    copies = [type(s)(s.name, s.params, s.tokens) for s in strategies]
    engine = StrategyEngine(copies, instruments, clock)
    engine.load_orders(orders, keep_order=True)
    return {s.name: {k: v for k, v in s.positions().items() if v} for s in copies}


def _differences(a: dict[tuple[int, int], int], b: dict[tuple[int, int], int]) -> str:
    tokens = sorted({key[0] for key in a.keys() | b.keys() if a.get(key, 0) != b.get(key, 0)})
    return ", ".join(f"token {token}" for token in tokens)
