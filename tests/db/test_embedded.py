"""The embedded server and open_database: reuse of the data dir, stale pid files, orphans, bad URLs."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from shared.clock import day_of
from shared.db import partitions
from shared.db.database import open_database
from shared.db.embedded import EmbeddedPostgres, _alive, _read_pidfile
from shared.errors import ConfigError


async def _query(dsn: str, sql: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_restarted_server_keeps_its_data(home):
    async with EmbeddedPostgres(home) as dsn:
        await _query(dsn, "CREATE TABLE kept AS SELECT 42 AS answer")

    async with EmbeddedPostgres(home) as dsn:
        assert await _query(dsn, "SELECT answer FROM kept") == 42


async def test_a_stale_postmaster_pid_from_a_crashed_run_is_recovered(home):
    async with EmbeddedPostgres(home):
        pass
    # A crashed run leaves its pid file; the pid now belongs to some other live process (here: this one).
    (home / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n{home}\n0\n5432\n\n\n\n")

    async with EmbeddedPostgres(home) as dsn:
        assert await _query(dsn, "SELECT 1") == 1


async def test_a_server_left_running_by_a_crashed_owner_is_adopted_and_stopped_by_the_new_owner(home):
    crashed = EmbeddedPostgres(home)
    old_dsn = await asyncio.to_thread(crashed.start)
    orphan_pid = _read_pidfile(crashed.pgdata)[0]
    crashed._release_lock()  # the owner died without stopping its server

    async with EmbeddedPostgres(home) as dsn:
        assert (dsn, _read_pidfile(crashed.pgdata)[0]) == (old_dsn, orphan_pid)
        assert await _query(dsn, "SELECT 1") == 1

    assert not _alive(orphan_pid)


async def test_a_second_process_shares_a_running_server_without_stopping_it(home):
    async with EmbeddedPostgres(home) as dsn:
        other = EmbeddedPostgres(home)
        other._take_lock = lambda: False  # the lock is held by "another process"
        shared_dsn = await asyncio.to_thread(other.start)
        await asyncio.to_thread(other.stop)

        assert shared_dsn == dsn
        assert await _query(dsn, "SELECT 1") == 1


async def test_the_owner_leaving_does_not_stop_a_server_another_process_still_uses(home):
    """`neopulse db psql` started the server, `neopulse run` shared it, psql quit: the run keeps its database,
    and the last one out stops it."""
    owner, sharer = EmbeddedPostgres(home), EmbeddedPostgres(home)  # separate lock handles, as two processes
    dsn = await asyncio.to_thread(owner.start)
    assert await asyncio.to_thread(sharer.start) == dsn and not sharer.owned
    pid = _read_pidfile(owner.pgdata)[0]

    await asyncio.to_thread(owner.stop)
    still_there = await _query(dsn, "SELECT 1")
    await asyncio.to_thread(sharer.stop)

    assert still_there == 1
    assert not _alive(pid)


async def test_open_database_without_url_starts_embedded_and_migrates(home):
    db = await open_database(None, home)
    try:
        tables = await db.pool.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'order_ledger'")
        days = await partitions.existing_days(db.pool)
        described = db.describe()
    finally:
        await db.close()

    assert tables == 1
    assert day_of(time.time_ns()) in days
    assert "embedded PostgreSQL 127.0.0.1:" in described and "/neopulse" in described


async def test_an_unreachable_database_url_is_a_config_error_naming_host_port_and_db(home):
    with pytest.raises(ConfigError) as err:
        await open_database("postgresql://trader:hunter2@127.0.0.1:1/ledger", home)

    assert "127.0.0.1:1/ledger" in str(err.value)
    assert "hunter2" not in str(err.value)


async def test_a_wrong_password_is_a_config_error_that_does_not_echo_it(pg_server, home):
    host_part = pg_server.split("@", 1)[1]

    with pytest.raises(ConfigError) as err:
        await open_database(f"postgresql://postgres:wrong-secret@{host_part}", home)

    assert "authentication failed" in str(err.value)
    assert "wrong-secret" not in str(err.value)


async def test_two_processes_creating_the_database_at_once_both_get_it(pg_server):
    import uuid

    import asyncpg

    from shared.db.database import ensure_database

    name = f"race_{uuid.uuid4().hex[:12]}"
    try:
        dsns = await asyncio.gather(ensure_database(pg_server, name), ensure_database(pg_server, name))
    finally:
        admin = await asyncpg.connect(pg_server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    assert dsns[0] == dsns[1] and dsns[0].endswith(f"/{name}")


def test_a_database_url_with_an_unencoded_slash_in_its_password_never_shows_the_password():
    from shared.db.database import where_of

    shown = where_of("postgresql://neopulse:2025/Kq+9xZ@db.example:5433/neopulse")

    assert shown == "db.example:5433/neopulse"
