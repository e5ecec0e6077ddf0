"""TickWriter: COPY into daily partitions, bad ticks, the buffer bound, and a database outage that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.ingestion import tick_writer
from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock, day_of
from shared.contracts import market_pb2
from shared.db import partitions
from shared.db.config import DatabaseSettings
from tests.db.helpers import batch, reading_market_ticks, tick, until


async def _count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM market_ticks"))


async def test_flush_writes_every_offered_tick_into_todays_partition(db_pool):
    writer = TickWriter(db_pool)
    writer.offer(batch(250))

    written = await writer.flush()

    assert written == 250
    today = day_of(time.time_ns())
    in_partition = await db_pool.fetchval(f'SELECT count(*) FROM "{partitions.partition_name(today)}"')
    assert in_partition == 250


async def test_two_ticks_of_one_token_in_the_same_microsecond_are_both_stored(db_pool):
    writer = TickWriter(db_pool)
    ts = time.time_ns()
    writer.offer(market_pb2.TickBatch(ticks=[tick(ts_ns=ts, ltp=100), tick(ts_ns=ts + 1, ltp=101)]))

    await writer.flush()

    assert sorted(r["ltp"] for r in await db_pool.fetch("SELECT ltp FROM market_ticks")) == [100, 101]


async def test_bad_ticks_are_rejected_and_counted_while_the_rest_of_the_batch_is_written(db_pool):
    writer = TickWriter(db_pool)
    now = time.time_ns()
    writer.offer(market_pb2.TickBatch(ticks=[
        tick(ts_ns=now), tick(ts_ns=now + 30 * 86_400 * NS), tick(ts_ns=now - 30 * 86_400 * NS),
        tick(ts_ns=now, ltp=0), tick(ts_ns=now, volume=-1), tick(ts_ns=now + 1000)]))

    written = await writer.flush()

    assert written == 2
    assert writer.rejected == {"future": 1, "past": 1, "price": 1, "volume": 1}
    assert await _count(db_pool) == 2
    assert writer.pending == 0


async def test_ticks_beyond_the_buffer_bound_are_counted_as_dropped(db_pool):
    writer = TickWriter(db_pool, DatabaseSettings(writer_buffer_rows=10))
    for _ in range(3):
        writer.offer(batch(4))

    await writer.flush()

    assert writer.dropped == 4
    assert writer.persisted == 8
    assert await _count(db_pool) == 8


async def test_offer_never_raises_on_a_malformed_batch(db_pool):
    writer = TickWriter(db_pool)

    writer.offer(None)  # type: ignore[arg-type]

    assert writer.pending == 0


async def test_a_tick_for_a_day_without_partition_creates_it_on_the_fly(db_pool):
    now = time.time_ns()
    writer = TickWriter(db_pool, DatabaseSettings(max_tick_future_s=30 * 86_400), clock=ManualClock(now))
    later = now + 10 * 86_400 * NS
    writer.offer(market_pb2.TickBatch(ticks=[tick(ts_ns=later)]))

    await writer.flush()

    assert day_of(later) in await partitions.existing_days(db_pool)
    assert await _count(db_pool) == 1


async def test_run_creates_partitions_ahead_and_drops_those_past_retention(db_pool):
    now = time.time_ns()
    today = day_of(now)
    await partitions.ensure_days(db_pool, [today - timedelta(days=40), today - timedelta(days=2)])
    writer = TickWriter(db_pool, DatabaseSettings(partitions_ahead_days=2, tick_retention_days=30),
                        clock=ManualClock(now))

    runner = asyncio.create_task(writer.run())
    await until(lambda: writer.housekeeping_passes > 0)
    runner.cancel()

    days = await partitions.existing_days(db_pool)
    assert days == {today - timedelta(days=2), today, today + timedelta(days=1), today + timedelta(days=2)}


@contextlib.asynccontextmanager
async def refusing_connections(pg_server: str, name: str) -> AsyncIterator[None]:
    """The database refuses new connections and its open ones are cut, until the block ends."""
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()


async def test_ticks_offered_while_the_database_is_away_are_written_when_it_returns(db_pool, database, pg_server):
    name = database.rsplit("/", 1)[1]
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20))
    runner = asyncio.create_task(writer.run())
    writer.offer(batch(100, token=1))
    await until(lambda: writer.persisted == 100)
    try:
        async with refusing_connections(pg_server, name):
            writer.offer(batch(100, token=2))
            await until(lambda: not writer.connected)
            writer.offer(batch(100, token=3))
        await until(lambda: writer.persisted == 300 and writer.connected)  # connected once that flush returns
    finally:
        runner.cancel()

    assert writer.connected
    assert writer.dropped == 0
    assert await _count(db_pool) == 300


async def test_ticks_offered_while_the_database_refuses_connections_for_seconds_are_all_written(
        db_pool, database, pg_server):
    name = database.rsplit("/", 1)[1]
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20))
    runner = asyncio.create_task(writer.run())
    writer.offer(batch(100, token=1))
    await until(lambda: writer.persisted == 100)
    try:
        # "not currently accepting connections" for 1.5 s: many more retries than a refused COPY is allowed.
        async with refusing_connections(pg_server, name):
            writer.offer(batch(100, token=2))
            await asyncio.sleep(1.5)
        await until(lambda: writer.persisted == 200 or writer.failed > 0)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert (writer.persisted, writer.failed, writer.dropped) == (200, 0, 0)
    assert await _count(db_pool) == 200


async def test_ticks_are_written_while_a_reader_holds_an_expired_partition_that_retention_wants(db_pool, database):
    now = time.time_ns()
    today = day_of(now)
    expired = today - timedelta(days=40)
    await partitions.ensure_days(db_pool, [expired])
    reader = await asyncpg.connect(database)  # a long report or pg_dump: AccessShareLock until it commits
    tx = reader.transaction()
    await tx.start()
    await reader.fetchval(f'SELECT count(*) FROM "{partitions.partition_name(expired)}"')
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20, tick_retention_days=30,
                                                  partitions_ahead_days=1), clock=ManualClock(now))
    runner = asyncio.create_task(writer.run())
    try:
        writer.offer(batch(100))
        await until(lambda: writer.persisted == 100 and writer.housekeeping_passes > 0, 5.0)
    finally:
        await tx.rollback()
        await reader.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert writer.persisted == 100
    days = await partitions.existing_days(db_pool)
    assert {expired, today, today + timedelta(days=1)} <= days


async def test_close_flushes_what_is_still_pending(db_pool):
    writer = TickWriter(db_pool)
    writer.offer(batch(30))

    await writer.close()

    assert await _count(db_pool) == 30


async def test_a_partition_dropped_under_the_writer_is_recreated_and_the_ticks_written(db_pool):
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20))
    runner = asyncio.create_task(writer.run())
    writer.offer(batch(10))
    await until(lambda: writer.persisted == 10)
    await db_pool.execute(f'DROP TABLE "{partitions.partition_name(day_of(time.time_ns()))}"')

    writer.offer(batch(20))
    await until(lambda: writer.persisted == 30)
    runner.cancel()

    assert await _count(db_pool) == 20
    assert writer.failed == 0


async def test_retrying_a_chunk_that_already_committed_stores_it_once(db_pool):
    writer = TickWriter(db_pool)
    writer.offer(batch(50))
    chunk = await writer._take_chunk()
    await writer._write(chunk)

    await writer._write(chunk)  # the reply of the first COPY was lost: same rows, same seq

    assert await _count(db_pool) == 50


async def test_ticks_the_database_never_takes_before_shutdown_are_counted_as_dropped(database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    writer = TickWriter(pool)
    writer.offer(batch(7))
    await pool.close()

    await writer.close(grace_s=1.0)

    assert (writer.dropped, writer.pending) == (7, 0)


async def test_a_tick_the_database_refuses_for_its_data_is_counted_and_the_rest_of_its_chunk_stored(db_pool):
    writer = TickWriter(db_pool)
    now = time.time_ns()
    bad = tick(token=11536, ts_ns=now + 500_000)
    bad.exchange_segment = "nse_cm\x00"  # PostgreSQL text cannot hold a NUL: the whole COPY is refused
    good = batch(999, start_ns=now).ticks
    writer.offer(market_pb2.TickBatch(ticks=[*good[:500], bad, *good[500:]]))

    written = await writer.flush()

    assert (written, writer.rejected, writer.failed, writer.pending) == (999, {"database": 1}, 0, 0)
    assert await _count(db_pool) == 999


@contextlib.asynccontextmanager
async def refusing_rows(pool: asyncpg.Pool, sqlstate: str) -> AsyncIterator[asyncpg.Pool]:
    """Every insert into market_ticks fails with `sqlstate` until the block ends; counts refusals in a sequence."""
    await pool.execute(f"""
        CREATE SEQUENCE refusals;
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM nextval('refusals'); RAISE EXCEPTION 'refused for the test' USING ERRCODE = '{sqlstate}'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON market_ticks FOR EACH ROW EXECUTE FUNCTION refuse()""")
    try:
        yield pool
    finally:
        await pool.execute("DROP TRIGGER refuse ON market_ticks")


async def _refusals(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals"))


async def _refused_at_least(pool: asyncpg.Pool, n: int) -> bool:
    return await _refusals(pool) >= n


@pytest.mark.parametrize("sqlstate", ["disk_full", "out_of_memory", "io_error", "read_only_sql_transaction"])
async def test_ticks_offered_while_the_database_cannot_write_are_kept_and_written_when_it_can(db_pool, sqlstate,
                                                                                          monkeypatch):
    monkeypatch.setattr(tick_writer, "GIVE_UP_S", 0.3)  # what other refusals get: these outlast it
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20))
    runner = asyncio.create_task(writer.run())
    try:
        async with refusing_rows(db_pool, sqlstate):
            writer.offer(batch(100, token=1))
            await until(lambda: not writer.connected)
            writer.offer(batch(100, token=2))
            await until(lambda: _refused_at_least(db_pool, 6))  # twice the tries a refused chunk used to get
            await asyncio.sleep(0.5)
        await until(lambda: writer.persisted == 200 or writer.failed > 0)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert (writer.persisted, writer.failed, writer.dropped) == (200, 0, 0)
    assert await _count(db_pool) == 200


async def test_a_chunk_refused_for_another_reason_is_retried_until_the_give_up_time_then_counted(
        db_pool, monkeypatch):
    monkeypatch.setattr(tick_writer, "GIVE_UP_S", 1.0)
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20))
    runner = asyncio.create_task(writer.run())
    try:
        async with refusing_rows(db_pool, "insufficient_privilege"):
            writer.offer(batch(100))
            await until(lambda: writer.failed > 0)
            refusals = await _refusals(db_pool)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert (writer.failed, writer.persisted, writer.pending) == (100, 0, 0)
    assert refusals > 3


async def test_ticks_are_written_while_a_reader_holds_market_ticks_and_partitions_ahead_are_due(db_pool, database):
    await partitions.ensure_days(db_pool, [day_of(time.time_ns())])  # only today's: the days ahead are due
    writer = TickWriter(db_pool, DatabaseSettings(writer_flush_interval_ms=20, partitions_ahead_days=3))
    async with reading_market_ticks(database):
        runner = asyncio.create_task(writer.run())
        try:
            writer.offer(batch(100))
            await until(lambda: writer.persisted == 100 and writer.housekeeping_passes > 0, 5.0)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    assert await _count(db_pool) == 100
