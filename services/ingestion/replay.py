"""Replay of stored ticks from market_ticks as a market source, paced by their own timestamps.

Reads market_ticks a keyset page at a time in (ts, seq) order (queries.ticks_page); its clock follows the replayed data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from services.ingestion.instrument_store import load_instruments
from services.ingestion.source import SourceStats, parse_index, resolve
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.db import queries
from shared.errors import ConfigError

log = logging.getLogger(__name__)

PAGE = 20_000
CLOCK_STEP_S = 0.05  # while a paced replay waits for the next tick, its clock moves on at least this often


class ReplaySource:
    """Ticks in [start_ns, end_ns) as they were stored, `speed` times faster than they happened (0 = flat out).

    Ticks sharing a timestamp travel in arrival order, in batches that hold one tick per token (_arrivals). After
    the last tick the clock moves to end_ns (the range is over: the last minute's candles close), `done` is set
    (ingestion announces it) and batches() stays quiet.
    `lossless`: ingestion lets every tick consumer take a batch before it asks for the next, so a fast replay
    drops nothing and its clock never runs ahead of the ticks being handled.
    """

    name = "replay"
    lossless = True

    def __init__(self, pool: Any, symbols: list[str], start_ns: int, end_ns: int, clock: ManualClock,
                 speed: float = 1.0, indices: list[str] | None = None) -> None:
        if end_ns <= start_ns:
            raise ConfigError("replay: the end of the range must be after its start")
        self.pool, self.symbols, self.start_ns, self.end_ns = pool, symbols, start_ns, end_ns
        # Stored as the live source named them (symbol = the index's name): "segment:name" resolves them alike.
        self.indices = [":".join(parse_index(i)) for i in indices or []]
        self.clock, self.speed = clock, speed
        self.stats = SourceStats()
        self.done = asyncio.Event()
        self._keys: set[tuple[int, str]] = set()  # (token, segment): tokens are unique within a segment only

    async def instruments(self) -> list[market_pb2.Instrument]:
        stored = await load_instruments(self.pool)
        if not stored:
            raise ConfigError("replay: instrument_master is empty; run once on live or simulated data first so "
                              "ticks and instruments are stored")
        chosen = stored
        if self.symbols:  # the symbols the live source takes, resolved alike: "segment:SYMBOL", or nse_cm first
            chosen = resolve(self.symbols + self.indices, stored,
                             "instrument_master (stored by earlier live or simulated runs)")
        self._keys = {(i.token, i.exchange_segment) for i in chosen}
        return chosen

    async def batches(self) -> AsyncIterator[market_pb2.TickBatch]:
        self.stats.connected = True
        wall0, data0 = 0.0, None
        recv = 0
        async for group in self._groups():
            ts = group[0].ts_ns
            if data0 is None:
                wall0, data0 = time.monotonic(), ts
            if self.speed > 0:
                await self._wait_until(wall0 + (ts - data0) / 1e9 / self.speed, wall0, data0, ts)
            else:
                await asyncio.sleep(0)  # flat out, yet the loop keeps turning
            self.clock.set(ts)
            for arrived in _arrivals(group):
                # Strictly rising: an order made from one batch's tick must never look older than the next batch's.
                recv = max(time.time_ns(), recv + 1)
                for tick in arrived:
                    tick.recv_ns = recv
                yield market_pb2.TickBatch(ticks=arrived)
        self.clock.set(max(self.clock.now_ns(), self.end_ns))
        self.done.set()
        log.info("replay finished", extra={"source": self.name, "end_ns": self.end_ns})
        await asyncio.Event().wait()

    async def _wait_until(self, due: float, wall0: float, data0: int, next_ts: int) -> None:
        """Sleep until `due`, moving the clock with the replayed time but never to the next tick's timestamp, so
        a quiet instrument's candle closes at its minute's end as it would live."""
        while (left := due - time.monotonic()) > 0:
            await asyncio.sleep(min(left, CLOCK_STEP_S))
            replayed = data0 + int((time.monotonic() - wall0) * self.speed * 1e9)
            self.clock.set(max(self.clock.now_ns(), min(replayed, next_ts - 1)))
        await asyncio.sleep(0)

    async def _groups(self) -> AsyncIterator[list[market_pb2.Tick]]:
        """Stored ticks split into same-timestamp groups; a group may span pages."""
        pending = list[market_pb2.Tick]()
        async for tick in self._ticks():
            if self._keys and (tick.token, tick.exchange_segment) not in self._keys:
                continue
            if pending and tick.ts_ns != pending[0].ts_ns:
                yield pending
                pending = []
            pending.append(tick)
        if pending:
            yield pending

    async def _ticks(self) -> AsyncIterator[market_pb2.Tick]:
        """Every stored tick in range in (ts, seq) order (seq: arrival order), a page at a time: keyset pages on the
        (ts, seq) index each read about a page of rows, and no connection or server-side state is held between them."""
        key: queries.TickKey | None = None
        while True:
            page, key = await queries.ticks_page(self.pool, self.start_ns, self.end_ns, PAGE, after=key)
            for tick in page:
                yield tick
            if key is None:
                return

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        self.stats.connected = False


def _arrivals(group: list[market_pb2.Tick]) -> list[list[market_pb2.Tick]]:
    """A same-timestamp group cut, in arrival (seq) order, into batches in which no token appears twice.

    Kotak stamps a tick with its last trade time in whole seconds, so quote updates that came seconds later share
    that timestamp. The paper broker fills an order at its token's latest tick in the batch: were those later quotes
    in the batch, an order made from its first tick would fill at a price nobody had seen yet. One tick per token
    keeps that price the tick the order was made from; the later ones follow, each batch settled before the next.
    Keyed by token alone: the broker and the candles key their last tick by token.
    """
    batches: list[list[market_pb2.Tick]] = []
    batch: list[market_pb2.Tick] = []
    seen: set[int] = set()
    for tick in group:
        if tick.token in seen:
            batches.append(batch)
            batch, seen = [], set()
        batch.append(tick)
        seen.add(tick.token)
    batches.append(batch)
    return batches
