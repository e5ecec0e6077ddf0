"""The strategy plugin interface: the Strategy base class, order intents, and the registry by kind.

Plugins see closed candles (and optionally ticks, or only the ticks that reach prices they name) and their own order
updates; they never touch the bus.

How to add a strategy
---------------------
1. Create ``services/strategy/<your_kind>.py`` with a ``StrategyParams`` model (defaults that
   trade on the synthetic market, ``extra="forbid"`` so a typo fails; true/false is refused for its numbers) and a
   ``Strategy`` subclass::

       class BreakoutParams(StrategyParams):
           model_config = ConfigDict(extra="forbid")
           lookback: int = Field(default=20, ge=2)
           quantity: int = Field(default=1, ge=1)

       @register
       class Breakout(Strategy):
           kind = "BREAKOUT"
           Params = BreakoutParams

           def reset(self) -> None:          # (re)build per-token indicator state from self.params
               self.highs = {}

           def on_candle(self, candle, ctx) -> list[OrderIntent]:
               ...                            # update indicators; return [] or intents

2. Import the module in ``_load_builtins`` below so its ``@register`` runs.
3. Configure it: ``[[strategy.strategies]]`` with ``name``, ``kind = "BREAKOUT"``, ``symbols``
   (empty = every instrument) and ``params = { lookback = 30 }``.

What the base class gives you: ``self.position(token)`` (net quantity from this strategy's
fills, read from ORDER_UPDATES whose ``strategy_tag`` is the strategy's name), ``self.entry_price(token)`` (the
average price of the fills that opened it) and
``self.is_pending(token, now_ns)`` (a signal was sent and its order has not finished), so a
plugin can refuse to pyramid and exit with the opposite side; ``self.working_order(token)`` (its
order there while it works: terms, fills, status, how often the plugin changed it), which an
``OrderChange`` returned beside or instead of intents changes (a limit moved after the market, a
quantity cut, a stop's trigger trailed; the OMS's ModifyOrder, checked by risk). The module decides whether an
intent is sent (a strategy the operator paused sends only what closes or shrinks a position; one NeoPulse
paused because its positions could not be restored, nothing) and turns it into a
``trading_pb2.Signal``. Parameters change at run time through ``SetStrategyParams``: the module
validates the whole new set with ``Params`` first, then calls ``apply_params``, which by default
calls ``reset()`` when a field listed in ``reset_on`` changed. ``reset()`` should warm the new
indicators up from what the plugin keeps (MOMENTUM_RSI keeps its latest closes): a strategy left
cold sees no exit either until it is warm again. Then the engine asks ``exits_due(ctx)`` and
sends at once the exits of open positions the new params call for (never an entry).

To act on ticks rather than closes (a stop loss, a breakout), name the prices to wait for: ``price_levels(token,
now_ns)`` returns (low, high) and ``on_price_level(tick, ctx)`` gets the first tick at or past either. The candle
builder picks those ticks out in its own loop, so a token nobody watches costs nothing more. The engine asks for
the levels whenever the token's position or orders change, at the token's closes after a level was reached, after
an ``on_price_level`` that decided nothing (a trailing stop moving), and when the plugin calls
``levels_changed(token)`` (ORB, once its opening range is complete). ``entry_quantity`` sizes an entry in whole lots
from a quantity or a budget in rupees. A stop is best left to ``stop_exit`` (exit at the market; while an order of
the strategy's works, move a LIMIT exit or cancel a part-filled entry with an ``OrderCancel`` first; behind an order
a trader changed by hand, said once in ``take_blocked_stops`` and sent when that order ends; due until flat, a refusal
retried within seconds) with ``stop_while_working`` and ``due_stop`` in ``price_levels``.

At start (with a database) the module warms every strategy up from the stored ticks: the 1-minute candles each
traded token closed before now, today's and, until they alone hold ``closes_needed()`` (override it when your
indicators need more than the day's candles), whole earlier trading days' (today's not counted: a restart at
noon feeds what a start before the open would have). They go through ``on_candle`` with
``ctx.warm_up`` set and whatever it returns is dropped: a warm-up never trades. After the positions are restored
the engine asks ``exits_due(ctx)`` once, so a position whose exit is already due goes out at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import BaseModel

from shared.clock import NS, day_of, hhmm_minutes, ist_day_number, ist_minute_of_day
from shared.config import NumbersNotBooleans
from shared.contracts import market_pb2, strategy_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.money import fmt_inr, snap_to_tick, to_paise
from shared.order_terms import DAY_BOUND
from shared.positions import PositionBook, exit_side, whole_lots
from shared.price_factor import ONE, factor_of

log = logging.getLogger(__name__)


class StrategyParams(NumbersNotBooleans):
    """Base of a strategy's Params: TOML's true/false for a number is refused, not read as 1/0 (`stop_loss_pct =
    false` would be a 0% stop, `quantity = true` one share)."""

TERMINAL = frozenset({trading_pb2.ORDER_STATUS_TRADED, trading_pb2.ORDER_STATUS_REJECTED,
                       trading_pb2.ORDER_STATUS_CANCELLED})
# A sent signal whose order never shows up (risk's decision lost, e.g. risk restarting) stops blocking the token
# after this long; once risk accepted it or its order is seen, only a terminal update (or a NOT_SENT one, which
# the OMS always publishes for an accepted order it does not place) releases it.
PENDING_EXPIRY_NS = 180 * NS
# OrderUpdate.reason_code of an order the OMS gave up on (placement outcome unknown: REJECTED, but the broker may
# hold it and it is adopted if it turns up) and of that adoption (trading.proto).
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


NEVER = 2**62  # a price level no tick reaches (price_levels: a target turned off)
EVERY_TICK = (NEVER, 0)  # price_levels: levels every tick reaches (a stop already due: Strategy.stop_exit)


def moved_by_pct(price: int, pct: float) -> int:
    """`price` moved by `pct` % (down when negative), in whole paise on the far side: floor going down, ceil going
    up, so that a price at or past it is at least `pct` % away, exactly (Decimal: 0.1% is not a binary fraction)."""
    moved = price * (100 + Decimal(repr(pct))) / 100
    return math.floor(moved) if pct < 0 else math.ceil(moved)


def limit_through(price: int, side: int, slippage_pct: float, inst: market_pb2.Instrument | None) -> int:
    """The LIMIT price of an order made at `price`, snapped to the instrument's tick size; with `slippage_pct`, the
    tick at most that many % worse for the order (a buy's above, a sell's below): a marketable limit, which trades at
    once while the market is within that of `price`, and never beyond it."""
    tick = inst.tick_size_paise if inst is not None else 0
    at = snap_to_tick(price, tick)
    if not slippage_pct:
        return at
    by = price * Decimal(repr(slippage_pct)) / 100
    if side == trading_pb2.SIDE_BUY:
        return max(at, snap_to_tick(math.floor(price + by), tick, up=False))
    return min(at, max(snap_to_tick(math.ceil(price - by), tick, up=True), tick or 1))


def outcome_unknown(update: trading_pb2.OrderUpdate) -> bool:
    """The OMS gave this order up without the broker's answer: it may yet be live there."""
    return update.status == trading_pb2.ORDER_STATUS_REJECTED and update.reason_code == OUTCOME_UNKNOWN


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy wants to trade; the module stamps ids, sequence and instrument fields."""

    token: int
    side: trading_pb2.Side
    quantity: int
    order_type: trading_pb2.OrderType = trading_pb2.ORDER_TYPE_LIMIT
    limit_price_paise: int = 0
    product: trading_pb2.Product = trading_pb2.PRODUCT_MIS
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderChange:
    """Change the strategy's working order in `token` (see Strategy.working_order): 0 keeps a term; the quantity is
    the new total, filled units included. The module sends it as the OMS's ModifyOrder, which risk checks as it
    checks a new order; a term equal to the order's own is not sent, and nothing goes while a change of the order
    is in flight."""

    token: int
    limit_price_paise: int = 0
    quantity: int = 0
    trigger_price_paise: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderCancel:
    """Cancel the strategy's working order in `token` (see Strategy.working_order): the OMS's CancelOrder. Not sent
    while a change or cancel of the order is in flight, nor for an order a trader has changed (changed_by_hand)."""

    token: int
    reason: str = ""


@dataclass(slots=True)
class WorkingOrder:
    """One of the strategy's orders while it works, as its last update showed it (terms included: a change takes
    effect when an update shows it). `changes`: the changes asked of it, the OMS's count (OrderUpdate.changes_sent,
    kept across restarts) or, while the OMS's answer is on its way, the strategy's own. `changed_by_hand`: a trader
    changed it (in Telegram, a gRPC client or Kotak's app); the strategy's changes of it are not sent."""

    order_id: str
    side: int
    order_type: int
    quantity: int
    filled_quantity: int
    limit_price_paise: int
    trigger_price_paise: int
    status: int
    changes: int = 0
    changed_by_hand: bool = False

    @property
    def changing(self) -> bool:
        """A change of it is pending at the broker (the OMS answers the next one when this one is settled)."""
        return self.status == trading_pb2.ORDER_STATUS_MODIFY_PENDING

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_quantity


Decision = OrderIntent | OrderChange | OrderCancel  # what a plugin returns: new orders, changes of its working ones


@dataclass(slots=True)
class StrategyContext:
    """What a strategy may look at while deciding: the instruments, the candle's close time, and whether the candle
    is a stored one fed at start to warm the indicators up (what on_candle returns for it is dropped)."""

    instruments: InstrumentBook
    now_ns: int = 0
    warm_up: bool = False


class Strategy:
    """Base class of every plugin: one configured instance per [[strategy.strategies]] entry."""

    kind: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    # Params whose change rebuilds indicator state (reset(); warm it up again from what the plugin keeps).
    reset_on: ClassVar[frozenset[str]] = frozenset()
    # Trades intraday products (MIS) only: after a restart only today's orders give back its positions.
    intraday_only: ClassVar[bool] = False

    def __init__(self, name: str, params: BaseModel, tokens: frozenset[int] = frozenset()) -> None:
        self.name = name
        self.params = params
        self.tokens = tokens  # empty = every instrument
        # Set together by StrategyEngine.set_paused: why, by whom (strategy_pb2.PausedBy) and when (clock ns).
        self.paused = False
        self.pause_reason = ""
        self.paused_by: strategy_pb2.PausedBy = strategy_pb2.PAUSED_BY_UNSPECIFIED
        self.paused_at_ns = 0
        self.signals_emitted = 0
        # (token, product) -> net quantity: a square-off closes one product's position (intraday MIS, not the
        # user's CNC holding of the same token), so the product of each fill is kept.
        self._positions: dict[tuple[int, int], int] = {}
        self._entries: dict[tuple[int, int], int] = {}  # (token, product) -> the open position's average price, paise
        self._entered_at: dict[tuple[int, int], int] = {}  # (token, product) -> when that price was last set, ns
        self._pending: dict[int, tuple[int, bool]] = {}  # token -> (expiry ns, accepted or order seen)
        self._pending_signal: dict[int, str] = {}  # token -> signal_id of the pending signal, if the module gave one
        # token -> its orders REJECTED with OUTCOME_UNKNOWN and not adopted (yet): id -> when given up (ns; 0 for
        # one not bound to its day): see on_order_update.
        self._unknown: dict[int, dict[str, int]] = {}
        # Its orders while they work (order id -> view), and each token's latest (working_order): a token may have two
        # at once (one from before a restart), and a view keeps its count of changes whichever is updated last.
        self._orders: dict[str, WorkingOrder] = {}
        self._latest: dict[int, str] = {}
        self._too_dear: set[tuple[int, Decimal]] = set()  # (token, order_value) said to cost more than a lot
        self._too_risky: set[tuple[int, Decimal]] = set()  # (token, risk_per_trade) said to be less than a lot risks
        self._capped: set[int] = set()  # tokens whose entry was said to be cut to the freeze quantity
        self._relevel: set[int] = set()  # tokens whose price levels to ask again (levels_changed)
        self._saved_changed = False  # what saved() returns changed since the engine last looked (saved_changed)
        self._stop_due: dict[int, str] = {}  # token -> why: a stop reached, its position not yet flat (stop_exit)
        # token -> what to tell the trader: a stop reached while an order they changed by hand blocks the exit, not
        # yet taken (take_blocked_stops); and the tokens already told, until their position is flat.
        self._blocked_stops: dict[int, str] = {}
        # Tokens released from an order of unknown outcome that ended with its day (_release_ended): token -> what to
        # tell the trader, for the engine to take (take_blocked_stops' twin, take_released).
        self._released: dict[int, str] = {}
        self._blocked_told: set[int] = set()
        # Its day's P&L, from its own fills (and the square-offs' of its positions): for max_daily_loss.
        self.max_daily_loss_paise = 0
        self.loss_stopped_day = 0  # the IST day the limit stopped it (once a day: a resume is the operator's call)
        self.book = PositionBook()
        self._book_day = 0
        self.reset()

    # -- the plugin's part -----------------------------------------------------
    def reset(self) -> None:
        """Build (or rebuild) per-token indicator state from self.params."""

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[Decision]:
        raise NotImplementedError

    def exits_due(self, ctx: StrategyContext) -> list[OrderIntent]:
        """After new params (apply_params), and at start after the warm-up and the restored positions: the exits of
        open positions due now, at the latest candle seen, rather than at the token's next one. Only exits: the
        engine sends nothing else from here."""
        return []

    def closes_needed(self) -> int:
        """Closes per token this strategy needs before it decides anything (with the current params): the warm-up
        at start reads earlier trading days' candles until they alone hold this many (today's are read besides, never
        counted). 0: today's candles are enough."""
        return 0

    @classmethod
    def indices_of(cls, params: BaseModel) -> frozenset[str]:
        """The indices (their symbols: "Nifty 50") whose candles the strategy reads with these params, as
        on_index_candle; the engine refuses one that is not an index it follows. Warmed up from the same stored
        days as its own tokens at start (closes_needed)."""
        return frozenset()

    def indices(self) -> frozenset[str]:
        return self.indices_of(self.params)

    def on_index_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> None:
        """A closed candle of an index followed (candle.symbol: one of indices(), or another a later change of params
        may name): context only, an index is never traded. Called live and at the warm-up (for the indices read),
        in time order with the other candles of its minute."""

    # Plugins that need every tick define `on_tick(self, tick, ctx) -> list[Decision]`; the
    # module calls it only for plugins that define it, so candle-only strategies cost nothing per tick.

    def price_levels(self, token: int, now_ns: int) -> tuple[int, int] | None:
        """Prices (paise) to watch in `token`'s ticks: (low, high), a tick's last price at or below low, or at or
        above high, calls on_price_level (a stop loss, a target, a trailing stop's next best price). None: nothing
        to watch. The engine asks whenever the token's position, orders or the params change, at each of the
        token's closes, and after an on_price_level that decided nothing; a tick of a token nobody watches costs
        nothing more than its candle."""
        return None

    def exit_prices(self, token: int, now_ns: int) -> tuple[int, int]:
        """(stop, target) paise of the position in `token`, as ListStrategies shows them: the price at or past which
        it exits at the market, and the one at or past which it takes its profit; 0 for none."""
        return 0, 0

    def since_entries(self) -> dict[int, int]:
        """After a restart, once its positions are back: the tokens whose highest and lowest price since their entry
        the plugin wants (token -> entry_time), for a trailing stop. The module reads them from the stored ticks and
        hands them to restore_extremes (not at all without a database, or when the read fails)."""
        return {}

    def restore_extremes(self, token: int, high: int, low: int) -> None:
        """The highest and lowest price (paise) of `token`'s stored ticks since since_entries()[token]."""

    def saved(self) -> dict[str, Any]:
        """What of the plugin's own state is to outlive a restart (JSON-ready), kept with the strategy's pause and
        params (state.py): state a warm-up may fail to rebuild, and a position's stop needs (ORB's opening ranges).
        Saved at each saved_changed() the plugin calls from on_candle. {}: nothing."""
        return {}

    def restore_saved(self, saved: dict[str, Any], now_ns: int) -> None:
        """At start, before the warm-up: what saved() returned before the restart (as stored: check what it holds)."""

    def saved_changed(self) -> None:
        """What saved() returns changed: the module saves it (in a task of its own, not on the tick path)."""
        self._saved_changed = True

    def unguarded(self, now_ns: int) -> list[int]:
        """After a restart, once the positions are back: the held tokens whose stop the plugin cannot tell (what it
        needs for it was neither saved nor rebuilt by the warm-up). The module starts the strategy paused, with a
        CRITICAL notification naming them: a position with no stop is the operator's to watch or close."""
        return []

    def on_price_level(self, tick: market_pb2.Tick, ctx: StrategyContext) -> list[Decision]:
        """A tick reached one of price_levels(tick.token). Deciding nothing, the engine asks price_levels again at
        once (a trailing stop moves); deciding something, the token is not watched for it until its next order
        update or close: one exit per reach, not one per tick past the level."""
        return []

    # -- provided --------------------------------------------------------------
    def wants(self, token: int) -> bool:
        return not self.tokens or token in self.tokens

    def apply_params(self, params: BaseModel) -> None:
        """Switch to an already validated params model; reset indicators if a warm-up field changed."""
        changed = {f for f in type(params).model_fields if getattr(params, f) != getattr(self.params, f)}
        self.params = params
        if changed & self.reset_on:
            self.reset()

    def position(self, token: int) -> int:
        """Net quantity in `token` over all products (the plugin's view)."""
        get = self._positions.get
        return sum(get((token, product), 0) for product in _PRODUCTS)

    def positions(self) -> dict[tuple[int, int], int]:
        """(token, product) -> net quantity, a copy."""
        return dict(self._positions)

    def position_in(self, token: int, product: int) -> int:
        """Net quantity in `token` held under `product` (unspecified counts as MIS, as everywhere)."""
        return self._positions.get((token, _product(product)), 0)

    def entry_price(self, token: int, product: int = trading_pb2.PRODUCT_MIS) -> int:
        """The average price (paise) of the fills that opened and added to this strategy's position in `token` under
        `product` (fills that reduced it do not move it; one that turned it over starts it again); 0 when flat."""
        return self._entries.get((token, _product(product)), 0)

    def entered_at(self, token: int) -> int:
        """The latest entry_time of the strategy's positions in `token`, whatever their product; 0 when none."""
        return max((at for (held, _), at in self._entered_at.items() if held == token), default=0)

    def entry_time(self, token: int, product: int = trading_pb2.PRODUCT_MIS) -> int:
        """When the entry price was last set (the update of the fill that opened or added to the position, ns; after
        a restart, the last update of the order that did); 0 when flat or not known."""
        return self._entered_at.get((token, _product(product)), 0)

    def entry_quantity(self, token: int, ctx: StrategyContext, price: int, quantity: int,
                       order_value: Decimal, risk: Decimal = Decimal(0), stop: int = 0) -> int:
        """Units to enter `token` with at `price` (paise): `quantity` rounded down to whole lots (at least one); or,
        with `order_value` (rupees) set, as many whole lots as that buys at `price` (a contract at its price factor),
        0 when one lot costs more (said once per token and budget in the log: the budget is a ceiling). With `risk`
        (rupees) set, instead of `quantity`: as many whole lots as lose at most that at the stop `stop` (paise) from
        `price` (0 when one lot would lose more, or `stop` is no distance away; said once), no more than
        `order_value` buys when that is set too. Never more than the whole lots within the instrument's freeze
        quantity, which is all the exchange takes in one order (said once per token)."""
        inst = ctx.instruments.get(token)
        lot = inst.lot_size if inst is not None and inst.lot_size > 0 else 1
        factor = factor_of(inst.price_factor) if inst is not None else ONE
        freeze = inst.freeze_quantity if inst is not None else 0
        if not order_value and not risk:
            return self._within_freeze(token, ctx, max(lot, quantity - quantity % lot), freeze, lot)
        lots = []
        if order_value:
            lots.append(self._lots_within(token, ctx, order_value, lot * price * factor, self._too_dear,
                                          ("order_value", "lot_cost", "one lot costs more than order_value")))
        if risk:
            lots.append(self._lots_within(token, ctx, risk, lot * abs(price - stop) * factor, self._too_risky, (
                "risk_per_trade", "lot_risk", "one lot loses more than risk_per_trade at its stop")))
        return self._within_freeze(token, ctx, min(lots) * lot, freeze, lot)

    def _within_freeze(self, token: int, ctx: StrategyContext, units: int, freeze: int, lot: int) -> int:
        """`units`, cut to the whole lots within `freeze` (0: none): risk refuses an order past the freeze quantity
        (FREEZE_QUANTITY) and nothing splits an entry, so one sized past it would never be taken."""
        cap = whole_lots(freeze, lot) if freeze else 0
        if not cap or units <= cap:
            return units
        if not ctx.warm_up and token not in self._capped:
            self._capped.add(token)
            log.info("an entry capped: more than the freeze quantity, all the exchange takes in one order", extra={
                "strategy": self.name, "token": token, "sized": units, "freeze_quantity": freeze, "capped_to": cap})
        return cap

    def _lots_within(self, token: int, ctx: StrategyContext, budget: Decimal, per_lot: Fraction, said: set[Any],
                     names: tuple[str, str, str]) -> int:
        """Whole lots of `per_lot` paise each that `budget` rupees allow; none (said once per token and budget in
        the log, as names says: the budget's name, the lot's, why) when not one."""
        lots = int(to_paise(budget) // per_lot) if per_lot > 0 else 0
        if not lots and not ctx.warm_up and (token, budget) not in said:
            said.add((token, budget))
            budget_name, lot_name, why = names
            log.info(f"an entry left out: {why}", extra={"strategy": self.name, "token": token,
                                                          lot_name: fmt_inr(math.ceil(per_lot)),
                                                          budget_name: str(budget)})
        return lots

    @staticmethod
    def sized_by_risk(risk: Decimal, stop: int) -> str:
        """What an entry's reason adds when risk_per_trade sized it ("" when it did not)."""
        return f"; sized to risk {fmt_inr(to_paise(risk))} to the stop {fmt_inr(stop)}" if risk else ""

    def book_fill(self, update: trading_pb2.OrderUpdate) -> None:
        """Count a fill of its own (or a square-off's of its position) in its day's P&L (day_pnl)."""
        self._roll_book(ist_day_number(update.ts_ns) if update.ts_ns else self._book_day)
        self.book.apply_update(update)

    def day_pnl(self, now_ns: int, last_price: Callable[[int], int]) -> int:
        """Its P&L of `now_ns`'s IST day, paise: realised and charges of the day's fills, and what it holds valued at
        `last_price(token)` (0: no price yet, left at its last known)."""
        self._roll_book(ist_day_number(now_ns))
        for token in {token for token, _ in self.book.positions}:
            price = last_price(token)
            if price:
                self.book.mark(token, price)
        return self.book.realised_pnl_paise() + self.book.unrealised_pnl_paise() - self.book.charges_paise()

    def _roll_book(self, day: int) -> None:
        if day > self._book_day:
            if self._book_day:
                self.book.start_day()
            self._book_day = day

    @staticmethod
    def mis_order(token: int, side: trading_pb2.Side, quantity: int, price: int, ctx: StrategyContext, reason: str,
                  at_market: bool, slippage_pct: float = 0.0) -> OrderIntent:
        """An intraday (MIS) order: at the market, or a LIMIT at `price` (limit_through: `slippage_pct` worse)."""
        if at_market:
            return OrderIntent(token, side, quantity, trading_pb2.ORDER_TYPE_MARKET, 0, trading_pb2.PRODUCT_MIS, reason)
        limit = limit_through(price, side, slippage_pct, ctx.instruments.get(token))
        return OrderIntent(token, side, quantity, trading_pb2.ORDER_TYPE_LIMIT, limit, trading_pb2.PRODUCT_MIS, reason)

    def levels_changed(self, token: int) -> None:
        """The prices to watch in `token` changed outside an order update or a price level (an opening range
        completed at a close): the engine asks price_levels again after the plugin's call."""
        self._relevel.add(token)

    def due_stop(self, token: int) -> str:
        """Why a stop of the position in `token` was reached, while that position is not yet flat (stop_exit); ""
        when none is due."""
        return self._stop_due.get(token, "")

    def stop_exit(self, token: int, price: int, reason: str, ctx: StrategyContext) -> list[Decision]:
        """A tick at `price` reached the stop of the position in `token` (`reason` says which): it exits, all of it,
        at the market. The stop stays due until the position is flat: price_levels should then return EVERY_TICK
        while no order of ours works in the token (after a refusal, after a cancel), and on_price_level this again,
        with due_stop's reason, whatever the price has done since. While an order of ours works there:
        - a LIMIT exit is moved to `price`, through it by the params' limit_slippage_pct if they have one, as a new
          LIMIT would be priced (it would otherwise wait where it was while the market runs away);
        - an entry, part of it filled, is cancelled first (its fills are the position to protect, and the rest of it
          would only add to it); the exit goes at the token's first tick after;
        - a MARKET exit, a signal on its way: nothing;
        - an order a trader changed by hand: nothing the strategy may do (it may neither move nor cancel it), so the
          stop is said once (take_blocked_stops, a CRITICAL log) and goes at the market as soon as that order ends."""
        pos = self.position(token)
        if not pos:
            return []
        self._stop_due[token] = reason
        side = exit_side(pos)
        if not self.is_pending(token, ctx.now_ns):
            return [self.mis_order(token, side, abs(pos), price, ctx, reason, True)]
        working = self.working_order(token)
        if working is None or working.remaining <= 0:
            return []
        if working.changed_by_hand:
            self._stop_blocked(token, working, reason)
            return []
        if working.side != side:
            if working.status == trading_pb2.ORDER_STATUS_CANCEL_PENDING:
                return []
            return [OrderCancel(token, f"{reason}; the rest of the entry cancelled, then the position exits")]
        if working.order_type != trading_pb2.ORDER_TYPE_LIMIT:
            return []
        slippage = float(getattr(self.params, "limit_slippage_pct", 0.0))
        moved = limit_through(price, side, slippage, ctx.instruments.get(token))
        return [OrderChange(token, limit_price_paise=moved, reason=f"{reason}; the working exit moved to it")]

    def time_exit(self, token: int, price: int, ctx: StrategyContext, at_ist: str) -> list[Decision] | None:
        """None before `at_ist` ("HH:MM" IST, "" for never) on ctx.now_ns's day. From then: the position in `token`
        exits at the market as a stop would (stop_exit, with the reason "time exit at HH:MM IST": a part-filled entry
        cancelled first, due until flat); an entry still working with nothing filled is cancelled."""
        if not at_ist or ist_minute_of_day(ctx.now_ns) < hhmm_minutes(at_ist):
            return None
        reason = f"time exit at {at_ist} IST"
        if self.position(token):
            return self.stop_exit(token, price, self.due_stop(token) or reason, ctx)
        working = self.working_order(token)
        if working is None or working.remaining <= 0 or working.changed_by_hand or \
                working.status == trading_pb2.ORDER_STATUS_CANCEL_PENDING:
            return []
        return [OrderCancel(token, f"{reason}: the entry cancelled")]

    def stop_while_working(self, token: int, stop: int) -> tuple[int, int] | None:
        """price_levels while a signal or order of ours is under way in `token` (is_pending), for the position held
        there with its stop at `stop` (paise; 0 for none): the stop alone while stop_exit has something to do at it
        (a LIMIT exit working, or an entry with part of it filled; an order a trader changed by hand until the stop
        is due: stop_exit then says so, and the exit waits for that order to end), else nothing."""
        pos, working = self.position(token), self.working_order(token)
        if not pos or not stop or working is None or working.remaining <= 0:
            return None
        if working.changed_by_hand:
            return None if self.due_stop(token) else ((stop, NEVER) if pos > 0 else (0, stop))
        exiting = working.side == exit_side(pos)
        if exiting and working.order_type != trading_pb2.ORDER_TYPE_LIMIT:
            return None
        return (stop, NEVER) if pos > 0 else (0, stop)

    def _stop_blocked(self, token: int, working: WorkingOrder, reason: str) -> None:
        """The stop of the position in `token` is due, and an order a trader changed by hand works there: the
        strategy may neither move nor cancel it, so the position rides on until the order ends. Said once per
        position, loudly: the trader is to cancel their order or exit by hand."""
        if token in self._blocked_told:
            return
        self._blocked_told.add(token)
        text = (f"{reason}; the order {working.order_id} changed by hand blocks the exit of "
                f"{self.position(token):+d}: cancel it (the strategy then exits at the market) or exit by hand")
        self._blocked_stops[token] = text
        log.critical("stop reached, its exit blocked by an order changed by hand", extra={
            "strategy": self.name, "token": token, "order_id": working.order_id, "reason": reason})

    def take_blocked_stops(self) -> dict[int, str]:
        """The stops reached since the last call whose exit an order changed by hand blocks (token -> what to tell
        the trader, once per position): for the engine to notify (the strategy cannot). due_stop says the same for
        as long as the position is held."""
        taken, self._blocked_stops = self._blocked_stops, {}
        return taken

    def take_released(self) -> dict[int, str]:
        """The tokens released since the last call from an order of unknown outcome (_release_ended): token -> what to
        tell the trader, for the engine to notify (the strategy cannot)."""
        taken, self._released = self._released, {}
        return taken

    def _stop_cleared(self, token: int) -> None:
        """The position in `token` is flat: no stop of it is due any more."""
        self._stop_due.pop(token, None)
        self._blocked_stops.pop(token, None)
        self._blocked_told.discard(token)

    def working_orders(self) -> list[WorkingOrder]:
        """Its orders while they work (a copy of the list)."""
        return list(self._orders.values())

    def working_order(self, token: int) -> WorkingOrder | None:
        """This strategy's order in `token` while it works (the latest, should there be two), else None: what an
        OrderChange changes."""
        order_id = self._latest.get(token)
        return None if order_id is None else self._orders.get(order_id)

    def pending_tokens(self) -> list[int]:
        """Tokens with a signal or order of this strategy's under way, or one whose time may have run out (is_pending
        says which)."""
        return [*self._pending, *self._unknown]

    def is_pending(self, token: int, now_ns: int) -> bool:
        if self._unknown:
            self._release_ended(now_ns)
        if self._unknown.get(token):
            return True
        pending = self._pending.get(token)
        if pending is None:
            return False
        expiry, seen = pending
        if seen or now_ns < expiry:
            return True
        del self._pending[token]
        return False

    def mark_sent(self, intent: OrderIntent, now_ns: int, signal_id: str = "") -> None:
        """The module sent this intent as a signal: block the token until its order finishes."""
        self._pending[intent.token] = (now_ns + PENDING_EXPIRY_NS, False)
        self._pending_signal[intent.token] = signal_id
        self.signals_emitted += 1

    def on_accepted(self, token: int, signal_id: str) -> None:
        """Risk accepted the pending signal for `token`: its order will come (the OMS may be restarting, its backlog
        waiting), so the token no longer frees itself by time; a decision for an earlier signal changes nothing."""
        pending = self._pending.get(token)
        if pending is not None and self._is_pending_signal(token, signal_id):
            self._pending[token] = (pending[0], True)

    def on_rejected(self, token: int, signal_id: str = "") -> None:
        """Risk refused the pending signal for `token`: no order will follow, so free the token now; a late
        rejection of an earlier signal frees nothing (the pending one's order may be on its way)."""
        if self._is_pending_signal(token, signal_id):
            self._pending.pop(token, None)

    def _is_pending_signal(self, token: int, signal_id: str) -> bool:
        return self._pending_signal.get(token, "") in ("", signal_id)

    def closed_by_platform(self, token: int, quantity: int, product: int) -> int:
        """A square-off fill (risk's intraday square-off, a SquareOff request) of `product` closed up to `quantity`
        of this strategy's position in `token` under that product; returns how much of it was this strategy's."""
        key = (token, _product(product))
        held = self._positions.get(key, 0)
        taken = min(quantity, abs(held))
        if taken:
            self._positions[key] = held - taken if held > 0 else held + taken
            if not self._positions[key]:
                self._entries.pop(key, None)
                self._entered_at.pop(key, None)
            if not self.position(token):
                self._stop_cleared(token)
        return taken

    def release_unknown(self) -> None:
        """The operator resumed the strategy: tokens blocked by orders of unknown outcome trade again (the manual
        way out, after checking the broker's order book; an adoption that comes later is still applied)."""
        for token, order_ids in self._unknown.items():
            log.warning("token released by the operator with orders of unknown outcome",
                        extra={"strategy": self.name, "token": token, "order_id": ", ".join(sorted(order_ids))})
        self._unknown.clear()

    def _release_ended(self, now_ns: int) -> None:
        """Orders of unknown outcome given up on an earlier IST day and bound to it (DAY, IOC) ended at its close:
        the next day's broker book never lists them, so no adoption will come. Their tokens trade again, each order
        said in a WARNING: a fill of it would show in that day's broker book and positions (and the OMS's
        reconciliation adopts a position the broker reports), which the trader is to check."""
        today = ist_day_number(now_ns)
        for token, orders in list(self._unknown.items()):
            for order_id, given_up_ns in list(orders.items()):
                if given_up_ns and ist_day_number(given_up_ns) < today:
                    del orders[order_id]
                    log.warning("token released: its order of unknown outcome ended with its day; check that day's "
                                "order book and positions at the broker", extra={
                                    "strategy": self.name, "token": token, "order_id": order_id,
                                    "day": day_of(given_up_ns).isoformat()})
                    self._released[token] = (
                        f"order {order_id} of {day_of(given_up_ns):%d %b}, whose outcome stayed unknown, ended with "
                        "its day: the strategy trades this token again and no longer looks for it; check that day's "
                        "order book and positions at Kotak (a fill of it would show there)")
            if not orders:
                del self._unknown[token]

    def on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        """Follow this strategy's own orders: fills move the position; a terminal status frees the token, except
        REJECTED with OUTCOME_UNKNOWN: the broker may hold that order (the OMS adopts it if it turns up), so sending
        it again could fill twice (an exit of a long 10 becoming a short 10). The token stays blocked until an
        update adopts the order, or the operator pauses and resumes the strategy (release_unknown), or (an order
        bound to its day) a later IST day starts (_release_ended)."""
        token = update.request.token
        order_id = update.client_order_id or update.request.client_order_id or update.internal_id
        unknown = self._unknown.get(token)
        if unknown is not None:
            unknown.pop(order_id, None)  # any later update of it (ADOPTED) is the broker's word: applied as usual
            if not unknown:
                del self._unknown[token]
        if outcome_unknown(update):
            day_bound = update.request.validity in DAY_BOUND
            self._unknown.setdefault(token, {})[order_id] = update.ts_ns if day_bound else 0
            log.warning("order outcome unknown: token blocked until the OMS adopts the order, the strategy is "
                        "paused and resumed, or the next day starts; check the broker's order book",
                        extra={"strategy": self.name, "token": token, "order_id": order_id})
        if update.last_fill_quantity:
            self.book_fill(update)
            signed = update.last_fill_quantity if update.request.side == trading_pb2.SIDE_BUY \
                else -update.last_fill_quantity
            key = (token, _product(update.request.product))
            held = self._positions.get(key, 0)
            self._positions[key] = held + signed
            self._note_entry(key, held, signed, update.last_fill_price_paise, update.ts_ns)
            if not self.position(token):
                self._stop_cleared(token)
        if update.status in TERMINAL:
            self._pending.pop(token, None)
            self._orders.pop(order_id, None)
            if self._latest.get(token) == order_id:
                del self._latest[token]
        else:  # working, also one from before a restart: the token waits for it
            self._pending[token] = (self._pending.get(token, (0, True))[0], True)
            self._note_working(token, order_id, update)

    def _note_entry(self, key: tuple[int, int], held: int, signed: int, price_paise: int, ts_ns: int) -> None:
        now = held + signed
        if not now:
            self._entries.pop(key, None)
            self._entered_at.pop(key, None)
        elif not held or (held > 0) != (now > 0):  # opened, or turned over: the rest of this fill opened it
            self._entries[key] = price_paise
            self._entered_at[key] = ts_ns
        elif (held > 0) == (signed > 0) and price_paise:  # added to: the average of what it holds
            entry = self._entries.get(key, price_paise)
            self._entries[key] = (entry * abs(held) + price_paise * abs(signed) + abs(now) // 2) // abs(now)
            self._entered_at[key] = ts_ns

    def _note_working(self, token: int, order_id: str, update: trading_pb2.OrderUpdate) -> None:
        r = update.request
        before = self._orders.get(order_id)
        self._orders[order_id] = WorkingOrder(
            order_id, r.side, r.order_type, r.quantity, update.filled_quantity, r.price_paise, r.trigger_price_paise,
            update.status, max(update.changes_sent, before.changes if before is not None else 0),
            update.changed_by_hand or (before is not None and before.changed_by_hand))
        self._latest[token] = order_id


_PRODUCTS = (trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_CNC, trading_pb2.PRODUCT_NRML)


def _product(product: int) -> int:
    """The product a fill counts under: unspecified means MIS (the default everywhere, as in risk)."""
    return product or trading_pb2.PRODUCT_MIS


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a Strategy subclass available under its `kind`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    _REGISTRY[cls.kind] = cls
    return cls


def _load_builtins() -> None:
    from services.strategy import momentum_rsi, orb  # noqa: F401  (registers MOMENTUM_RSI and ORB)


def strategy_class(kind: str) -> type[Strategy]:
    """The plugin class for `kind`; KeyError naming the known kinds otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown strategy kind {kind!r}; known kinds: {', '.join(known_kinds())}") from None


def known_kinds() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)
