"""What `neopulse backtest` reports (services/app/cmd_backtest.py): each day's result, each strategy's round trips net
of their charges, the worst drawdown of the running net, the table or a sweep's lines, and the fills as CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.notifier.summary import DailySummary, StrategyDay, attribute
from shared import clock
from shared.contracts import trading_pb2
from shared.money import fmt_inr
from shared.positions import PositionBook

if TYPE_CHECKING:
    from services.app.cmd_backtest import NetCurve


@dataclass
class DayResult:
    day: str
    trades: int
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    charges_paise: int
    net_pnl_paise: int
    strategies: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    # The running net (realised + unrealised - charges, from 0) after every replayed batch (NetCurve): its lowest,
    # its highest and its deepest fall from its best; 0 where not measured (max_drawdown_paise then uses the close).
    intraday_low_paise: int = 0
    intraday_high_paise: int = 0
    intraday_drawdown_paise: int = 0
    # Each filled order, in the order of their last fills: FILL_FIELDS.
    fills: list[dict[str, Any]] = field(default_factory=list)


FILL_FIELDS = ("day", "time_ist", "strategy", "symbol", "side", "quantity", "price_paise", "reason")


def write_trades(path: Path, runs: list[tuple[dict[str, str], list[DayResult]]], with_set: bool = False) -> None:
    """Every day's filled orders as CSV, the price in rupees; in a sweep, each row first says its combination."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*(["set"] if with_set else []), *FILL_FIELDS[:-2], "price", "reason"])
        for label, results in runs:
            for r in results:
                for fill in r.fills:
                    row = [fill[name] for name in FILL_FIELDS]
                    row[-2] = f"{fill['price_paise'] / 100:.2f}"
                    writer.writerow([*([set_label(label)] if with_set else []), *row])


def set_label(label: dict[str, str]) -> str:
    return " ".join(f"{target}={value}" for target, value in label.items())


def fills(day: date, orders: list[trading_pb2.OrderUpdate]) -> list[dict[str, Any]]:
    """The day's filled orders (FILL_FIELDS), by the time of their last fill, each with why it was placed."""
    out = []
    for order in sorted(orders, key=lambda o: (o.ts_ns, o.sequence)):
        if order.filled_quantity <= 0:
            continue
        req = order.request
        out.append({"day": day.isoformat(), "time_ist": clock.ist_datetime(order.ts_ns).strftime("%H:%M:%S"),
                    "strategy": req.strategy_tag, "symbol": req.symbol,
                    "side": trading_pb2.Side.Name(req.side).removeprefix("SIDE_"),
                    "quantity": order.filled_quantity, "price_paise": order.average_price_paise,
                    "reason": req.reason})
    return out


@dataclass
class RoundTrips:
    """A strategy's round trips of a day, each one's P&L net of its charges (paise): those closed, in the order they
    closed, and those still open at the end, marked; and the charges of all its fills."""

    closed: list[int] = field(default_factory=list)
    open: list[int] = field(default_factory=list)
    charges_paise: int = 0


def round_trips(orders: list[trading_pb2.OrderUpdate], charges: dict[str, int] | None = None,
                marks: dict[int, int] | None = None) -> dict[str, RoundTrips]:
    """Each strategy's round trips of the day (a position opened and brought back to flat, or turned over), net of
    charges: each order's (`charges`, by internal_id) go to the round trip it opened, added to or closed; a turning
    order's part for the quantity beyond flat to the one it opens. A square-off's fill closes the strategies'
    positions it is against, as the daily summary books it (summary.attribute), its charges shared in proportion.
    A round trip still open at the end is valued at `marks` (token -> the OMS's last price), else its last fill."""
    books: dict[str, PositionBook] = {}
    running: dict[tuple[str, int, int], int] = {}  # (strategy, token, product) -> net P&L of the open round trip
    out: dict[str, RoundTrips] = {}
    for order in sorted((o for o in orders if o.filled_quantity > 0), key=lambda o: (o.ts_ns, o.sequence)):
        parts = attribute(books, order)
        costs = shares((charges or {}).get(order.internal_id, 0), [part.last_fill_quantity for _, part in parts])
        for (tag, part), cost in zip(parts, costs, strict=True):
            req, quantity = part.request, part.last_fill_quantity
            trip = (tag, req.token, req.product or trading_pb2.PRODUCT_MIS)
            pos = books.setdefault(tag, PositionBook()).position(*trip[1:])
            before = pos.net_quantity
            against = before and (before > 0) != (req.side == trading_pb2.SIDE_BUY)
            closing = min(abs(before), quantity) if against else 0
            closing_cost = cost * closing // quantity
            running[trip] = running.get(trip, 0) + books[tag].apply_update(part) - closing_cost
            mine = out.setdefault(tag, RoundTrips())
            mine.charges_paise += cost
            if closing and closing == abs(before):  # flat, or turned over
                mine.closed.append(running.pop(trip))
            if quantity > closing:  # opened, added to or turned over: the rest of its charges are the open one's
                running[trip] = running.get(trip, 0) - (cost - closing_cost)
    for (tag, token, product), pnl in running.items():
        pos = books[tag].position(token, product)
        pos.last_price_paise = (marks or {}).get(token, pos.last_price_paise)
        out[tag].open.append(pnl + pos.unrealised_pnl_paise)
    return out


