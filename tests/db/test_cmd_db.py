"""`neopulse db migrate` / `neopulse db status` against a database given by DATABASE_URL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.app.cli import main


@pytest.fixture
def empty_url(pg_server, monkeypatch):
    name = f"c_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = pg_server.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.delenv("NEOPULSE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def test_db_status_exits_1_while_migrations_are_pending_and_0_after_migrate(empty_url, capsys):
    before = main(["db", "status"])
    migrated = main(["db", "migrate"])
    after = main(["db", "status"])

    assert (before, migrated, after) == (1, 0, 0)
    assert "0001_initial  pending" in capsys.readouterr().out


def test_db_migrate_with_an_unreachable_url_exits_2_naming_the_server(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/nowhere")

    code = main(["db", "migrate"])

    assert code == 2
    assert "127.0.0.1:1/nowhere" in capsys.readouterr().err


def test_db_psql_runs_a_command_on_the_database(empty_url, capfd):
    code = main(["db", "psql", "-c", "SELECT 40 + 2 AS answer"])

    assert code == 0
    assert "42" in capfd.readouterr().out
