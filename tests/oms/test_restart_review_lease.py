"""The ledger lease's view of who holds the ledger (services/oms/lease.py), on a real PostgreSQL: advisory locks are
per database, so another NeoPulse database's OMS on the same server is not this ledger's holder; and a holder gone
by the time it is looked up is no proof that another OMS took the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.oms.lease import LEASE_KEY, LedgerLease
from tests.conftest import TEMPLATE, _with_db
from tests.helpers import eventually
from tests.oms.test_lease import HalfOpen


@pytest.fixture
async def other_database_lease(pg_server: str) -> AsyncIterator[LedgerLease]:
    """The lease of an OMS on another NeoPulse database of the same server, taken."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    pool = await asyncpg.create_pool(_with_db(pg_server, name), min_size=1, max_size=2)
    lease = LedgerLease(pool)
    await lease.take()
    yield lease
    await lease.release()
    await pool.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def keep_until_taken_again_or_lost(lease: LedgerLease) -> list[str]:
    """Run the lease's keep() with its connection gone silent (its server session, and lock, live on) until it holds
    the lock on a new connection or is told the ledger was lost; returns what it was told."""
    stale = lease._conn
    assert stale is not None
    lease._conn = HalfOpen(stale)  # type: ignore[assignment]
    lost: list[str] = []

    async def told(holder: str) -> None:
        lost.append(holder)

    keep = asyncio.create_task(lease.keep(told))
    try:
        await eventually(lambda: bool(lost) or (isinstance(lease._conn, type(stale)) and lease._conn is not stale))
    finally:
        keep.cancel()
        await asyncio.gather(keep, return_exceptions=True)
        await lease.release()
        stale.terminate()
    return lost


async def test_an_oms_on_another_database_of_the_server_is_not_taken_for_this_ledgers_holder(
        db_pool, other_database_lease):
    ours = LedgerLease(db_pool, check_s=0.02)
    ours.answer_s = 0.1
    await ours.take()  # both hold the key: advisory locks are per database

    assert await keep_until_taken_again_or_lost(ours) == []


async def test_a_holder_gone_before_it_is_named_is_not_taken_for_another_oms(db_pool):
    ours = LedgerLease(db_pool, check_s=0.02)
    ours.answer_s = 0.1
    await ours.take()
    await db_pool.fetchval("SELECT pg_terminate_backend($1)", ours._pid)  # its own stale session ends on the server
    passer_by = await db_pool.acquire()  # a session that holds the lock for a moment, then lets go
    await passer_by.fetchval("SELECT pg_advisory_lock($1)", LEASE_KEY)
    take_again = ours._try

    async def refused_while_the_passer_by_holds_it() -> bool:
        taken = await take_again()
        if not taken:  # it lets go before its name is asked for
            await passer_by.fetchval("SELECT pg_advisory_unlock($1)", LEASE_KEY)
        return taken

    ours._try = refused_while_the_passer_by_holds_it  # type: ignore[method-assign]
    try:
        lost = await keep_until_taken_again_or_lost(ours)
    finally:
        await db_pool.release(passer_by)

    assert lost == []