def shares(total: int, quantities: list[int]) -> list[int]:
    """`total` paise split in proportion to `quantities` (not all 0), in whole paise that add up to it."""
    whole, taken, given, out = sum(quantities), 0, 0, []
    for quantity in quantities:
        taken += quantity
        out.append(total * taken // whole - given)
        given += out[-1]
    return out


def day_result(day: date, s: DailySummary, seconds: float, filled: list[dict[str, Any]] | None = None,
               trips: dict[str, RoundTrips] | None = None, curve: NetCurve | None = None) -> DayResult:
    strategies = {name: strategy_result(d, (trips or {}).get(name, RoundTrips())) for name, d in s.strategies.items()}
    return DayResult(
        day=day.isoformat(), trades=s.trades, realised_pnl_paise=s.realised_pnl_paise,
        unrealised_pnl_paise=s.unrealised_pnl_paise, charges_paise=s.charges_paise, net_pnl_paise=s.net_pnl_paise,
        strategies=strategies, seconds=round(seconds, 1), fills=filled or [],
        intraday_low_paise=curve.low_paise if curve else 0, intraday_high_paise=curve.high_paise if curve else 0,
        intraday_drawdown_paise=curve.drawdown_paise if curve else 0)


def strategy_result(d: StrategyDay, trips: RoundTrips) -> dict[str, int]:
    """A strategy's day for the report and the JSON: its P&L before charges, its charges, and its round trips net
    of them (a round trip of exactly 0 is neither won nor lost: breakeven)."""
    closed = trips.closed
    return {"trades": d.trades, "realised_pnl_paise": d.realised_pnl_paise,
            "unrealised_pnl_paise": d.unrealised_pnl_paise, "charges_paise": trips.charges_paise,
            "net_pnl_paise": d.realised_pnl_paise + d.unrealised_pnl_paise - trips.charges_paise,
            "round_trips_won": sum(p > 0 for p in closed), "round_trips_lost": sum(p < 0 for p in closed),
            "round_trips_breakeven": sum(p == 0 for p in closed),
            "won_paise": sum(p for p in closed if p > 0), "lost_paise": sum(p for p in closed if p < 0),
            "round_trips_open": len(trips.open), "open_paise": sum(trips.open)}


def max_drawdown_paise(results: list[DayResult]) -> int:
    """The deepest fall of the running net from its best so far, across the days and within each (its intraday
    curve: a day that fell far and closed up counts its fall); 0 when it never fell. A day without its curve
    counts its close only."""
    before = best = worst = 0  # before: the net of the days before this one
    for r in results:
        low = min(r.intraday_low_paise, 0, r.net_pnl_paise)
        within = max(r.intraday_drawdown_paise, -r.net_pnl_paise)
        worst = max(worst, within, best - (before + low))
        best = max(best, before + max(r.intraday_high_paise, 0, r.net_pnl_paise))
        before += r.net_pnl_paise
    return worst


def strategy_line(name: str, d: dict[str, int]) -> str:
    """'name: N trades, Rs X before charges, charges Rs C, net Rs Y', then its round trips' record net of charges:
    how many closed, the share won, how many broke even, the average win and loss, the profit factor (won / lost; "-"
    with nothing lost); then how many were still open at the end of their days, and what they were marked at."""
    pnl, charges = d["realised_pnl_paise"] + d["unrealised_pnl_paise"], d.get("charges_paise", 0)
    line = f"{name}: {d['trades']} trades, {fmt_inr(pnl)} before charges, charges {fmt_inr(charges)}, " \
           f"net {fmt_inr(pnl - charges)}"
    won, lost, even = d.get("round_trips_won", 0), d.get("round_trips_lost", 0), d.get("round_trips_breakeven", 0)
    closed = won + lost + even
    if closed:
        line += f" · {closed} round trip{'s' if closed != 1 else ''} net of charges, {won * 100 // closed}% won"
        if even:
            line += f", {even} breakeven"
        if won:
            line += f", average win {fmt_inr(d['won_paise'] // won)}"
        if lost:
            line += f", average loss {fmt_inr(d['lost_paise'] // lost)}"
        line += f", profit factor {profit_factor(d)}"
    if d.get("round_trips_open"):
        line += f" · {d['round_trips_open']} open at the end, marked {fmt_inr(d.get('open_paise', 0))}"
    return line


def profit_factor(d: dict[str, int]) -> str:
    return f"{d['won_paise'] / -d['lost_paise']:.2f}" if d.get("lost_paise") else "-"


def by_strategy(results: list[DayResult]) -> dict[str, dict[str, int]]:
    """Each strategy's figures summed over the days."""
    names = sorted({name for r in results for name in r.strategies})
    return {name: summed(r.strategies[name] for r in results if name in r.strategies) for name in names}


def summed(figures: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in figures:
        for key, value in d.items():
            out[key] = out.get(key, 0) + value
    return out


def sweep_report(runs: list[tuple[dict[str, str], list[DayResult]]]) -> str:
    """A line per combination of a sweep: its values, trades, net, charges, days won, worst drawdown (of the running
    net), round trips still open at the ends of their days, and the closed round trips of all its strategies, net of
    their charges (how many, the share won, the profit factor)."""
    targets = list(runs[0][0])
    rows = [(*targets, "trades", "net", "charges", "days won", "drawdown", "open", "round trips", "won (net)",
             "profit factor (net)")]
    for label, days in runs:
        all_of = summed(d for r in days for d in r.strategies.values())
        won = all_of.get("round_trips_won", 0)
        closed = won + all_of.get("round_trips_lost", 0) + all_of.get("round_trips_breakeven", 0)
        rows.append((*(label[t] for t in targets), str(sum(r.trades for r in days)),
                     fmt_inr(sum(r.net_pnl_paise for r in days)), fmt_inr(sum(r.charges_paise for r in days)),
                     f"{sum(r.net_pnl_paise > 0 for r in days)} of {len(days)}", fmt_inr(max_drawdown_paise(days)),
                     str(all_of.get("round_trips_open", 0)), str(closed),
                     f"{won * 100 // closed}%" if closed else "-", profit_factor(all_of)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < len(targets) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows)


def report(results: list[DayResult]) -> str:
    rows = [("day", "trades", "realised", "unrealised", "charges", "net")]
    rows += [(r.day, str(r.trades), fmt_inr(r.realised_pnl_paise), fmt_inr(r.unrealised_pnl_paise),
              fmt_inr(r.charges_paise), fmt_inr(r.net_pnl_paise)) for r in results]
    total = sum(r.net_pnl_paise for r in results)
    rows.append(("total", str(sum(r.trades for r in results)), fmt_inr(sum(r.realised_pnl_paise for r in results)),
                 fmt_inr(sum(r.unrealised_pnl_paise for r in results)),
                 fmt_inr(sum(r.charges_paise for r in results)), fmt_inr(total)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
             for row in rows]
    lines += [strategy_line(name, acc) for name, acc in by_strategy(results).items()]
    won = sum(r.net_pnl_paise > 0 for r in results)
    lines.append(f"days won {won} of {len(results)} · worst drawdown {fmt_inr(max_drawdown_paise(results))} (of "
                 f"the running net after charges, read after every tick batch) · net {fmt_inr(total)}")
    return "\n".join(lines)
