"""A database password with the characters a URL reserves reaches NeoPulse from docker-compose.yml as it is: NeoPulse
connects with the environment compose gives its OMS, pointed at a real PostgreSQL (the test server, a role of its
own with that password) instead of the compose network's."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from shared.db.database import connect_pool
from tests.grpc.test_deploy import COMPOSE, PASSWORD, run


def oms_environment() -> dict[str, str]:
    """The split OMS's environment as compose renders it with POSTGRES_PASSWORD = PASSWORD."""
    result = run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]["oms"]["environment"]


@pytest.fixture
async def role(pg_server: str, database: str):
    """A login role with PASSWORD on the test server, allowed into `database`; dropped afterwards."""
    name = f"compose_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
        yield name
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


async def test_neopulse_connects_with_a_password_a_url_would_break_as_compose_passes_it(database, role, monkeypatch):
    env = oms_environment()
    server = database.rpartition("@")[2]  # 127.0.0.1:port/database of the test server
    url = env["NEOPULSE_DATABASE_URL"].replace("neopulse@127.0.0.1:5432/neopulse", f"{role}@{server}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    pool = await connect_pool(url)
    try:
        user = await pool.fetchval("SELECT current_user")
    finally:
        await pool.close()

    assert user == role
