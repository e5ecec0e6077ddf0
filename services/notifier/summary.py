"""The daily summary: trades, P&L per strategy and charges of one IST day, and when it is due.

Pure: built from ListOrders / ListPositions responses; the caller fetches them over the bus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from shared.clock import NS, SESSIONS_IST, day_of, is_trading_day, ist_datetime, ist_ns, parse_hhmm, session_in_force
from shared.contracts import oms_pb2, trading_pb2
from shared.positions import SQUAREOFF_TAG, PositionBook

MANUAL = "manual"
# What a square-off's fill closes that no replayed book held (a position opened at the broker by hand, or by orders
# older than ListOrders returned): its own line, so that no strategy is credited with it.
UNATTRIBUTED = f"{SQUAREOFF_TAG} (no strategy's)"
CARRIED = (trading_pb2.PRODUCT_CNC, trading_pb2.PRODUCT_NRML)  # what a broker carries overnight (MIS is squared off)
# The day's second summary (next_summary_due) waits this long after its last session's close, for the fills and
# expiries of the close to reach the OMS; and comes a minute before midnight at the latest, when the OMS's positions
# start the next day.
CLOSE_SETTLE_NS = 2 * 60 * NS


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
    # The latest update of the day's trades (a fill; or, of an order part-filled, a later change or cancel): the
    # day's second summary goes when it is after the first (next_summary_due).
    last_trade_ns: int = 0

    @property
    def net_pnl_paise(self) -> int:
        return self.realised_pnl_paise + self.unrealised_pnl_paise - self.charges_paise


def summarise(day: date, orders: list[trading_pb2.OrderUpdate], positions: oms_pb2.ListPositionsResponse,
              placed_ns: Mapping[str, int] | None = None) -> DailySummary:
    """Totals from the OMS positions; per-strategy P&L replayed from the filled orders: the day's, after the earlier
    days' CNC and NRML ones (what a broker carries overnight), so that a carried position closed today is realised
    today (against its average entry price: yesterday's close is not known here) instead of read as a new one. A
    square-off's fill is booked to the strategies whose positions it closed (attribute), and counts as a trade of
    each. Open quantity is valued only in a token the account still holds, at the OMS's last price.

    An order traded when it was last updated (ts_ns), or, one in `placed_ns` (internal_id -> when it was placed), on
    the day it was placed: a DAY order still working at its day's close is settled only when the next day starts
    (the OMS's day roll or start-up check), and traded on its own day alone."""
    summary = DailySummary(day=day, realised_pnl_paise=positions.realised_pnl_paise,
                           unrealised_pnl_paise=positions.unrealised_pnl_paise,
                           charges_paise=positions.charges_paise)
    books: dict[str, PositionBook] = {}
    opening: dict[str, int] = {}  # tag -> its book's realised P&L before the day's first fill
    placed = placed_ns or {}
    for order in sorted(orders, key=lambda o: (placed.get(o.internal_id, o.ts_ns), o.sequence)):
        when = day_of(placed.get(order.internal_id, order.ts_ns))
        if order.filled_quantity <= 0 or when > day or (when < day and order.request.product not in CARRIED):
            continue
        if when == day:
            summary.trades += 1
            summary.last_trade_ns = max(summary.last_trade_ns, order.ts_ns)
        for tag, part in attribute(books, order):
            book = books.setdefault(tag, PositionBook())
            if when == day:
                opening.setdefault(tag, book.realised_pnl_paise())
                summary.strategies.setdefault(tag, StrategyDay()).trades += 1
            book.apply_update(part)
    held = held_prices(positions)
    for tag, book in books.items():
        valued = [p for p in book.positions.values() if p.net_quantity and p.token in held]
        for pos in valued:
            pos.last_price_paise = held[pos.token]
        if tag not in summary.strategies and not valued:
            continue  # neither traded today nor holding anything: not the day's news
        line = summary.strategies.setdefault(tag, StrategyDay())
        line.realised_pnl_paise = book.realised_pnl_paise() - opening.get(tag, book.realised_pnl_paise())
        line.unrealised_pnl_paise = sum(p.unrealised_pnl_paise for p in valued)
    return summary


def attribute(books: dict[str, PositionBook],
              order: trading_pb2.OrderUpdate) -> list[tuple[str, trading_pb2.OrderUpdate]]:
    """Whose books a filled order's fill (as_one_fill) goes to, and how much of it to each, given the books so far
    (not changed here). A strategy's or a manual order's: all to its tag. A square-off's (risk's at square-off time
    or at a loss halt, the operator's SquareOff): to the books whose (token, product) position it is against, as
    much as each holds, in the order the books were first traded (the strategy engine goes by configuration order,
    which the orders do not carry); what is left to UNATTRIBUTED. Otherwise the strategy would keep a position the
    square-off closed, valued at the day's last price: credited with the move after it was flat."""
    fill, tag = as_one_fill(order), order.request.strategy_tag or MANUAL
    if tag != SQUAREOFF_TAG:
        return [(tag, fill)]
    key = (fill.request.token, fill.request.product or trading_pb2.PRODUCT_MIS)
    buying = fill.request.side == trading_pb2.SIDE_BUY
    parts = []
    left = fill.last_fill_quantity
    for name, book in books.items():
        held = book.positions.get(key)
        if left <= 0 or name == UNATTRIBUTED or held is None or not held.net_quantity \
                or (held.net_quantity > 0) == buying:
            continue
        part = trading_pb2.OrderUpdate()
        part.CopyFrom(fill)
        part.last_fill_quantity = min(left, abs(held.net_quantity))
        left -= part.last_fill_quantity
        parts.append((name, part))
    if left > 0:
        fill.last_fill_quantity = left
        parts.append((UNATTRIBUTED, fill))
    return parts


def held_prices(positions: oms_pb2.ListPositionsResponse) -> dict[int, int]:
    """Token -> last price, of the tokens the account holds (net of its products) and has a price for: a strategy's
    replayed book may show quantity in a flat token (fills beyond what ListOrders returned, a position closed by hand
    at the broker), and valuing it would make up P&L."""
    net: dict[int, int] = {}
    for p in positions.positions:
        net[p.token] = net.get(p.token, 0) + p.net_quantity
    return {p.token: p.last_price_paise for p in positions.positions if net[p.token] and p.last_price_paise}


def as_one_fill(order: trading_pb2.OrderUpdate) -> trading_pb2.OrderUpdate:
    """An order's fills so far as one fill at their average price (its request's price factor included: a
    contract's P&L is its price move times the factor)."""
    out = trading_pb2.OrderUpdate(last_fill_quantity=order.filled_quantity,
                                  last_fill_price_paise=order.average_price_paise)
    out.request.CopyFrom(order.request)
    return out


def next_summary_due(now_ns: int, hhmm: str) -> tuple[int, bool]:
    """The next summary strictly after now, and whether it is a day's second one: at `hhmm` IST on each trading day,
    and again once the day's last session has closed (day_end_ns) when that is later, for the trades made after the
    first (MCX's evening session, with the default 15:45): they would otherwise be in no summary, the next day's
    being of the next day's trades."""
    first, today = next_summary_ns(now_ns, hhmm), ist_datetime(now_ns).date()
    second = day_end_ns(today)
    if is_trading_day(today) and now_ns < second < first and second > ist_ns(today, *parse_hhmm(hhmm)):
        return second, True
    return first, False


def day_end_ns(day: date) -> int:
    """When the day's second summary is due: CLOSE_SETTLE_NS after the latest close of the segments' sessions in force
    on `day` (special sessions and the process's session table included), a minute before midnight at the latest."""
    close = max(session_in_force(segment, ist_ns(day, 12, 0))[1] for segment in SESSIONS_IST)
    return min(ist_ns(day, *close) + CLOSE_SETTLE_NS, ist_ns(day + timedelta(days=1), 0, 0) - 60 * NS)


def next_summary_ns(now_ns: int, hhmm: str) -> int:
    """The next trading day (weekdays minus configured holidays) at `hhmm` IST strictly after now."""
    hour, minute = parse_hhmm(hhmm)
    day = ist_datetime(now_ns).date()
    while True:
        due = ist_ns(day, hour, minute)
        if due > now_ns and is_trading_day(day):
            return due
        day += timedelta(days=1)
