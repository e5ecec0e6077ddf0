"""Migrations under review: a database newer than the code is refused, a failing migration is named and rolled back,
and two processes starting at once on one database migrate it exactly once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from services.app.cli import main
from shared.db import migrate
from shared.db.database import open_database
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_a_database_migrated_by_newer_code_is_refused_before_anything_is_applied(empty_db, home):
    newer, older = home / "newer", home / "older"
    newer.mkdir(), older.mkdir()
    (newer / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    (newer / "0002_second.sql").write_text("ALTER TABLE a ADD COLUMN y int;")
    (older / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    (older / "0003_other.sql").write_text("CREATE TABLE c (x int);")  # a branch that never saw 0002
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, newer)
        with pytest.raises(ConfigError, match=r"0002_second.*newer") as err:
            await migrate.migrate(conn, older)
        other = await conn.fetchval("SELECT to_regclass('c') IS NOT NULL")
    finally:
        await conn.close()

    assert other is False
    assert "upgrade" in str(err.value)


async def test_an_older_release_with_nothing_pending_runs_on_a_newer_schema(empty_db, home):
    """A rollback: the newer release added 0002 (migrations only add, with defaults); the older one has all of
    its own applied and starts, with a warning, instead of refusing to run."""
    newer, older = home / "newer", home / "older"
    newer.mkdir(), older.mkdir()
    (newer / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    (newer / "0002_second.sql").write_text("ALTER TABLE a ADD COLUMN y int DEFAULT 0;")
    (older / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, newer)
        applied = await migrate.migrate(conn, older)
    finally:
        await conn.close()

    assert applied == []


async def test_status_shows_a_migration_the_code_does_not_know(empty_db, home):
    (home / "0001_first.sql").write_text("CREATE TABLE a (x int);")
    (home / "0002_second.sql").write_text("CREATE TABLE b (x int);")
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate.migrate(conn, home)
        (home / "0002_second.sql").unlink()
        listed = await migrate.status(conn, home)
    finally:
        await conn.close()

    assert [(s.version, s.name, s.applied_at is not None) for s in listed] == [(1, "first", True),
                                                                              (2, "second", True)]
    assert [s.known for s in listed] == [True, False]


async def test_open_database_names_the_failing_migration_and_leaves_the_schema_at_the_last_good_one(
        empty_db, home, monkeypatch):
    (home / "0001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (home / "0002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_function();")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", home)

    with pytest.raises(ConfigError) as err:
        await open_database(empty_db, home)
    rows = await _fetch(empty_db, "SELECT version, to_regclass('half') IS NULL AS rolled_back FROM schema_migrations")

    assert "0002_bad.sql" in str(err.value) and "no_such_function" in str(err.value)
    assert "CREATE rights" not in str(err.value)
    assert [(r["version"], r["rolled_back"]) for r in rows] == [(1, True)]


def test_db_migrate_with_a_failing_migration_exits_2_with_one_line_naming_it(empty_db, home, monkeypatch, capsys):
    (home / "0001_bad.sql").write_text("SELECT no_such_function();")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", home)
    monkeypatch.delenv("NEOPULSE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", empty_db)

    code = main(["db", "migrate"])

    err = capsys.readouterr().err
    assert code == 2
    assert "0001_bad.sql" in err and len(err.strip().splitlines()) == 1


_MIGRATOR = """
import asyncio, sys
import asyncpg
from shared.db import migrate

async def run(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        print(",".join(str(v) for v in await migrate.migrate(conn)))
    finally:
        await conn.close()

asyncio.run(run(sys.argv[1]))
"""


async def test_two_processes_migrating_one_database_at_once_apply_each_migration_once(empty_db):
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", _MIGRATOR, empty_db, cwd=ROOT,
                                                  stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    outs = [(await asyncio.wait_for(p.communicate(), 60))[0].decode().strip() for p in procs]
    recorded = await _fetch(empty_db, "SELECT version FROM schema_migrations ORDER BY version")

    everything = ",".join(str(m.version) for m in migrate.discover())
    assert ([p.returncode for p in procs], sorted(outs)) == ([0, 0], ["", everything])
    assert [r["version"] for r in recorded] == [m.version for m in migrate.discover()]
