"""Partition DDL never waits for good behind a reader: retention skips the day, creation gives up and retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import asyncpg
import pytest

from shared.clock import day_of
from shared.db import partitions
from shared.db.config import DatabaseSettings
from shared.db.database import open_database
from tests.db.helpers import reading_market_ticks


async def test_retention_skips_a_partition_a_reader_holds_and_drops_it_on_a_later_pass(db_pool, database):
    today = day_of(time.time_ns())
    held, free = today - timedelta(days=41), today - timedelta(days=40)
    await partitions.ensure_days(db_pool, [held, free, today])
    reader = await asyncpg.connect(database)
    tx = reader.transaction()
    await tx.start()
    await reader.fetchval(f'SELECT count(*) FROM "{partitions.partition_name(held)}"')
    try:
        first = await asyncio.wait_for(partitions.drop_before(db_pool, today - timedelta(days=30)), 5.0)
    finally:
        await tx.rollback()
        await reader.close()

    later = await partitions.drop_before(db_pool, today - timedelta(days=30))

    assert (first, later) == ([free], [held])
    assert await partitions.existing_days(db_pool) == {today}


async def test_ddl_that_gives_up_waiting_for_the_lock_returns_its_connection_to_the_pool(db_pool, database):
    """The tick writer bounds its DDL with a timeout: each cancelled wait for the DDL lock used to keep its pool
    connection for good, so after pool max_size of them every query on the pool (the tick COPY too) hung."""
    holder = await asyncpg.connect(database)
    await holder.execute("SELECT pg_advisory_lock($1)", partitions._LOCK_KEY)
    day = day_of(time.time_ns()) + timedelta(days=3)
    try:
        for _ in range(db_pool.get_max_size() + 2):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await partitions.ensure_days(db_pool, [day])
    finally:
        await holder.close()

    created = await asyncio.wait_for(partitions.ensure_days(db_pool, [day]), 5.0)

    assert created == [day]
    assert await db_pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == 0


async def test_creating_a_partition_behind_a_reader_gives_up_names_the_reader_and_succeeds_later(
        db_pool, database, caplog):
    day = day_of(time.time_ns()) + timedelta(days=5)
    async with reading_market_ticks(database) as reader_pid:
        with caplog.at_level(logging.WARNING, logger="shared.db.partitions"), \
                pytest.raises(asyncpg.LockNotAvailableError):
            await asyncio.wait_for(partitions.ensure_days(db_pool, [day]), 5.0)

    created = await partitions.ensure_days(db_pool, [day])

    assert [h["pid"] for r in caplog.records for h in getattr(r, "holders", [])] == [reader_pid]
    assert created == [day]


async def test_start_up_with_a_reader_on_market_ticks_does_not_wait_for_it(db_pool, database, home):
    today = day_of(time.time_ns())
    async with reading_market_ticks(database):
        db = await asyncio.wait_for(open_database(database, home, DatabaseSettings(partitions_ahead_days=3)), 5.0)
        await db.close()

    assert db.where.endswith(database.rsplit("/", 1)[1])
    assert today + timedelta(days=3) not in await partitions.existing_days(db_pool)  # left to the tick writer
