"""A migration behind a reader of its table (pg_dump, a psql left in a transaction): each try waits a short while for
the table lock and is retried, so the OMS's ledger writes queued behind it never fail for it; a reader that outlasts
the whole wait makes the start fail, naming it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from services.oms.ledger_pg import PgLedger
from shared.contracts import trading_pb2 as t
from shared.db import migrate
from shared.db.config import DatabaseSettings
from shared.db.database import connect_pool, ddl_lock_timeout_ms
from shared.errors import ConfigError
from tests.db.helpers import new_order, transition
from tests.helpers import eventually

NEXT_RELEASE = "ALTER TABLE order_ledger ADD COLUMN next_release text NOT NULL DEFAULT '';\n"


def next_release(home: Path) -> Path:
    """The shipped migrations plus the next release's, which changes order_ledger."""
    folder = home / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    version = max(m.version for m in migrate.discover()) + 1
    (folder / f"{version:04d}_next_release.sql").write_text(NEXT_RELEASE)
    return folder


@contextlib.asynccontextmanager
async def nightly_dump(database: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """pg_dump: a transaction that has read order_ledger and stays open until the block ends; yields what ends it
    sooner."""
    reader = await asyncpg.connect(database, server_settings={"application_name": "nightly-dump"})

    async def end() -> None:
        if not reader.is_closed():
            await reader.close()  # its transaction goes with it

    try:
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await reader.fetchval("SELECT count(*) FROM order_ledger")
        yield end
    finally:
        await end()


@contextlib.asynccontextmanager
async def upgraded_process(database: str, folder: Path) -> AsyncIterator[tuple[int, asyncio.Task[list[int]]]]:
    """The upgraded process starting: its migration running in a task; yields its backend pid and the task, which
    the block's end waits for (cancelled should the test have failed first)."""
    migrator = await asyncpg.connect(database)
    task = asyncio.create_task(migrate.migrate(migrator, folder))
    try:
        yield migrator.get_server_pid(), task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await migrator.close()


async def waiting_for_a_lock(pool: asyncpg.Pool, pid: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid))


async def has_column(database: str) -> bool:
    conn = await asyncpg.connect(database)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                        "WHERE table_name = 'order_ledger' AND column_name = 'next_release'"))
    finally:
        await conn.close()


async def test_a_migration_queued_behind_a_reader_does_not_fail_the_running_oms_ledger_writes(database, home):
    folder = next_release(home)
    pool = await connect_pool(database, DatabaseSettings())  # the running OMS's pool: lock_timeout 5 s
    ledger = PgLedger(pool)
    order = new_order(str(uuid.uuid4()), "sig-running")
    await ledger.insert_new(order, {})
    try:
        async with nightly_dump(database) as end_dump, upgraded_process(database, folder) as (pid, migrating):
            await eventually(lambda: waiting_for_a_lock(pool, pid))

            await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2), {})
            await end_dump()
            await migrating
        status = await pool.fetchval("SELECT status FROM order_ledger WHERE internal_id = $1",
                                     uuid.UUID(order.internal_id))
    finally:
        await pool.close()

    assert status == "OPEN"


async def test_a_migration_is_retried_and_applied_once_the_reader_ends(database, home, caplog):
    folder = next_release(home)
    caplog.set_level(logging.WARNING, logger="shared.db.migrate")
    async with nightly_dump(database) as end_dump, upgraded_process(database, folder) as (_, migrating):
        await eventually(lambda: "migration waits for a table lock" in caplog.text, within=10.0)
        await end_dump()
        applied = await migrating

    assert applied == [max(m.version for m in migrate.discover(folder))]


async def test_a_reader_outlasting_the_wait_fails_the_migration_naming_the_reader(database, home):
    folder = next_release(home)
    migrator = await asyncpg.connect(database)
    try:
        async with nightly_dump(database):
            with pytest.raises(ConfigError) as err:
                await migrate.migrate(migrator, folder, lock_wait_s=2.0)
    finally:
        await migrator.close()

    assert "next_release.sql" in str(err.value) and "application nightly-dump" in str(err.value)


async def test_a_migration_rolled_back_for_a_reader_leaves_nothing_applied(database, home):
    folder = next_release(home)
    migrator = await asyncpg.connect(database)
    try:
        async with nightly_dump(database):
            with contextlib.suppress(ConfigError):
                await migrate.migrate(migrator, folder, lock_wait_s=1.0)
    finally:
        await migrator.close()

    assert await has_column(database) is False


def test_a_migration_waits_for_a_table_lock_at_most_half_the_writers_lock_timeout():
    assert ddl_lock_timeout_ms(DatabaseSettings(lock_timeout_ms=600)) == 300
