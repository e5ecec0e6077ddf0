"""`neopulse db migrate|status|psql`: apply or list schema migrations, or open psql on the database.

Uses DATABASE_URL / NEOPULSE_DATABASE_URL, or the embedded server in --data-dir (default .neopulse).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from shared.db import migrate
from shared.db.database import connect_pool, schema_error, where_of
from shared.db.embedded import POSTGRES_BIN_PATH, EmbeddedPostgres
from shared.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema: migrate, status")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    for name, helptext, handler in (("migrate", "apply pending migrations", _migrate),
                                    ("status", "list migrations and whether each is applied", _status)):
        q = db_sub.add_parser(name, help=helptext)
        q.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEOPULSE_DATA_DIR", ".neopulse")),
                       help="embedded PostgreSQL home when DATABASE_URL is not set (default .neopulse)")
        q.set_defaults(handler=lambda args, fn=handler: _main(fn, args))
    q = db_sub.add_parser("psql", help="psql on the database (more psql arguments after --)")
    q.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEOPULSE_DATA_DIR", ".neopulse")))
    q.add_argument("-c", "--command", help="run one SQL command and exit")
    q.add_argument("psql_args", nargs=argparse.REMAINDER)
    q.set_defaults(handler=_psql)


def database_url() -> str | None:
    return os.environ.get("NEOPULSE_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def _main(fn: Any, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_with_pool(fn, args))
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    except asyncpg.PostgresError as exc:  # a migration that fails: one line naming it, not a traceback
        url = database_url()
        where = where_of(url) if url else f"the embedded server in {args.data_dir}"
        print(f"neopulse: {schema_error(exc, where)}", file=sys.stderr)
        return 2


async def _with_pool(fn: Any, args: argparse.Namespace) -> int:
    url = database_url()
    server = None
    if url is None:
        from shared.db.database import EMBEDDED_DB_NAME, ensure_database

        server = EmbeddedPostgres(args.data_dir)
        admin = await asyncio.to_thread(server.start)
        url = await ensure_database(admin, EMBEDDED_DB_NAME)
    try:
        pool = await connect_pool(url)
        try:
            async with pool.acquire() as conn:
                return await fn(conn, where_of(url))
        finally:
            await pool.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _migrate(conn: Any, where: str) -> int:
    applied = await migrate.migrate(conn)
    print(f"{where}: applied {len(applied)} migration(s)" + (f": {', '.join(f'{v:04d}' for v in applied)}"
                                                              if applied else " (up to date)"))
    return 0


async def _status(conn: Any, where: str) -> int:
    print(where)
    pending = 0
    for m in await migrate.status(conn):
        state = m.applied_at.isoformat(timespec="seconds") if m.applied_at else "pending"
        if not m.known:
            state += "  (not in this code: the database was migrated by a newer NeoPulse)"
        pending += m.applied_at is None or not m.known
        print(f"  {m.version:04d}_{m.name}  {state}")
    return 1 if pending else 0


def _psql(args: argparse.Namespace) -> int:
    """Run the bundled psql; the password goes in PGPASSWORD, never on the command line."""
    url = database_url()
    server = None
    try:
        if url is None:
            from shared.db.database import EMBEDDED_DB_NAME, ensure_database

            server = EmbeddedPostgres(args.data_dir)
            url = asyncio.run(ensure_database(server.start(), EMBEDDED_DB_NAME))
        parts = urlsplit(url)
        netloc = f"{parts.username or ''}@{parts.hostname}:{parts.port or 5432}"
        env = {**os.environ, "PGPASSWORD": unquote(parts.password or "")}
        dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        extra = [a for a in args.psql_args if a != "--"] + (["-c", args.command] if args.command else [])
        return subprocess.call([str(POSTGRES_BIN_PATH / "psql"), dsn, *extra], env=env)
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
