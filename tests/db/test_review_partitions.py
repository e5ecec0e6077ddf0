"""Partitions under review: retention never drops today's (or a later) day, whatever cutoff a caller's clock gives."""

from __future__ import annotations

import time
from datetime import timedelta

from shared.clock import day_of
from shared.db import partitions


async def test_retention_with_a_cutoff_past_today_keeps_todays_and_later_partitions(db_pool):
    today = day_of(time.time_ns())
    old = today - timedelta(days=40)
    await partitions.ensure_days(db_pool, [old, today, today + timedelta(days=1)])

    # A process whose clock runs days ahead (a simulator, a bad NTP) computes a cutoff in the future.
    dropped = await partitions.drop_before(db_pool, today + timedelta(days=5))

    assert dropped == [old]
    assert await partitions.existing_days(db_pool) == {today, today + timedelta(days=1)}
