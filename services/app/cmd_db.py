"""`neopulse db migrate` and `neopulse db status`: apply or list schema migrations.

Uses DATABASE_URL / NEOPULSE_DATABASE_URL, or the embedded server in --data-dir (default .neopulse).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from shared.db import migrate
from shared.db.database import connect_pool, where_of
from shared.db.embedded import EmbeddedPostgres
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


def database_url() -> str | None:
    return os.environ.get("NEOPULSE_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def _main(fn: Any, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_with_pool(fn, args))
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
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
        pending += m.applied_at is None
        print(f"  {m.version:04d}_{m.name}  {state}")
    return 1 if pending else 0
