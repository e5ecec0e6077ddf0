"""Keyset pages of all tokens' ticks (queries.ticks_page): each page reads about a page of rows, wherever it starts.

Runs the page query under EXPLAIN ANALYZE on a populated day partition, and pages a range that spans two days.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import pytest

from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.db import migrate, partitions, queries
from shared.db.config import DatabaseSettings
from tests.db.helpers import tick

DAY = date(2026, 1, 20)
T0 = ist_ns(DAY, 9, 15)
DAY_TICKS = 20_000
PAGE = 200


@pytest.fixture
async def explained(database: str) -> AsyncIterator[tuple[asyncpg.Pool, list[dict[str, Any]]]]:
    """A pool whose statements on market_ticks report their EXPLAIN ANALYZE plans (auto_explain, as notices)."""
    plans: list[dict[str, Any]] = []

    def on_notice(_conn: Any, message: Any) -> None:
        text = message.message
        if "plan:" in text and "market_ticks" in text:
            plans.append(json.loads(text.split("plan:", 1)[1])["Plan"])

    async def setup(conn: Any) -> None:  # on every acquire: the pool's reset on release undoes SET and listeners
        await conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
            "SET auto_explain.log_analyze = on; SET auto_explain.log_format = json; "
            "SET auto_explain.log_level = notice"
        )
        conn.add_log_listener(on_notice)

    pool = await asyncpg.create_pool(database, min_size=1, max_size=2, setup=setup)
    try:
        yield pool, plans
    finally:
        await pool.close()


async def _store(pool: Any, ticks: list[market_pb2.Tick]) -> None:
    writer = TickWriter(pool, DatabaseSettings(max_tick_past_s=10**9), clock=ManualClock(T0))
    writer.offer(market_pb2.TickBatch(ticks=ticks))
    await writer.flush()


def _day(start_ns: int, n: int) -> list[market_pb2.Tick]:
    """n ticks of 50 tokens, 1 ms apart, a few sharing a timestamp (a busy millisecond)."""
    return [tick(1000 + i % 50, start_ns + (i // 3) * 1_000_000, 250_000 + i % 97) for i in range(n)]


def _rows_read(plan: dict[str, Any]) -> int:
    """Table rows the scan nodes of an EXPLAIN ANALYZE plan produced or filtered away, over all their loops (a
    bitmap index scan's rows are its heap scan's: not counted twice)."""
    own = 0
    if plan["Node Type"].endswith("Scan") and plan["Node Type"] != "Bitmap Index Scan":
        kept = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        own = round(kept * plan.get("Actual Loops", 1))
    return own + sum(_rows_read(child) for child in plan.get("Plans", ()))


def _outline(plan: dict[str, Any], depth: int = 0) -> str:
    line = f"{'  ' * depth}{plan['Node Type']} {plan.get('Index Name', '')} rows={plan.get('Actual Rows')}\n"
    return line + "".join(_outline(child, depth + 1) for child in plan.get("Plans", ()))


@pytest.mark.filterwarnings("ignore:.*active log listener")  # the listener is the explained pool's on purpose
@pytest.mark.parametrize("analysed", [False, True], ids=["fresh day", "analysed day"])
async def test_a_page_in_the_middle_of_a_day_reads_about_a_page_of_rows_not_the_rest_of_the_day(explained, analysed):
    pool, plans = explained
    await _store(pool, _day(T0, DAY_TICKS))
    if analysed:
        await pool.execute("ANALYZE market_ticks")
    first, key = await queries.ticks_page(pool, T0, T0 + 86_400 * NS // 4, DAY_TICKS // 2)
    plans.clear()

    page, _ = await queries.ticks_page(pool, T0, T0 + 86_400 * NS // 4, PAGE, after=key)

    assert (len(first), len(page), len(plans)) == (DAY_TICKS // 2, PAGE, 1)
    assert _rows_read(plans[0]) <= 2 * PAGE, _outline(plans[0])


async def test_paging_a_range_across_two_days_returns_every_tick_once_in_time_then_arrival_order(db_pool):
    next_day = ist_ns(date(2026, 1, 21), 0, 0)
    await _store(db_pool, _day(next_day - 2 * NS, 3_000))  # 2 s before midnight IST, then on into the next day
    whole = await queries.ticks(db_pool, None, T0, next_day + 86_400 * NS)

    paged: list[market_pb2.Tick] = []
    key = None
    while True:
        page, key = await queries.ticks_page(db_pool, T0, next_day + 86_400 * NS, 128, after=key)
        paged += page
        if key is None:
            break

    assert len(whole) == 3_000
    assert [(t.ts_ns, t.token, t.ltp_paise) for t in paged] == [(t.ts_ns, t.token, t.ltp_paise) for t in whole]


async def test_partitions_made_before_and_after_the_migration_all_have_the_time_order_index(empty_db, home):
    conn = await asyncpg.connect(empty_db)
    try:
        for m in migrate.discover()[:4]:
            (home / m.filename).write_text(m.sql)
        await migrate.migrate(conn, home)  # a database from before 0005, with a day of ticks
        await partitions.ensure_days(conn, [DAY])
        await conn.execute(
            "INSERT INTO market_ticks SELECT $1::timestamptz, 1, 1, 'nse_cm', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1",
            partitions.day_start(DAY),
        )
        await migrate.migrate(conn)
        await partitions.ensure_days(conn, [date(2026, 1, 21)])
        indexed = await conn.fetch(
            "SELECT tablename FROM pg_indexes WHERE tablename LIKE 'market_ticks_%' "
            "AND indexdef LIKE '%(ts, seq)' ORDER BY tablename"
        )
    finally:
        await conn.close()

    assert [r["tablename"] for r in indexed] == ["market_ticks_2026_01_20", "market_ticks_2026_01_21"]
