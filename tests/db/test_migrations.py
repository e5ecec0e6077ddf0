"""Migrations: applied once in order, recorded, safe to run twice and from two connections at once."""

from __future__ import annotations

import asyncio
import shutil
import uuid

import asyncpg
import pytest

from shared.db import migrate
from shared.errors import ConfigError


async def test_migrating_twice_applies_each_migration_once(empty_db):
    conn = await asyncpg.connect(empty_db)
    try:
        first = await migrate.migrate(conn)
        second = await migrate.migrate(conn)
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()

    assert first == [m.version for m in migrate.discover()]
    assert second == []
    assert recorded == len(first)


async def test_two_concurrent_migrators_apply_everything_exactly_once(empty_db):
    conns = [await asyncpg.connect(empty_db) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()

    assert sorted(results, key=len) == [[], [m.version for m in migrate.discover()]]


async def test_status_lists_pending_migrations_before_and_applied_ones_after(empty_db):
    conn = await asyncpg.connect(empty_db)
    try:
        before = await migrate.status(conn)
        await migrate.migrate(conn)
        after = await migrate.status(conn)
    finally:
        await conn.close()

    assert [s.applied_at for s in before] == [None] * len(before)
    assert all(s.applied_at is not None for s in after)


async def test_an_applied_migration_edited_afterwards_is_refused(empty_db, home):
    (home / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, home)
        (home / "0001_first.sql").write_text("CREATE TABLE a (x bigint);")
        with pytest.raises(ConfigError, match=r"0001_first\.sql changed"):
            await migrate.migrate(conn, home)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(empty_db, home):
    (home / "0001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (home / "0002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_function();")
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate.migrate(conn, home)
        half = await conn.fetchval("SELECT to_regclass('half') IS NOT NULL")
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()

    assert (half, versions) == (False, [1])


async def test_orders_given_up_before_reason_codes_existed_get_theirs_from_the_migration(empty_db, home):
    """0002 adds order_ledger.reason_code; rows the OMS gave up on (known then only by their reason text) get
    OUTCOME_UNKNOWN, so a restart still finds and adopts them. A broker's rejection gets no code."""
    shutil.copy(migrate.MIGRATIONS_DIR / "0001_initial.sql", home / "0001_initial.sql")
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, home)  # a database from before 0002
        for tag, reason in [("c-lost", "placement outcome unknown (timeout); tag c-lost not found at the broker"),
                            ("c-gone", "sent before restart but the broker has no order tagged c-gone; place it"),
                            ("c-rms", "RMS: margin exceeds")]:
            await conn.execute(
                "INSERT INTO order_ledger (internal_id, client_order_id, status, side, quantity, order_type, product,"
                " token, reason, created_at, updated_at) VALUES ($1, $2, 'REJECTED', 'BUY', 1, 'LIMIT', 'MIS', 2885,"
                " $3, now(), now())", uuid.uuid4(), tag, reason)
        applied = await migrate.migrate(conn)
        codes = dict(await conn.fetch("SELECT client_order_id, reason_code FROM order_ledger"))
    finally:
        await conn.close()

    assert applied == [m.version for m in migrate.discover()][1:]
    assert codes == {"c-lost": "OUTCOME_UNKNOWN", "c-gone": "OUTCOME_UNKNOWN", "c-rms": ""}
