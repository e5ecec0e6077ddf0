"""Shared fixtures: one embedded PostgreSQL per test session, a fresh migrated database per test, a pool on it.

pg_server (session, sync) -> admin DSN; database (async) -> DSN of a new database; db_pool -> asyncpg pool on it;
procs -> tests.grpc.procs.Procs, whose processes are all stopped when the test ends; embedded_home -> a data dir for
the embedded PostgreSQL of a process a test starts, cleaned up after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import migrate
from shared.db.embedded import EmbeddedPostgres, _alive, _read_pidfile
from tests.grpc import procs as neopulse_procs
from tests.grpc.procs import Procs

TEMPLATE = "neopulse_test_template"
# Test data is throwaway: skip the disk flushes that make every commit wait.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _with_db(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + f"/{name}"


async def _make_template(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(_with_db(admin_dsn, TEMPLATE))
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One embedded server for the whole session; yields its superuser DSN (database `postgres`)."""
    # Not tmp_path_factory: a concurrent pytest session prunes old basetemp dirs, and would delete a live cluster.
    home = Path(tempfile.mkdtemp(prefix="neopulse-test-pg-"))
    server = EmbeddedPostgres(home, options=FAST)
    try:
        dsn = server.start()
        asyncio.run(_make_template(dsn))
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    """A new database with every migration applied (copied from a migrated template); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        yield _with_db(pg_server, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), 5.0)
        except TimeoutError:
            pool.terminate()


@pytest.fixture
def exchange_holidays() -> Iterator[Callable[..., None]]:
    """Set this process's exchange holidays for one test (shared.clock.set_holidays); cleared after it."""
    from shared import clock

    yield lambda *days: clock.set_holidays(days)
    clock.set_holidays(())


@pytest.fixture
def special_sessions() -> Iterator[Callable[..., None]]:
    """Set this process's special sessions for one test from `[app] special_sessions` entries; cleared after it."""
    from services.app.config import AppSettings
    from shared import clock

    yield lambda *entries: clock.set_special_sessions(AppSettings(special_sessions=list(entries)).special_session_map())
    clock.set_special_sessions({})


@pytest.fixture
def market_sessions() -> Iterator[Callable[..., None]]:
    """Set this process's regular sessions for one test as `[risk] sessions` does (shared.clock.set_sessions), e.g.
    market_sessions(mcx_fo="09:00-17:00"); the built-in ones again after it."""
    from shared import clock

    yield lambda **hours: clock.set_sessions({segment: clock.parse_session(text) for segment, text in hours.items()})
    clock.set_sessions({})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    neopulse_procs.STARTED.clear()  # those of the tests before (reported), before this one's fixtures start any


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that started neopulse processes reports the end of each one's output: its logs are in
    tmp_path, which CI does not keep."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in neopulse_procs.STARTED:
            report.sections.append((f"neopulse {' '.join(proc.args[:2])} (last lines)", proc.tail()))


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Start a test's processes through this: each is stopped when the test ends, whatever happened in it."""
    started = Procs()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A data dir for the embedded PostgreSQL of a `neopulse` process the test starts (private: not under basetemp,
    which concurrent sessions prune). A server still running in it afterwards is stopped, and the dir removed."""
    home = Path(tempfile.mkdtemp(prefix="neopulse-test-home-"))
    try:
        yield home
    finally:
        pid = _read_pidfile(home / "pgdata")[0]
        if pid and _alive(pid):
            with contextlib.suppress(subprocess.SubprocessError):
                EmbeddedPostgres(home)._run("pg_ctl", "-D", str(home / "pgdata"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)
