"""Live one-line status and the end-of-run summary for `neopulse run`.

Counts what crosses the bus (ticks, candles, signals, decisions, fills). P&L is this run's: its own book of the
fills it saw, marked by the ticks (the OMS's is the trading day's, and a replay may span several days).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from shared.bus import Bus, Topic
from shared.contracts import trading_pb2
from shared.money import fmt_inr
from shared.positions import PositionBook


@dataclass
class RunCounters:
    ticks: int = 0
    candles: int = 0
    signals: int = 0
    accepted: int = 0
    rejected: int = 0
    fills: int = 0
    orders: set[str] = field(default_factory=set)
    rejection_reasons: dict[str, int] = field(default_factory=dict)


class StatusBoard:
    """Subscribes to every topic and keeps counters; prints a status line while the run lasts."""

    def __init__(self, bus: Bus, out: TextIO | None = None) -> None:
        self.bus = bus
        self.out = out or sys.stdout
        self.c = RunCounters()
        self.started = time.monotonic()
        self.book = PositionBook()  # this run's fills, never started on a new day
        bus.subscribe(Topic.TICKS, "status", self._ticks)
        bus.subscribe(Topic.CANDLES, "status", self._candles)
        bus.subscribe(Topic.SIGNALS, "status", self._signal)
        bus.subscribe(Topic.ORDERS, "status", self._decision)
        bus.subscribe(Topic.ORDER_UPDATES, "status", self._update)

    async def _ticks(self, batch) -> None:
        self.c.ticks += len(batch.ticks)
        if self.book.positions:
            mark = self.book.mark
            for tick in batch.ticks:
                if tick.ltp_paise:
                    mark(tick.token, tick.ltp_paise)

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
        self.c.orders.add(u.internal_id)
        if u.last_fill_quantity > 0:
            self.c.fills += 1
            self.book.apply_update(u)

    @property
    def pnl(self) -> tuple[int, int, int]:
        """(realised, unrealised, charges) of this run's fills, in paise."""
        book = self.book
        return book.realised_pnl_paise(), book.unrealised_pnl_paise(), book.charges_paise()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        c = self.c
        realised, unrealised, charges = self.pnl
        return (f"{elapsed:6.0f}s  ticks {c.ticks:>9,} ({c.ticks / elapsed:,.0f}/s)  candles {c.candles:,}  "
                f"signals {c.signals:,}  orders {len(c.orders):,} (rejected {c.rejected:,})  fills {c.fills:,}  "
                f"P&L {fmt_inr(realised + unrealised - charges)}")

    async def run(self, every: float = 1.0) -> None:
        tty = self.out.isatty()
        ticks = 0
        while True:
            await asyncio.sleep(every)
            ticks += 1
            if tty:
                self.out.write("\r" + self.line() + "\x1b[K")
                self.out.flush()
            elif ticks % 5 == 0:
                print(self.line(), file=self.out, flush=True)

    def summary(self) -> str:
        c = self.c
        realised, unrealised, charges = self.pnl
        rows = [
            ("ticks", f"{c.ticks:,}"), ("candles", f"{c.candles:,}"), ("signals", f"{c.signals:,}"),
            ("orders accepted by risk", f"{c.accepted:,}"), ("rejected by risk", f"{c.rejected:,}"),
            ("orders in the OMS", f"{len(c.orders):,}"), ("fills", f"{c.fills:,}"),
            ("realised P&L", fmt_inr(realised)), ("unrealised P&L", fmt_inr(unrealised)),
            ("charges", fmt_inr(charges)), ("net P&L", fmt_inr(realised + unrealised - charges)),
        ]
        rows += [(f"  rejected: {code or 'unknown'}", str(n)) for code, n in sorted(c.rejection_reasons.items())]
        width = max(len(k) for k, _ in rows)
        body = "\n".join(f"  {k:<{width}}  {v:>14}" for k, v in rows)
        return f"\nNeoPulse run summary\n{body}\n"
