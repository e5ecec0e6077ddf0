"""Tick timestamps in market_ticks: exact to the microsecond, in the right IST day, and the pool left as it was.

Read back the normal way (a plain pool connection, asyncpg datetimes, SQL), whatever the writer sends in its COPY.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

import asyncpg
import pytest

from services.ingestion.tick_writer import TickWriter
from shared.clock import UTC, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.db.config import DatabaseSettings
from tests.db.helpers import tick

DAY = date(2026, 1, 20)
MIDNIGHT = ist_ns(DAY + timedelta(days=1), 0, 0)  # 2026-01-21 00:00 IST = 2026-01-20 18:30 UTC
# ts_ns offered -> the UTC time it must read back as (nanoseconds below a microsecond are cut, never rounded up).
EXPECTED = {
    ist_ns(DAY, 9, 15) + 123_456_789: datetime(2026, 1, 20, 3, 45, 0, 123_456, tzinfo=UTC),
    MIDNIGHT - 1_000: datetime(2026, 1, 20, 18, 29, 59, 999_999, tzinfo=UTC),
    MIDNIGHT - 1: datetime(2026, 1, 20, 18, 29, 59, 999_999, tzinfo=UTC),
    MIDNIGHT: datetime(2026, 1, 20, 18, 30, tzinfo=UTC),
    MIDNIGHT + 1_999: datetime(2026, 1, 20, 18, 30, 0, 1, tzinfo=UTC),
}


@pytest.fixture
async def one_connection(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection: whatever the writer did to it, the next user gets that same connection."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 5.0)


def _writer(pool: asyncpg.Pool) -> TickWriter:
    return TickWriter(pool, DatabaseSettings(max_tick_past_s=10**9), clock=ManualClock(MIDNIGHT))


async def _store(pool: asyncpg.Pool, ts_ns: list[int]) -> None:
    writer = _writer(pool)
    writer.offer(market_pb2.TickBatch(ticks=[tick(ts_ns=ts, ltp=100 + i) for i, ts in enumerate(ts_ns)]))
    await writer.flush()


async def test_stored_tick_times_read_back_as_utc_datetimes_exact_to_the_microsecond(db_pool):
    await _store(db_pool, list(EXPECTED))

    rows = await db_pool.fetch("SELECT ltp, ts, (extract(epoch FROM ts) * 1000000)::bigint AS us FROM market_ticks")

    by_ltp = {r["ltp"]: (r["ts"], r["us"]) for r in rows}
    assert by_ltp == {100 + i: (when, ts // 1000) for i, (ts, when) in enumerate(EXPECTED.items())}


async def test_ticks_either_side_of_ist_midnight_are_stored_in_their_own_days_partition(db_pool):
    await _store(db_pool, [MIDNIGHT - 1_000, MIDNIGHT])

    rows = await db_pool.fetch("SELECT tableoid::regclass::text AS part FROM market_ticks ORDER BY ts")

    assert [r["part"] for r in rows] == ["market_ticks_2026_01_20", "market_ticks_2026_01_21"]


async def test_the_connection_the_writer_used_reads_and_writes_datetimes_afterwards(one_connection):
    await _store(one_connection, [MIDNIGHT])

    async with one_connection.acquire() as conn:
        echoed = await conn.fetchval("SELECT $1::timestamptz", datetime(2026, 1, 20, 12, 0, 0, 7, tzinfo=UTC))
        stored = await conn.fetchval("SELECT ts FROM market_ticks")

    assert (echoed, stored) == (datetime(2026, 1, 20, 12, 0, 0, 7, tzinfo=UTC), EXPECTED[MIDNIGHT])


async def test_a_connection_whose_copy_failed_reads_and_writes_datetimes_afterwards(one_connection):
    writer = _writer(one_connection)
    writer.offer(market_pb2.TickBatch(ticks=[tick(ts_ns=MIDNIGHT)]))
    chunk = await writer._take_chunk()
    assert chunk is not None
    await writer._write(chunk)
    await writer._write(chunk)  # same rows again: the COPY fails on the primary key

    async with one_connection.acquire() as conn:
        echoed = await conn.fetchval("SELECT $1::timestamptz", datetime(2026, 1, 20, 12, 0, tzinfo=UTC))
        stored = await conn.fetch("SELECT ts FROM market_ticks")

    assert (echoed, [r["ts"] for r in stored]) == (datetime(2026, 1, 20, 12, 0, tzinfo=UTC), [EXPECTED[MIDNIGHT]])

