"""The daily summary: trades, P&L per strategy and charges of one IST day, and when it is due.

Pure: built from ListOrders / ListPositions responses; the caller fetches them over the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from shared.clock import day_of, is_trading_day, ist_datetime, ist_ns, parse_hhmm
from shared.contracts import oms_pb2, trading_pb2
from shared.positions import PositionBook

MANUAL = "manual"


@dataclass
class StrategyDay:
    trades: int = 0
    realised_pnl_paise: int = 0
    unrealised_pnl_paise: int = 0


@dataclass
class DailySummary:
    day: date
    trades: int = 0
    realised_pnl_paise: int = 0
    unrealised_pnl_paise: int = 0
    charges_paise: int = 0
    strategies: dict[str, StrategyDay] = field(default_factory=dict)
    funds: oms_pb2.GetFundsResponse | None = None  # the account's at the time of the summary, when it answered

    @property
    def net_pnl_paise(self) -> int:
        return self.realised_pnl_paise + self.unrealised_pnl_paise - self.charges_paise


def summarise(day: date, orders: list[trading_pb2.OrderUpdate],
              positions: oms_pb2.ListPositionsResponse) -> DailySummary:
    """Totals from the OMS positions; per-strategy P&L replayed from the day's filled orders."""
    summary = DailySummary(day=day, realised_pnl_paise=positions.realised_pnl_paise,
                           unrealised_pnl_paise=positions.unrealised_pnl_paise,
                           charges_paise=positions.charges_paise)
    last_price = {p.token: p.last_price_paise for p in positions.positions if p.last_price_paise}
    books: dict[str, PositionBook] = {}
    for order in sorted(orders, key=lambda o: (o.ts_ns, o.sequence)):
        if order.filled_quantity <= 0 or day_of(order.ts_ns) != day:
            continue
        tag = order.request.strategy_tag or MANUAL
        books.setdefault(tag, PositionBook()).apply_update(as_one_fill(order))
        summary.strategies.setdefault(tag, StrategyDay()).trades += 1
        summary.trades += 1
    for tag, book in books.items():
        for token, price in last_price.items():
            book.mark(token, price)
        summary.strategies[tag].realised_pnl_paise = book.realised_pnl_paise()
        summary.strategies[tag].unrealised_pnl_paise = book.unrealised_pnl_paise()
    return summary


def as_one_fill(order: trading_pb2.OrderUpdate) -> trading_pb2.OrderUpdate:
    """An order's fills so far as one fill at their average price (its request's price factor included: a
    contract's P&L is its price move times the factor)."""
    out = trading_pb2.OrderUpdate(last_fill_quantity=order.filled_quantity,
                                  last_fill_price_paise=order.average_price_paise)
    out.request.CopyFrom(order.request)
    return out


def next_summary_ns(now_ns: int, hhmm: str) -> int:
    """The next trading day (weekdays minus configured holidays) at `hhmm` IST strictly after now."""
    hour, minute = parse_hhmm(hhmm)
    day = ist_datetime(now_ns).date()
    while True:
        due = ist_ns(day, hour, minute)
        if due > now_ns and is_trading_day(day):
            return due
        day += timedelta(days=1)
