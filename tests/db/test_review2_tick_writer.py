"""Tick writer, reviewed again: a stop that cancels the writer while it converts queued batches loses none of them;
close() writes what was taken off the queue."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.ingestion.tick_writer import TickWriter
from shared.contracts import market_pb2
from shared.db.config import DatabaseSettings
from tests.db.helpers import tick


def offer(writer: TickWriter, batches: int, start_ns: int) -> None:
    """`batches` offers of 1,000 distinct ticks each (conversion yields to the loop every 5,000 rows)."""
    for b in range(batches):
        writer.offer(market_pb2.TickBatch(ticks=[tick(ts_ns=start_ns + (b * 1000 + i) * 1000) for i in range(1000)]))


async def cancelled(task: asyncio.Task) -> None:
    task.cancel()  # the monolith's stop cancels ingestion:run, which owns the writer's flush ...
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_stop_during_the_first_chunks_conversion_leaves_its_ticks_for_close_to_write(db_pool):
    writer = TickWriter(db_pool)
    offer(writer, 6, time.time_ns())
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)  # converting: 5,000 rows off the queue, at the yield

    await cancelled(flushing)
    await writer.close()  # ... then IngestionModule.stop() closes the writer, the database up

    assert (await db_pool.fetchval("SELECT count(*) FROM market_ticks"), writer.dropped) == (6000, 0)


async def test_a_stop_while_the_next_chunk_converts_beside_a_copy_leaves_both_for_close_to_write(db_pool):
    writer = TickWriter(db_pool, DatabaseSettings(writer_batch_rows=2000))  # chunks of 8,000 rows
    offer(writer, 16, time.time_ns())
    flushing = asyncio.create_task(writer.flush())
    for _ in range(10):  # turn by turn: the first chunk converted, its COPY sent, the next at its first yield
        if writer._chunks:
            break
        await asyncio.sleep(0)

    await cancelled(flushing)
    await writer.close()

    assert (await db_pool.fetchval("SELECT count(*) FROM market_ticks"), writer.dropped) == (16000, 0)
