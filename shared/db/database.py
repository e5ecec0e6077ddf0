"""Opening the database: DATABASE_URL or the embedded server, an asyncpg pool, migrations and tick partitions.

Talks to PostgreSQL (asyncpg) and shared/db/embedded.py; bad URLs become one-line ConfigErrors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from shared.clock import Clock, RealClock, day_of
from shared.db import migrate, partitions
from shared.db.config import DatabaseSettings
from shared.db.embedded import EmbeddedPostgres
from shared.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "neopulse"
UNPARSED_URL = "(DATABASE_URL not of the form postgresql://user:password@host:port/database)"
_SCHEMES = ("postgresql", "postgres")  # asyncpg's (and libpq's) URI schemes


@dataclass
class Database:
    """An open database: `pool` for queries; close() closes it and stops an embedded server we started."""

    pool: asyncpg.Pool
    where: str  # host:port/db, never the password
    embedded: EmbeddedPostgres | None = None

    def describe(self) -> str:
        if self.embedded is not None:
            return f"embedded PostgreSQL {self.where} (data in {self.embedded.pgdata})"
        return f"PostgreSQL {self.where}"

    async def close(self) -> None:
        try:
            async with asyncio.timeout(10.0):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def open_database(database_url: str | None, data_dir: Path, settings: DatabaseSettings | None = None,
                        clock: Clock | None = None) -> Database:
    """Connect (embedded in data_dir/pgdata when database_url is None), migrate, create tick partitions ahead."""
    settings = settings or DatabaseSettings()
    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(Path(data_dir))
        admin = await embedded.start_async()  # a cancel meanwhile stops what it started, then is re-raised
        try:
            database_url = await ensure_database(admin, EMBEDDED_DB_NAME)
        except BaseException:
            await asyncio.to_thread(embedded.stop)
            raise
    try:
        pool = await connect_pool(database_url, settings)
        db = Database(pool, where_of(database_url), embedded)
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    try:
        await prepare(pool, settings, clock or RealClock())
    except asyncpg.PostgresError as exc:
        await db.close()
        raise ConfigError(schema_error(exc, db.where)) from None
    except BaseException:
        await db.close()
        raise
    log.info("database ready", extra={"database": db.describe()})
    return db


async def connect_pool(database_url: str, settings: DatabaseSettings | None = None) -> asyncpg.Pool:
    """An asyncpg pool, or ConfigError naming host/port/db and what to check."""
    settings = settings or DatabaseSettings()
    check_url(database_url)
    where = where_of(database_url)
    try:
        pool = await asyncpg.create_pool(database_url, min_size=min(settings.pool_min_size, settings.pool_max_size),
                                         max_size=settings.pool_max_size, timeout=settings.connect_timeout_s,
                                         server_settings={"lock_timeout": str(settings.lock_timeout_ms)})
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, OverflowError) as exc:
        raise ConfigError(f"cannot connect to PostgreSQL at {where}: {_reason(exc)}; "
                          "check DATABASE_URL (NEOPULSE_DATABASE_URL) or unset it to use the embedded server") from None
    assert pool is not None
    return pool


async def prepare(pool: asyncpg.Pool, settings: DatabaseSettings, clock: Clock) -> None:
    """Migrations, then today's and the next days' tick partitions.

    A reader holding market_ticks (psql, pg_dump) does not hold up start-up: ensure_days has logged who it is, and
    the tick writer makes the partitions on its next housekeeping pass, or on the fly for the ticks it writes.
    """
    async with pool.acquire() as conn:
        await migrate.migrate(conn, lock_timeout_ms=ddl_lock_timeout_ms(settings))
    with contextlib.suppress(asyncpg.LockNotAvailableError):
        await partitions.ensure_ahead(pool, day_of(clock.now_ns()), settings.partitions_ahead_days)


def ddl_lock_timeout_ms(settings: DatabaseSettings) -> int:
    """A migration's wait for a table lock, at most half of what the writers queued behind it wait for theirs
    (lock_timeout_ms): none of them fails while it waits."""
    if settings.lock_timeout_ms == 0:  # the writers never give up
        return migrate.DDL_LOCK_TIMEOUT_MS
    return max(1, min(migrate.DDL_LOCK_TIMEOUT_MS, settings.lock_timeout_ms // 2))


def schema_error(exc: asyncpg.PostgresError, where: str) -> str:
    """One line for a failure while migrating or creating partitions: which migration, why, what to do."""
    failed = migrate.failed_migration(exc)
    if failed:
        return (f"migration {failed} failed on PostgreSQL at {where}: {_reason(exc)}; it was rolled back and the "
                "schema is as the previous migration left it; fix that migration (or the data it trips on) and retry")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"cannot prepare the schema on PostgreSQL at {where}: {_reason(exc)}; the user needs CREATE rights"
    return f"cannot prepare the schema on PostgreSQL at {where}: {_reason(exc)}"


def where_of(database_url: str) -> str:
    """host:port/db of a postgres(ql):// URL, for messages; of anything else, nothing (UNPARSED_URL).

    Never the user's password, even one with an unencoded "/" or "@": everything up to the last "@" is taken for
    credentials and never shown. Text of another form (a libpq "host=... password=..." string, a URL that lost its
    scheme or a slash) may hold the password anywhere, so none of it is shown.
    """
    rest = _after_scheme(database_url)
    if rest is None:
        return UNPARSED_URL
    credentials, at, rest = rest.rpartition("@")
    if at and any(c in credentials for c in "?#"):  # an "@" in the query (password=...@...), or a mangled URL
        return UNPARSED_URL
    try:
        parts = urlsplit(f"postgresql://{rest}")
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return UNPARSED_URL
    return f"{host}:{port}/{unquote(parts.path.lstrip('/'))}"


def check_url(database_url: str) -> None:
    """ConfigError unless `database_url` is a postgres(ql):// URL, the one form asyncpg takes; the message never
    shows the value (it may hold the password)."""
    if _after_scheme(database_url) is None:
        raise ConfigError("DATABASE_URL (NEOPULSE_DATABASE_URL, or database_url in the config file) is not a "
                          "postgresql://user:password@host:port/database URL (its value is not shown: it may hold "
                          "the password); write it in that form (a keyword string such as 'host=... dbname=...' "
                          "is not accepted), or unset it to use the embedded server")


def _after_scheme(database_url: str) -> str | None:
    """What follows postgresql:// (or postgres://) in `database_url`; None when it does not start so."""
    scheme, sep, rest = database_url.lstrip().partition("://")
    return rest if sep and scheme.lower() in _SCHEMES else None


async def ensure_database(admin_dsn: str, name: str) -> str:
    """CREATE DATABASE `name` on the embedded server when missing; returns its DSN. A refused password is a
    ConfigError: postgres.password is not the one this cluster was made with."""
    try:
        conn = await asyncpg.connect(admin_dsn)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        raise ConfigError(f"the embedded PostgreSQL at {where_of(admin_dsn)} refused the password in postgres.password "
                          "(in the data dir, beside pgdata): it is not the one this database was made with; restore "
                          "postgres.password from the same backup as pgdata") from None
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another process created it first (a concurrent CREATE reports the catalog's unique key)
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return "authentication failed (user or password)"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "the database does not exist"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running and listening there?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ValueError):
        return "the URL is malformed"
    if isinstance(exc, OverflowError):  # the socket's own check: asyncpg passes the URL's port on unchecked
        return "the URL's port is out of range (1-65535)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
