"""Benchmark: TickWriter sustained rows/s against a raw copy_records_to_table of the same rows, same table, same run.

Starts its own embedded PostgreSQL in a temporary directory (or uses DATABASE_URL when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from services.ingestion.tick_writer import COLUMNS, TickWriter
from shared.clock import NS
from shared.contracts import market_pb2
from shared.db.config import DatabaseSettings
from shared.db.database import open_database

BATCH_TICKS = 100  # ticks per TickBatch, about what the ingestion pump emits
RAW_CHUNK = 20_000


def make_batches(n_batches: int, start_ns: int) -> list[market_pb2.TickBatch]:
    batches = []
    for b in range(n_batches):
        ticks = [market_pb2.Tick(token=1000 + i % 50, exchange_segment="nse_cm",
                                 ts_ns=start_ns + (b * BATCH_TICKS + i) * 1000,
                                 ltp_paise=250_000 + i, ltq=10, volume=1_000 + b, bid_paise=249_995, ask_paise=250_005,
                                 bid_qty=5, ask_qty=7, open_paise=249_000, high_paise=251_000, low_paise=248_000,
                                 close_paise=249_500, atp_paise=250_010)
                 for i in range(BATCH_TICKS)]
        batches.append(market_pb2.TickBatch(ticks=ticks))
    return batches


async def _raw(pool: Any, rows: list[tuple[Any, ...]], seconds: float, first_round: int = 0) -> tuple[int, float]:
    """(rows, seconds) of plain COPY; each round shifts seq (outside the timer) so no row repeats."""
    done, spent, round_no = 0, 0.0, first_round
    while spent < seconds:
        round_no += 1
        shifted = [(r[0], r[1], r[2] + round_no * 10**15, *r[3:]) for r in rows]
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            for i in range(0, len(shifted), RAW_CHUNK):
                await conn.copy_records_to_table("market_ticks", records=shifted[i:i + RAW_CHUNK], columns=COLUMNS)
            spent += time.perf_counter() - t0
        done += len(shifted)
    return done, spent


async def _writer(writer: TickWriter, batches: list[market_pb2.TickBatch], seconds: float) -> float:
    """Rows/s the writer commits while a feeder keeps it saturated (re-offering the same batches: new seq each time)."""
    high_water = 12 * writer.settings.writer_batch_rows  # always a chunk queued behind the one on the wire

    async def feed() -> None:
        i = 0
        while True:
            while writer.pending < high_water:
                writer.offer(batches[i % len(batches)])
                i += 1
            await asyncio.sleep(0)

    commits: list[tuple[float, int]] = []  # (when, rows persisted) at each COPY that committed

    async def watch() -> None:
        seen = writer.persisted
        while True:
            await asyncio.sleep(0.002)
            if writer.persisted != seen:
                seen = writer.persisted
                commits.append((time.perf_counter(), seen))

    runner = asyncio.create_task(writer.run())
    feeder = asyncio.create_task(feed())
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)  # warm up: first partitions, pool connections
    commits.clear()
    start_rows = writer.persisted
    await asyncio.sleep(seconds)
    for task in (feeder, runner, watcher):
        task.cancel()
    await asyncio.gather(feeder, runner, watcher, return_exceptions=True)
    # From the first to the last commit in the window: rows arrive a whole chunk at a time, so rows counted
    # over a fixed window would swing by a chunk (about 5% here) with where the window happens to end.
    if len(commits) >= 2:
        (t0, rows0), (t1, rows1) = commits[0], commits[-1]
        return (rows1 - rows0) / (t1 - t0)
    return (writer.persisted - start_rows) / seconds  # a window too short for two commits


async def run(seconds: float = 3.0, background: Coroutine[Any, Any, Any] | None = None) -> dict[str, float]:
    """{'writer_rows_per_s', 'raw_rows_per_s', 'ratio'}; `background` runs concurrently as load."""
    settings = DatabaseSettings()
    with tempfile.TemporaryDirectory(prefix="neopulse-bench-") as tmp:
        db = await open_database(os.environ.get("DATABASE_URL"), Path(tmp), settings)
        load = asyncio.create_task(background) if background is not None else None
        try:
            batches = make_batches(2_000, time.time_ns() - 60 * NS)
            writer = TickWriter(db.pool, settings)
            rows: list[tuple[Any, ...]] = []
            for batch in batches:
                writer._convert(batch, rows, 0, 2**62, [2**62, 0])
            # The baseline runs half before and half after the writer: COPY into a fresh table is faster than
            # into one that holds the writer's rows, and timing it only first flattered it.
            done1, spent1 = await _raw(db.pool, rows, seconds / 2)
            written = await _writer(writer, batches, seconds)
            done2, spent2 = await _raw(db.pool, rows, seconds / 2, first_round=1_000)
            raw = (done1 + done2) / (spent1 + spent2)
        finally:
            if load is not None:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await load
            await db.close()
    return {"writer_rows_per_s": round(written), "raw_rows_per_s": round(raw), "ratio": round(written / raw, 3)}


if __name__ == "__main__":
    print(asyncio.run(run()))
