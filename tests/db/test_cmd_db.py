"""`neopulse db migrate` / `neopulse db status` / `neopulse db psql` against a database given by DATABASE_URL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from services.app import cmd_db
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


def test_db_stamp_records_what_the_database_holds_and_status_shows_it(empty_url, capsys):
    before = main(["db", "stamp", "live", "real"])  # migrates first: the stamp's table comes with 0013
    main(["db", "status"])

    out = capsys.readouterr().out
    assert before == 0
    assert "held not stamped yet; now holds live trading on Kotak's real market" in out
    assert "holds: live trading on Kotak's real market" in out


def test_db_migrate_waits_for_a_table_lock_no_longer_than_the_configured_writers_would(empty_url, tmp_path,
                                                                                        monkeypatch):
    """A migration behind a reader (pg_dump, an idle psql) must not outwait the running OMS's ledger writes queued
    behind it: `neopulse db migrate` waits half of [database] lock_timeout_ms from the config, as a start does."""
    waits = []
    real = cmd_db.migrate.migrate

    async def migrate(conn, *args, **kwargs):
        waits.append(kwargs.get("lock_timeout_ms"))
        return await real(conn, *args, **kwargs)

    monkeypatch.setattr(cmd_db.migrate, "migrate", migrate)
    config = tmp_path / "neopulse.toml"
    config.write_text("[database]\nlock_timeout_ms = 400\n")

    assert main(["db", "migrate", "--config", str(config)]) == 0
    assert waits == [200]


def test_db_migrate_with_an_unreachable_url_exits_2_naming_the_server(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/nowhere")

    code = main(["db", "migrate"])

    assert code == 2
    assert "127.0.0.1:1/nowhere" in capsys.readouterr().err


def test_db_psql_runs_a_command_on_the_database(empty_url, capfd):
    code = main(["db", "psql", "-c", "SELECT 40 + 2 AS answer"])

    assert code == 0
    assert "42" in capfd.readouterr().out


def test_db_psql_runs_every_command_given_in_order(empty_url, capfd):
    code = main(["db", "psql", "-c", "SELECT 'first' AS one", "-c", "SELECT 'second' AS two"])

    out = capfd.readouterr().out
    assert code == 0 and "first" in out and "second" in out and out.index("first") < out.index("second")


def _secrets_in_query(url: str) -> tuple[str, str]:
    """`url` with its password moved from user:password@ to the query string, with an sslpassword beside it."""
    parts = urlsplit(url)
    user, _, password = parts.netloc.rpartition("@")[0].partition(":")
    netloc = f"{user}@{parts.netloc.rpartition('@')[2]}"
    query = f"sslmode=disable&password={quote(password, safe='')}&sslpassword=k3y%2Bx&application_name=np+psql"
    return urlunsplit((parts.scheme, netloc, parts.path, query, "")), password


def test_db_psql_keeps_the_secrets_of_the_url_query_off_psqls_command_line(monkeypatch):
    monkeypatch.setenv(
        "DATABASE_URL",
        "postgresql://u@db.example:6432/np?password=s3cret&sslpassword=k3y%2Bx"
        "&sslmode=require&application_name=np+psql",
    )
    monkeypatch.delenv("NEOPULSE_DATABASE_URL", raising=False)
    monkeypatch.delenv("PGSERVICE", raising=False)
    seen = {}

    def fake_call(argv, env):  # psql itself is run in the test below; here only what it would be given
        service = Path(env.get("PGSERVICEFILE", "/nonexistent"))
        seen.update(
            argv=argv,
            password=env.get("PGPASSWORD"),
            service=service.exists() and service.read_text(),
            mode=service.exists() and service.stat().st_mode & 0o777,
        )
        return 0

    monkeypatch.setattr(cmd_db, "_run_in_foreground", fake_call)

    code = main(["db", "psql", "-c", "SELECT 1"])

    assert code == 0
    assert seen["argv"][1:] == [
        "postgresql://u@db.example:6432/np?sslmode=require&application_name=np+psql",
        "-c",
        "SELECT 1",
    ]
    assert (seen["password"], seen["service"], seen["mode"]) == (
        "s3cret",
        "[neopulse-psql]\nsslpassword=k3y+x\n",
        0o600,
    )


def test_db_psql_connects_with_the_password_given_in_the_url_query(empty_url, monkeypatch, capfd):
    url, password = _secrets_in_query(empty_url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGSERVICE", raising=False)

    code = main(["db", "psql", "-c", "SELECT current_setting('application_name') AS app"])

    assert (code, password != "") == (0, True)
    assert "np+psql" in capfd.readouterr().out  # as libpq reads it: a "+" is not a space


def test_db_status_finds_the_database_url_in_the_secrets_dir_as_run_does(empty_url, home, monkeypatch, capsys):
    secrets = home / "secrets"
    secrets.mkdir()
    (secrets / "NEOPULSE_DATABASE_URL").write_text(empty_url)  # a compose secret, not the environment
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", str(secrets))

    code = main(["db", "status", "--data-dir", str(home / "data")])

    assert code == 1  # the real database's migrations are pending
    assert capsys.readouterr().out.startswith(f"127.0.0.1:{urlsplit(empty_url).port}/{empty_url.rsplit('/', 1)[1]}")
    assert not (home / "data").exists()  # no embedded cluster made on the side


def test_db_migrate_takes_the_database_url_from_the_config_file(empty_url, home, monkeypatch):
    config = home / "neopulse.toml"
    config.write_text(f'database_url = "{empty_url}"\ndata_dir = "{home / "data"}"\n')
    monkeypatch.delenv("DATABASE_URL")

    code = main(["db", "migrate", "--config", str(config)])

    assert code == 0
    assert asyncio.run(_applied(empty_url)) >= 7
    assert not (home / "data").exists()


async def _applied(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM schema_migrations"))
    finally:
        await conn.close()
