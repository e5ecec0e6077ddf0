"""The embedded server under review: a data dir left owned by root, a port another process holds."""

from __future__ import annotations

import asyncio
import os
import socket
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
