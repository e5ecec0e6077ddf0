"""Partition retention: an expired day someone is reading is skipped, not waited for, and dropped later."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import asyncpg

from shared.clock import day_of
from shared.db import partitions


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
