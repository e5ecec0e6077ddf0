"""Replay of stored ticks from market_ticks as a market source, paced by their own timestamps.

Reads market_ticks page by page (keyset on ts, seq); the clock it is given follows the replayed data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from services.ingestion.instrument_store import load_instruments
from services.ingestion.source import SourceStats
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.db import queries
from shared.errors import ConfigError

PAGE = 20_000


class ReplaySource:
    """Ticks in [start_ns, end_ns) as they were stored, `speed` times faster than they happened (0 = flat out).

    Ticks sharing a timestamp travel as one batch. Ends (stays quiet) after the last tick; `done` is set.
    """

    name = "replay"

    def __init__(self, pool: Any, symbols: list[str], start_ns: int, end_ns: int, clock: ManualClock,
                 speed: float = 1.0) -> None:
        if end_ns <= start_ns:
            raise ConfigError("replay: the end of the range must be after its start")
        self.pool, self.symbols, self.start_ns, self.end_ns = pool, symbols, start_ns, end_ns
        self.clock, self.speed = clock, speed
        self.stats = SourceStats()
        self.done = asyncio.Event()
        self._tokens: set[int] = set()

    async def instruments(self) -> list[market_pb2.Instrument]:
        stored = await load_instruments(self.pool)
        chosen = [i for i in stored if not self.symbols or i.symbol in self.symbols]
        if not chosen:
            raise ConfigError(f"replay: none of {self.symbols} is in instrument_master; run once on live or "
                              "simulated data first so ticks and instruments are stored")
        self._tokens = {i.token for i in chosen}
        return chosen

    async def batches(self) -> AsyncIterator[market_pb2.TickBatch]:
        self.stats.connected = True
        wall0, data0 = time.monotonic(), None
        async for group in self._groups():
            ts = group[0].ts_ns
            data0 = ts if data0 is None else data0
            if self.speed > 0:
                due = wall0 + (ts - data0) / 1e9 / self.speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.clock.set(ts)
            recv = time.time_ns()
            for tick in group:
                tick.recv_ns = recv
            yield market_pb2.TickBatch(ticks=group)
        self.done.set()
        await asyncio.Event().wait()

    async def _groups(self) -> AsyncIterator[list[market_pb2.Tick]]:
        """Pages of stored ticks split into same-timestamp groups; a group may span pages."""
        pending = list[market_pb2.Tick]()
        async for tick in self._ticks():
            if self._tokens and tick.token not in self._tokens:
                continue
            if pending and tick.ts_ns != pending[0].ts_ns:
                yield pending
                pending = []
            pending.append(tick)
        if pending:
            yield pending

    async def _ticks(self) -> AsyncIterator[market_pb2.Tick]:
        """Every stored tick in range in (ts, seq) order, a page at a time."""
        page, after = await queries.ticks_page(self.pool, self.start_ns, self.end_ns, PAGE)
        while True:
            for tick in page:
                yield tick
            if after is None:
                return
            page, after = await queries.ticks_page(self.pool, self.start_ns, self.end_ns, PAGE, after)

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        self.stats.connected = False
