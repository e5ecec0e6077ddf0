"""Daily partitions of market_ticks (market_ticks_YYYY_MM_DD, one IST day each): create ahead, on demand, drop old.

Talks to PostgreSQL over one asyncpg connection or pool; safe to call from several processes at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TypeAlias

import asyncpg

from shared.clock import IST

log = logging.getLogger(__name__)

PARENT = "market_ticks"
_NAME = re.compile(r"^market_ticks_(\d{4})_(\d{2})_(\d{2})$")
_LOCK_KEY = 0x4E50_5449_434B  # serialises DDL on market_ticks across processes
DDL_LOCK_TIMEOUT_MS = 500  # how long partition DDL may hold up writers to market_ticks while it waits for a lock

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


def partition_name(day: date) -> str:
    return f"{PARENT}_{day:%Y_%m_%d}"


def day_start(day: date) -> datetime:
    """Midnight IST of `day` (the partition's lower bound, inclusive)."""
    return datetime(day.year, day.month, day.day, tzinfo=IST)


async def existing_days(db: Executor) -> set[date]:
    """Days that have a partition now."""
    rows = await db.fetch("""
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = $1""", PARENT)
    days = set()
    for row in rows:
        match = _NAME.match(row["relname"])
        if match:
            days.add(date(*(int(g) for g in match.groups())))
    return days


async def ensure_days(db: Executor, days: set[date] | list[date],
                      lock_timeout_ms: int = DDL_LOCK_TIMEOUT_MS) -> list[date]:
    """Create the partitions for `days` that are missing; returns the days created.

    CREATE ... PARTITION OF locks market_ticks itself: behind an open reader (psql, pg_dump) it would wait for good
    and every tick COPY would queue behind it. It gives up after `lock_timeout_ms`, logs who holds the table and
    raises LockNotAvailableError: the caller tries again later (partitions are made days ahead).
    """
    wanted = sorted(set(days))
    if not wanted:
        return []
    created: list[date] = []
    async with _locked(db) as conn:
        missing = [d for d in wanted if d not in await existing_days(conn)]
        for day in missing:
            lower, upper = day_start(day).isoformat(), day_start(day + timedelta(days=1)).isoformat()
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                    await conn.execute(f'CREATE TABLE IF NOT EXISTS "{partition_name(day)}" PARTITION OF {PARENT} '
                                       f"FOR VALUES FROM ('{lower}') TO ('{upper}')")
            except asyncpg.LockNotAvailableError:
                log.warning("tick partitions not created: market_ticks is in use; retried later",
                            extra={"days": [d.isoformat() for d in missing if d not in created],
                                   "lock_timeout_ms": lock_timeout_ms, "holders": await lock_holders(conn, [PARENT])})
                raise
            created.append(day)
    return created


async def lock_holders(conn: asyncpg.Connection, tables: Sequence[str]) -> list[dict[str, object]]:
    """Who holds a lock on any of `tables` (pid, user, application, since when): what an operator needs to act.
    Names that are not tables of this database are ignored (migrate.py passes every word of a migration)."""
    rows = await conn.fetch("""
        SELECT a.pid, a.usename, a.application_name, a.client_addr::text AS client, a.state,
               a.xact_start::text AS since
        FROM pg_stat_activity a
        WHERE a.pid <> pg_backend_pid() AND a.pid IN (
            SELECT l.pid FROM pg_locks l
            WHERE l.granted AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t))
        ORDER BY a.xact_start NULLS LAST, a.pid""", list(tables))
    return [dict(r) for r in rows]


async def ensure_ahead(db: Executor, today: date, days_ahead: int) -> list[date]:
    """Partitions for today and the next `days_ahead` days."""
    return await ensure_days(db, [today + timedelta(days=i) for i in range(days_ahead + 1)])


async def drop_before(db: Executor, cutoff: date, lock_timeout_ms: int = DDL_LOCK_TIMEOUT_MS) -> list[date]:
    """Drop every partition whose day is before `cutoff` (retention); returns the days dropped.

    A partition someone is reading (a long report, pg_dump) is skipped and stays for a later call: DROP also locks
    market_ticks itself, so waiting for the reader would stall every insert behind it.
    """
    dropped = []
    async with _locked(db) as conn:
        # Never today's or a later day, whatever the caller's clock says (a simulator's, a bad NTP): the
        # server's clock bounds the cutoff too, so a cutoff in the future cannot delete the day's ticks.
        server_today = await conn.fetchval("SELECT (now() AT TIME ZONE 'Asia/Kolkata')::date")
        cutoff = min(cutoff, server_today)
        for day in sorted(d for d in await existing_days(conn) if d < cutoff):
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                    await conn.execute(f'DROP TABLE IF EXISTS "{partition_name(day)}"')
            except asyncpg.LockNotAvailableError:
                continue
            dropped.append(day)
    return dropped


class _locked:
    """Acquire a connection (from a pool if given) and hold the DDL advisory lock on it."""

    def __init__(self, db: Executor) -> None:
        self.db = db
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self.conn = await self.db.acquire() if isinstance(self.db, asyncpg.Pool) else self.db
        try:
            await self.conn.execute("SET lock_timeout = 0")  # the lock waits for the DDL under way (RESET on release)
            await self.conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        except BaseException:
            # A wait given up (the caller's timeout cancels it) must not keep the pool's connection: after
            # max_size of them every query on the pool would hang. Its reset on release also drops the lock,
            # should the server have granted it just as the wait was cancelled.
            if isinstance(self.db, asyncpg.Pool):
                await self.db.release(self.conn)
            raise
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        try:
            if not self.conn.is_closed():
                await self.conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
                await self.conn.execute("RESET lock_timeout")
        finally:
            if isinstance(self.db, asyncpg.Pool):
                await self.db.release(self.conn)
