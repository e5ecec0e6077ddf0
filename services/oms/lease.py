"""One OMS per order ledger: a PostgreSQL advisory lock, held on a connection of its own while the OMS runs.

Two OMS processes on one ledger (a second `neopulse run` on the same data dir, a compose file starting the monolith
beside split mode, a restart while the old process still runs) would each place orders, reconcile the other's as
unknown and book fills into the same rows. The second refuses to start, naming the holder. The server drops a
dead session's locks, so a crashed OMS does not hold the ledger; a connection that dies under a running OMS (the
database restarted) is replaced and the lock taken again, and if another OMS took it meanwhile this one is told
to stop placing orders.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from shared.errors import ConfigError

log = logging.getLogger(__name__)

LEASE_KEY = 0x6E656F70756C7365  # "neopulse" in ASCII, as the advisory lock's bigint key
WAIT_S = 10.0  # at start: a previous OMS still stopping (its stop drains placements) is waited for this long
CHECK_S = 5.0  # how often the lock's connection is checked while the OMS runs
ANSWER_S = 5.0  # a check not answered within this is a connection gone silent (the network broke, unheard of)
# Advisory locks are per database: a server holding other NeoPulse databases has their OMSs' locks on the same key.
_HOLDER_SQL = """
SELECT a.pid, a.application_name || ' (server pid ' || a.pid || ', connected since ' || a.backend_start::text || ')'
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
LIMIT 1"""


class LedgerLease:
    def __init__(self, pool: asyncpg.Pool, wait_s: float = WAIT_S, check_s: float = CHECK_S) -> None:
        self.pool = pool
        self.wait_s, self.check_s, self.answer_s = wait_s, check_s, ANSWER_S
        self.name = f"neopulse-oms {socket.gethostname()} pid {os.getpid()}"
        self._conn: asyncpg.Connection | None = None
        # Set by release(): keep() (still running while the monolith stops the OMS, before it cancels run()) must
        # not take the lock back once it was let go.
        self._released = False
        self._pid = 0  # the server pid of the lock's session: it may live on after its connection went silent

    async def take(self) -> None:
        """Take the ledger or raise ConfigError naming the OMS that holds it (after waiting up to wait_s)."""
        self._released = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while not await self._try():
            if loop.time() >= deadline:
                row = await self.pool.fetchrow(_HOLDER_SQL, LEASE_KEY)
                holder = row[1] if row else "a session that just ended"
                raise ConfigError(f"another OMS holds this database's order ledger: {holder}; two would place and "
                                  "book orders on one ledger. Stop it, or give this run its own database (--data-dir "
                                  "or DATABASE_URL)")
            await asyncio.sleep(0.5)
        log.info("order ledger lease taken", extra={"holder": self.name})

    async def _try(self) -> bool:
        # A connection of its own, with the pool's settings (asyncpg 0.32, pinned): held for the whole run, it must
        # not take one of the pool's, nor hold up the pool's close at the end.
        conn = await self.pool._get_new_connection()
        try:
            await conn.execute("SELECT set_config('application_name', $1, false)", self.name)  # named to a second OMS
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY) and not self._released:
                self._conn, self._pid = conn, conn.get_server_pid()
                return True
        except BaseException:
            conn.terminate()
            raise
        await conn.close()
        return False

    async def keep(self, lost: Callable[[str], Awaitable[None]]) -> None:
        """While the OMS runs: check the lock's connection; when it died, take the lock again on another one. When
        another OMS holds the ledger by then, `lost` is told who (once) and this returns; so it does once released.
        An error is logged and the check repeated: one escaping would end the OMS's run()."""
        while True:
            await asyncio.sleep(self.check_s)
            if self._released:
                return
            conn = self._conn  # release() may drop it while the check is on the wire
            if conn is not None:
                try:
                    await conn.fetchval("SELECT 1", timeout=self.answer_s)
                    continue
                except Exception as exc:
                    if self._released:
                        return
                    log.error("order ledger lease: its connection died; taking it again", extra={
                        "error": f"{type(exc).__name__}: {exc}"})
                    conn.terminate()
                    if self._conn is conn:
                        self._conn = None
            try:
                if await self._try():
                    log.warning("order ledger lease taken again")
                    continue
                if self._released:
                    return
                row = await self.pool.fetchrow(_HOLDER_SQL, LEASE_KEY)
                if row is None:
                    # Its holder's session ended between the two queries (this OMS's own stale one, most likely): no
                    # proof that another OMS has the ledger; the lock is taken at the next check.
                    log.warning("order ledger lease: its holder just let go; taking it at the next check")
                    continue
                if row[0] == self._pid and row[1].startswith(f"{self.name} ("):
                    # Its own session, alive on the server behind a connection gone silent: no other OMS can take
                    # the ledger while it lives, so this one goes on, ends it, and takes the lock at the next check.
                    log.warning("order ledger lease: held by this OMS's own stale session; ending it", extra={
                        "server_pid": self._pid})
                    await self.pool.fetchval("SELECT pg_terminate_backend($1)", self._pid)
                    continue
            except Exception as exc:
                log.warning("order ledger lease: the database is not answering yet", extra={
                    "error": f"{type(exc).__name__}: {exc}"})
                continue
            await lost(row[1])
            return

    async def release(self) -> None:
        self._released = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), 5.0)  # the session ends, and its lock with it
        except BaseException as exc:
            conn.terminate()  # so it does when the socket closes (a stop cut short too)
            if not isinstance(exc, Exception):
                raise
