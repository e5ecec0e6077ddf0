"""Versioned SQL migrations (shared/db/migrations/NNNN_name.sql), applied in order and recorded in schema_migrations.

Talks to PostgreSQL through one asyncpg connection; a session advisory lock serialises concurrent migrators.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from shared.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; two processes migrating the same database queue on it.
LOCK_KEY = 0x4E454F50554C5345  # "NEOPULSE"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None  # None = pending


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every NNNN_name.sql in version order; a duplicate version is a packaging error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ConfigError(f"migration file {path.name} must be named NNNN_lower_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"two migrations share version {version:04d}: {found[version].name}, {match.group(2)}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations, each in its own transaction; returns the versions applied now."""
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await _ensure_table(conn)
        applied = await _applied(conn)
        done = []
        for m in migrations:
            if m.version in applied:
                _check_unchanged(m, applied[m.version])
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                   m.version, m.name, m.checksum)
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def status(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Each known migration with its applied time (None while pending)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = await conn.fetch("SELECT version, applied_at FROM schema_migrations") if exists else []
    when = {r["version"]: r["applied_at"] for r in rows}
    return [MigrationStatus(m.version, m.name, when.get(m.version)) for m in discover(directory)]


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer     PRIMARY KEY,
            name        text        NOT NULL,
            checksum    text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )""")


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    return {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}


def _check_unchanged(m: Migration, checksum: str) -> None:
    if checksum != m.checksum:
        raise ConfigError(f"migration {m.version:04d}_{m.name}.sql changed after it was applied; "
                          "add a new migration instead of editing an applied one")
