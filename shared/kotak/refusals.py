"""Kotak logins refused since the last that worked, kept in the database every NeoPulse process opens (table
kotak_login_refusals, migration 0014), so the limit that keeps Kotak from locking the account outlives a restart.

Read and written by KotakSession (shared/kotak/session.py); listed and cleared by `neopulse db kotak-logins`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.kotak.config import KotakSettings

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0  # a database that does not answer in this long is left out: the process's own count still guards
# (each login reads first, a re-login's orders waiting behind it: 2 s for a connection, 2 s for the query at most)
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True)
class Refusals:
    count: int
    last_at: datetime | None = None
    last_reason: str = ""


def fingerprint(settings: KotakSettings) -> str | None:
    """A sha256 of what a login sends and where to; None without a TOTP seed (a one-time code). The seed's entropy
    is what keeps the MPIN from being searched back out of the hash; and a one-time code, taken by Kotak at the
    first login, cannot log in again after a restart, so no restart can send the MPIN again without the trader."""
    seed = settings.totp_secret.get_secret_value()
    if not seed:
        return None
    parts = ("neopulse-kotak-login/1", settings.base_url or settings.environment,
             settings.consumer_key.get_secret_value(), settings.mobile.get_secret_value(), settings.ucc,
             settings.mpin.get_secret_value(), seed)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class RefusalStore:
    """The count of one set of credentials (by fingerprint) in one database. A database that fails is logged and
    left out (None): a blip must not stop a re-login that renews the order feed, and the session's own count still
    stops it at the limit."""

    def __init__(self, pool: asyncpg.Pool, fingerprint: str) -> None:
        self.pool = pool
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"RefusalStore(fingerprint={self.fingerprint[:12]}...)"

    async def read(self) -> Refusals | None:
        try:
            async with self.pool.acquire(timeout=TIMEOUT_S) as conn:
                row = await conn.fetchrow("SELECT refusals, last_at, last_reason FROM kotak_login_refusals "
                                          "WHERE fingerprint = $1", self.fingerprint, timeout=TIMEOUT_S)
        except _DB_ERRORS as exc:
            _left_out("read", exc)
            return None
        return Refusals(row["refusals"], row["last_at"], row["last_reason"]) if row else Refusals(0)

    async def add(self, reason: str) -> int | None:
        """One more refusal (atomic across processes); the count now."""
        try:
            async with self.pool.acquire(timeout=TIMEOUT_S) as conn:
                return int(await conn.fetchval(
                    "INSERT INTO kotak_login_refusals (fingerprint, refusals, last_reason) VALUES ($1, 1, $2) "
                    "ON CONFLICT (fingerprint) DO UPDATE SET refusals = kotak_login_refusals.refusals + 1, "
                    "last_at = now(), last_reason = EXCLUDED.last_reason RETURNING refusals",
                    self.fingerprint, reason, timeout=TIMEOUT_S))
        except _DB_ERRORS as exc:
            _left_out("record", exc)
            return None

    async def clear(self) -> None:
        """A login worked: Kotak's count starts again."""
        try:
            async with self.pool.acquire(timeout=TIMEOUT_S) as conn:
                await conn.execute("DELETE FROM kotak_login_refusals WHERE fingerprint = $1", self.fingerprint,
                                   timeout=TIMEOUT_S)
        except _DB_ERRORS as exc:
            _left_out("clear", exc)


def store_for(pool: asyncpg.Pool | None, settings: KotakSettings) -> RefusalStore | None:
    """The store of these credentials in the database of `pool`; None without a database or a TOTP seed."""
    key = fingerprint(settings)
    return RefusalStore(pool, key) if pool is not None and key is not None else None


async def on_record(conn: asyncpg.Connection) -> list[tuple[str, Refusals]]:
    """(fingerprint, refusals) of every set of credentials Kotak refused since its last login that worked."""
    if not await conn.fetchval("SELECT to_regclass('kotak_login_refusals') IS NOT NULL"):
        return []  # a database not migrated to 0014 yet: nothing was ever recorded
    rows = await conn.fetch("SELECT fingerprint, refusals, last_at, last_reason FROM kotak_login_refusals "
                            "ORDER BY last_at")
    return [(r["fingerprint"], Refusals(r["refusals"], r["last_at"], r["last_reason"])) for r in rows]


async def clear_all(conn: asyncpg.Connection) -> int:
    """Forget every count (an operator's word that the credentials are right); how many were cleared."""
    if not await conn.fetchval("SELECT to_regclass('kotak_login_refusals') IS NOT NULL"):
        return 0
    return len(await conn.fetch("DELETE FROM kotak_login_refusals RETURNING fingerprint"))


def _left_out(what: str, exc: BaseException) -> None:
    log.warning(f"kotak login refusals: could not {what} the count in the database; this process's own count "
                "guards meanwhile", extra={"error": f"{type(exc).__name__}: {exc}"})
