"""Partition retention: an expired day someone is reading is skipped, not waited for, and dropped later."""

from __future__ import annotations

import asyncio
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
