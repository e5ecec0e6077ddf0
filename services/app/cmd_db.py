"""`neopulse db migrate|status|stamp|kotak-logins|psql`: apply or list schema migrations, record what the database
holds, list or clear the Kotak logins refused, or open psql on the database.

The database is found as `neopulse run` finds it (AppSettings: environment, secrets dir, --config TOML), else
the embedded server in --data-dir (default: the settings' data_dir, .neopulse).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from services.app.config import AppSettings
from shared import config as cfg
from shared.clock import IST
from shared.db import migrate, stamp
from shared.db.config import DatabaseSettings
from shared.db.database import connect_pool, ddl_lock_timeout_ms, schema_error, where_of
from shared.db.embedded import POSTGRES_BIN_PATH, EmbeddedPostgres
from shared.errors import ConfigError
from shared.kotak import refusals

STAMP_MIGRATION = "database_use"  # neopulse_meta (shared/db/stamp.py)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema: migrate, status")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    for name, helptext, handler in (("migrate", "apply pending migrations", _migrate),
                                    ("status", "list migrations and whether each is applied", _status),
                                    ("stamp", "record what the database holds (a run of another kind is refused)",
                                     _stamp),
                                    ("kotak-logins", "the Kotak logins refused since the last that worked: at [kotak] "
                                     "login_max_refusals no start or re-login sends those credentials again (Kotak "
                                     "locks the account after a few wrong MPINs); --reset clears the count",
                                     _kotak_logins)):
        q = db_sub.add_parser(name, help=helptext, description=helptext)
        _add_database_args(q)
        if name == "stamp":
            q.add_argument("trading", choices=("paper", "live"), help="the orders it holds")
            q.add_argument("market", choices=("simulated", "real"),
                           help="the market its ticks come from: simulated (synthetic, simulator) or real (Kotak)")
        if name == "kotak-logins":
            q.add_argument("--reset", action="store_true",
                           help="forget the refusals, after checking the MPIN and TOTP seed in the Neo app: the next "
                                "start logs in again (credentials changed in the config start from 0 anyway)")
        q.set_defaults(handler=lambda args, fn=handler: _main(fn, args))
    q = db_sub.add_parser("psql", help="psql on the database (more psql arguments after --)")
    _add_database_args(q)
    q.add_argument("-c", "--command", action="append", default=[],
                   help="run an SQL command and exit; repeat to run several, in order (as psql does)")
    q.add_argument("psql_args", nargs=argparse.REMAINDER)
    q.set_defaults(handler=_psql)


def _add_database_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG): its database_url and data_dir")
    q.add_argument("--data-dir", type=Path, help="embedded PostgreSQL home when no database URL is set "
                                                 "(default: data_dir of the settings, .neopulse)")


def database(args: argparse.Namespace) -> tuple[str | None, Path]:
    """The database URL as `neopulse run` resolves it (environment, secrets dir, config file), and the data dir."""
    settings = cfg.load(AppSettings, cfg.read_toml(args.config))
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return url or None, args.data_dir or settings.data_dir


def _main(fn: Any, args: argparse.Namespace) -> int:
    try:
        url, data_dir = database(args)
        settings = cfg.load(DatabaseSettings, cfg.read_toml(args.config))
        return asyncio.run(_with_pool(functools.partial(fn, args=args, settings=settings), url, data_dir, settings))
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    except asyncpg.PostgresError as exc:  # a migration that fails: one line naming it, not a traceback
        where = where_of(url) if url else f"the embedded server in {data_dir}"
        print(f"neopulse: {schema_error(exc, where)}", file=sys.stderr)
        return 2


async def _with_pool(fn: Any, url: str | None, data_dir: Path, settings: DatabaseSettings) -> int:
    server = None
    if url is None:
        from shared.db.database import EMBEDDED_DB_NAME, ensure_database

        server = EmbeddedPostgres(data_dir)
        admin = await server.start_async()  # a stop during the start leaves no server behind
        url = await ensure_database(admin, EMBEDDED_DB_NAME)
    try:
        pool = await connect_pool(url, settings)
        try:
            async with pool.acquire() as conn:
                return await fn(conn, where_of(url))
        finally:
            await pool.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _migrate(conn: Any, where: str, *, args: argparse.Namespace, settings: DatabaseSettings) -> int:
    # As a start migrates: its wait for a table lock stays under the running writers' lock_timeout_ms.
    applied = await migrate.migrate(conn, lock_timeout_ms=ddl_lock_timeout_ms(settings))
    print(f"{where}: applied {len(applied)} migration(s)" + (f": {', '.join(f'{v:04d}' for v in applied)}"
                                                              if applied else " (up to date)"))
    return 0


async def _status(conn: Any, where: str, *, args: argparse.Namespace, settings: DatabaseSettings) -> int:
    print(where)
    pending, stamped = 0, False
    for m in await migrate.status(conn):
        state = m.applied_at.isoformat(timespec="seconds") if m.applied_at else "pending"
        if not m.known:
            state += "  (not in this code: the database was migrated by a newer NeoPulse)"
        pending += m.applied_at is None or not m.known
        stamped |= m.name == STAMP_MIGRATION and m.applied_at is not None
        print(f"  {m.version:04d}_{m.name}  {state}")
    print(f"holds: {stamp.describe(await stamp.held(conn) if stamped else {})}")
    return 1 if pending else 0


async def _stamp(conn: Any, where: str, *, args: argparse.Namespace, settings: DatabaseSettings) -> int:
    """An operator's word on what a database holds: for one used before stamps, which a live or real-market run
    refuses until told (its paper fills would be taken for live positions)."""
    await migrate.migrate(conn, lock_timeout_ms=ddl_lock_timeout_ms(settings))
    before = await stamp.stamp(conn, args.trading, args.market)
    now = stamp.describe({stamp.TRADING: args.trading, stamp.MARKET: args.market})
    print(f"{where}: held {stamp.describe(before)}; now holds {now}")
    return 0


async def _kotak_logins(conn: Any, where: str, *, args: argparse.Namespace, settings: DatabaseSettings) -> int:
    """List the refused logins by credentials (a hash, never the credentials), or clear them all (--reset)."""
    if args.reset:
        print(f"{where}: cleared the refused Kotak logins of {await refusals.clear_all(conn)} set(s) of credentials; "
              "the next start logs in again")
        return 0
    print(where)
    on_record = await refusals.on_record(conn)
    for key, r in on_record:
        when = f"{r.last_at.astimezone(IST):%Y-%m-%d %H:%M:%S} IST" if r.last_at else "-"
        print(f"  credentials {key[:12]}: {r.count} refused, the last at {when}: {r.last_reason}")
    if not on_record:
        print("  no Kotak login refused since the last that worked")
    return 0


def _psql(args: argparse.Namespace) -> int:
    """Run the bundled psql; passwords go through the environment or a private file, never on the command line."""
    server = None
    try:
        url, data_dir = database(args)
        if url is None:
            from shared.db.database import EMBEDDED_DB_NAME, ensure_database

            server = EmbeddedPostgres(data_dir)
            url = asyncio.run(ensure_database(server.start(), EMBEDDED_DB_NAME))
        extra = [a for a in args.psql_args if a != "--"] + [arg for sql in args.command for arg in ("-c", sql)]
        with tempfile.TemporaryDirectory(prefix="neopulse-psql-") as private:  # mode 0700: only we can read it
            dsn, env = psql_connection(url, Path(private))
            return _run_in_foreground([str(POSTGRES_BIN_PATH / "psql"), dsn, *extra], {**os.environ, **env})
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()


def _run_in_foreground(argv: list[str], env: dict[str, str]) -> int:
    """Run an interactive child as a shell would: the terminal's Ctrl-C reaches the whole foreground group, and is
    the child's (psql cancels the query, or clears the line), not ours: left to Python it would raise
    KeyboardInterrupt here and kill psql, the session lost mid-way (a slow query on the live ledger)."""
    child = subprocess.Popen(argv, env=env)  # first: it keeps SIGINT at its default (an ignored one is inherited)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


# libpq connection parameters that are secrets: anyone can read a command line (ps), only the user its environment.
_SECRETS = ("password", "sslpassword", "oauth_client_secret")
_SERVICE = "neopulse-psql"


def psql_connection(url: str, private: Path) -> tuple[str, dict[str, str]]:
    """The DSN to give psql for `url`, without its secrets, and the environment that carries them: the password in
    PGPASSWORD; the others, which libpq reads from no environment variable, in a service file written in `private`
    (a directory only this user can read). Every other query parameter stays in the DSN as written."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if at else ""
    kept, secrets = [], {}
    for pair in filter(None, parts.query.split("&")):
        key, _, value = pair.partition("=")
        if unquote(key) in _SECRETS:
            secrets[unquote(key)] = unquote(value)  # not unquote_plus: libpq reads '+' as itself
        else:
            kept.append(pair)
    password = secrets.pop("password", password)  # libpq too lets the query's password win
    dsn = urlunsplit((parts.scheme, (userinfo.partition(":")[0] + "@" if at else "") + hosts, parts.path,
                      "&".join(kept), ""))
    env = {"PGPASSWORD": password} if password else {}
    if secrets:
        env |= _service_file(secrets, private, has_service=any(p.startswith("service=") for p in kept))
    return dsn, env


def _service_file(secrets: dict[str, str], private: Path, has_service: bool) -> dict[str, str]:
    names = ", ".join(sorted(secrets))
    if has_service or os.environ.get("PGSERVICE"):
        raise ConfigError(f"the database URL's {names} cannot be passed to psql safely together with a service "
                          "(service= or PGSERVICE): put it in that service's entry in the service file instead")
    if any("\n" in v or "\r" in v for v in secrets.values()):
        raise ConfigError(f"the database URL's {names} contains a line break, which psql cannot be given safely")
    path = private / "pg_service.conf"
    path.touch(mode=0o600)
    path.write_text(f"[{_SERVICE}]\n" + "".join(f"{k}={v}\n" for k, v in secrets.items()))
    return {"PGSERVICEFILE": str(path), "PGSERVICE": _SERVICE}
