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
        req = order.request
        tag = req.strategy_tag or MANUAL
        book = books.setdefault(tag, PositionBook())
        book.position(req.token, req.product or trading_pb2.PRODUCT_MIS).apply_fill(
            req.side, order.filled_quantity, order.average_price_paise)
        summary.strategies.setdefault(tag, StrategyDay()).trades += 1
        summary.trades += 1
    for tag, book in books.items():
        for token, price in last_price.items():
            book.mark(token, price)
        summary.strategies[tag].realised_pnl_paise = book.realised_pnl_paise()
        summary.strategies[tag].unrealised_pnl_paise = book.unrealised_pnl_paise()
    return summary


def next_summary_ns(now_ns: int, hhmm: str) -> int:
    """The next trading day (weekdays minus configured holidays) at `hhmm` IST strictly after now."""
    hour, minute = parse_hhmm(hhmm)
    day = ist_datetime(now_ns).date()
    while True:
        due = ist_ns(day, hour, minute)
        if due > now_ns and is_trading_day(day):
            return due
        day += timedelta(days=1)
