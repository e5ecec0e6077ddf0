"""Live one-line status and the end-of-run summary for `neopulse run`.

Counts are this run's: what it saw cross the bus (ticks, candles, signals, risk decisions, fills). Positions and P&L
are the trading day's as the OMS books them (OrderService/ListPositions, what /pnl says and the ledger holds): a run
resumed after a restart the same day has the earlier runs' fills and positions in them, each counted once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TextIO

from shared import rpc
from shared.bus import Bus, Priority, Topic
from shared.clock import day_of
from shared.contracts import oms_pb2, trading_pb2
from shared.errors import NotFound
from shared.money import fmt_inr


@dataclass
class RunCounters:
    ticks: int = 0
    candles: int = 0
    signals: int = 0
    accepted: int = 0
    rejected: int = 0
    fills: int = 0
    changes: int = 0  # changes of working orders recorded and sent (MODIFY_PENDING): a strategy's reprices, ModifyOrder
    fill_days: set[date] = field(default_factory=set)  # IST days of this run's fills (by the OMS's clock)
    rejection_reasons: dict[str, int] = field(default_factory=dict)


class StatusBoard:
    """Subscribes to the topics it counts and asks the OMS for the day's book; prints a status line while the run
    lasts. `now_ns` is the run's clock (a simulated session's day is not the calendar's)."""

    def __init__(self, bus: Bus, now_ns: Callable[[], int] = time.time_ns, out: TextIO | None = None) -> None:
        self.bus = bus
        self.now_ns = now_ns
        self.out = out or sys.stdout
        self.c = RunCounters()
        # Where the status line's elapsed time and tick rate count from: run() moves it to the run's start, so that
        # the database, the login and the warm-up before it do not read as a slow feed.
        self.started = time.monotonic()
        self.ticks_at_start = 0
        # The OMS's last answer, None until it gave one. Its own book, not one kept here from this run's fills: that
        # one starts flat after a restart (a sale of a carried long became a new short) and never sees the
        # fills an earlier run booked today.
        self.day: oms_pb2.ListPositionsResponse | None = None
        bus.subscribe(Topic.TICKS, "status", self._ticks)
        bus.subscribe(Topic.CANDLES, "status", self._candles)
        # Counted after the order path: a counter must not stand between a signal and its order.
        bus.subscribe(Topic.SIGNALS, "status", self._signal, priority=Priority.FOLLOW_UP)
        bus.subscribe(Topic.ORDERS, "status", self._decision, priority=Priority.FOLLOW_UP)
        bus.subscribe(Topic.ORDER_UPDATES, "status", self._update)

    async def _ticks(self, batch) -> None:
        self.c.ticks += len(batch.ticks)

    async def _candles(self, batch) -> None:
        self.c.candles += len(batch.candles)

    async def _signal(self, _signal) -> None:
        self.c.signals += 1

    async def _decision(self, d: trading_pb2.RiskDecision) -> None:
        if d.accepted:
            self.c.accepted += 1
        else:
            self.c.rejected += 1
            self.c.rejection_reasons[d.reason_code] = self.c.rejection_reasons.get(d.reason_code, 0) + 1

    async def _update(self, u: trading_pb2.OrderUpdate) -> None:
        if u.status == trading_pb2.ORDER_STATUS_MODIFY_PENDING != u.previous_status:
            self.c.changes += 1
        if u.last_fill_quantity > 0:
            self.c.fills += 1
            if u.ts_ns:
                self.c.fill_days.add(day_of(u.ts_ns))

    async def refresh(self) -> None:
        """Ask the OMS for the day's positions and P&L. Its handler reads only its in-memory book, so this also
        answers after the run stopped (the summary's figures include the fills of the stop's last placements)."""
        try:
            self.day = await self.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        except NotFound:  # no OMS started: the figures stay unknown rather than shown as zero
            self.day = None

    def _net_pnl(self) -> str:
        d = self.day
        return "n/a" if d is None else fmt_inr(d.realised_pnl_paise + d.unrealised_pnl_paise - d.charges_paise)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        c = self.c
        rate = (c.ticks - self.ticks_at_start) / elapsed
        return (f"{elapsed:6.0f}s  ticks {c.ticks:>9,} ({rate:,.0f}/s)  candles {c.candles:,}  "
                f"signals {c.signals:,}  orders {c.accepted:,} (rejected {c.rejected:,})  fills {c.fills:,}  "
                f"day P&L {self._net_pnl()}")

    async def run(self, every: float = 1.0) -> None:
        """The status line every `every` seconds; started once the run has started (its clock and rate begin now,
        the ticks of the start-up, such as those during the strategies' warm-up, in the count but not the rate)."""
        self.started, self.ticks_at_start = time.monotonic(), self.c.ticks
        tty = self.out.isatty()
        ticks = 0
        while True:
            await asyncio.sleep(every)
            ticks += 1
            if tty:
                await self.refresh()
                self.out.write("\r" + self.line() + "\x1b[K")
                self.out.flush()
            elif ticks % 5 == 0:
                await self.refresh()
                print(self.line(), file=self.out, flush=True)

    def summary(self) -> str:
        """This run's counts, then the trading day's positions and P&L (call refresh() first)."""
        c = self.c
        today = day_of(self.now_ns())
        run_rows = [
            ("ticks", f"{c.ticks:,}"), ("candles", f"{c.candles:,}"), ("signals", f"{c.signals:,}"),
            ("orders accepted by risk", f"{c.accepted:,}"), ("rejected by risk", f"{c.rejected:,}"),
            ("fills", f"{c.fills:,}"),
        ]
        if c.changes:
            run_rows.append(("orders changed (sent)", f"{c.changes:,}"))
        run_rows += [(f"  rejected: {code or 'unknown'}", str(n)) for code, n in sorted(c.rejection_reasons.items())]
        day_rows = self._day_rows()
        width = max(len(k) for k, _ in run_rows + day_rows)

        def table(rows: list[tuple[str, str]]) -> str:
            return "\n".join(f"    {k:<{width}}  {v:>14}" for k, v in rows)

        text = (f"\nNeoPulse run summary\n  this run\n{table(run_rows)}\n"
                f"  trading day {today.isoformat()}, as the OMS books it (every run's fills of the day)\n"
                f"{table(day_rows)}\n")
        earlier = sorted(d for d in c.fill_days if d < today)
        if earlier:
            text += (f"  this run also filled orders on {', '.join(d.isoformat() for d in earlier)}: their P&L is "
                     "not in the day's figures (the order ledger has it)\n")
        return text

    def _day_rows(self) -> list[tuple[str, str]]:
        d = self.day
        if d is None:
            return [("positions and P&L", "n/a (no OMS)")]
        rows = [(f"  {p.symbol or p.token} {trading_pb2.Product.Name(p.product).removeprefix('PRODUCT_')}",
                 f"{p.net_quantity:+,} @ {fmt_inr(p.average_price_paise)}")
                for p in d.positions if p.net_quantity]
        return [("open positions", f"{len(rows):,}"), *rows,
                ("realised P&L", fmt_inr(d.realised_pnl_paise)), ("unrealised P&L", fmt_inr(d.unrealised_pnl_paise)),
                ("charges", fmt_inr(d.charges_paise)), ("net P&L", self._net_pnl())]
