"""The embedded server under review: a data dir left owned by root, a port another process holds."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
import subprocess
import time

import asyncpg
import pytest

from shared.db.embedded import EmbeddedPostgres
from shared.errors import ConfigError


@pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as the embedded_postgres user only when root")
async def test_a_data_dir_left_owned_by_root_starts_cleanly_when_run_as_root(home):
    async with EmbeddedPostgres(home) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept AS SELECT 7 AS n")
        await conn.close()
    # A restore or `cp -r` done as root leaves every file of the cluster owned by root.
    for path in [home, *home.rglob("*")]:
        os.lchown(path, 0, 0)

    async with EmbeddedPostgres(home) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            kept = await conn.fetchval("SELECT n FROM kept")
        finally:
            await conn.close()

    assert kept == 7


async def test_a_configured_port_another_process_holds_fails_at_once_naming_the_port(home):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(ConfigError) as err:
            await asyncio.to_thread(EmbeddedPostgres(home, port=port).start)
        took = time.monotonic() - began

    assert f"127.0.0.1:{port}" in str(err.value) and "in use" in str(err.value)
    assert took < 10.0


@pytest.mark.skipif(os.geteuid() != 0, reason="opens folders for the embedded_postgres user only when root")
async def test_starting_as_root_opens_the_folders_above_the_data_dir_only_for_traversal(home, caplog):
    private = home / "home_of_trader"  # like /root or /home/trader: 0700, with secrets below it
    passable = private / "neopulse"
    (passable / "config").mkdir(parents=True)
    private.chmod(0o700)
    passable.chmod(0o711)  # others may already pass: left as it is
    (passable / "config" / "live.toml").write_text('[kotak]\nmpin = "123456"\n')

    with caplog.at_level(logging.WARNING, logger="shared.db.embedded"):
        async with EmbeddedPostgres(passable / ".neopulse") as dsn:
            conn = await asyncpg.connect(dsn)
            answer = await conn.fetchval("SELECT 42")
            await conn.close()
    lists = await asyncio.to_thread(subprocess.run, ["su", "-s", "/bin/sh", "embedded_postgres", "-c", f"ls {private}"],
                                    capture_output=True)

    assert answer == 42
    assert stat.S_IMODE(passable.stat().st_mode) == 0o711
    if shutil.which("setfacl"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    else:
        assert stat.S_IMODE(private.stat().st_mode) == 0o701  # execute for others, never read
    assert lists.returncode != 0  # the postgres user cannot list the home it passes through
    assert any(str(private) in entry for r in caplog.records for entry in getattr(r, "opened", []))
