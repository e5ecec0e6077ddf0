"""One OMS per order ledger (services/oms/lease.py), on a real PostgreSQL: a second OMS refuses to start naming the
first; the ledger is free again once the first stops or its process dies; an OMS whose lock connection died while
another took the ledger places nothing more."""

from __future__ import annotations

import asyncio
import sys

import pytest

from services.oms.charges import ChargeModel
from services.oms.lease import LEASE_KEY, LedgerLease
from services.oms.ledger_pg import PgLedger
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.contracts import trading_pb2 as t
from shared.errors import ConfigError
from tests.helpers import eventually
from tests.oms.conftest import accepted
from tests.oms.helpers import order


async def test_a_second_oms_on_the_same_ledger_refuses_to_start_naming_the_first(db_pool):
    first = LedgerLease(db_pool)
    await first.take()
    try:
        with pytest.raises(ConfigError, match=r"another OMS holds this database's order ledger: neopulse-oms .* pid"):
            await LedgerLease(db_pool, wait_s=0.2).take()
    finally:
        await first.release()

    second = LedgerLease(db_pool, wait_s=0.2)
    await second.take()  # free once the first let go
    await second.release()


async def test_the_ledger_of_an_oms_whose_process_died_is_free_for_the_next(database, db_pool):
    """The server drops a dead session's locks: a crashed OMS does not keep the next one from starting."""
    code = ("import asyncio, asyncpg, sys\n"
            "async def main():\n"
            f"    conn = await asyncpg.connect({database!r})\n"
            f"    await conn.fetchval('SELECT pg_advisory_lock({LEASE_KEY})')\n"
            "    print('held', flush=True)\n"
            "    await asyncio.sleep(60)\n"
            "asyncio.run(main())\n")
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
        with pytest.raises(ConfigError):
            await LedgerLease(db_pool, wait_s=0.2).take()
        holder.kill()
        await holder.wait()
        lease = LedgerLease(db_pool, wait_s=5.0)
        await lease.take()
        await lease.release()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_an_oms_whose_lock_connection_died_while_another_took_the_ledger_places_nothing_more(start_oms,
                                                                                                   db_pool):
    oms = await start_oms(ledger=PgLedger(db_pool))
    lease = oms.module.lease
    assert lease is not None
    lease.check_s = 0.05
    other = LedgerLease(db_pool, wait_s=5.0)
    # The first OMS tries to take the lock again only once the other has it: otherwise its check (every 50 ms from
    # the first one, up to 5 s after start) could take it back in a gap of the other's tries (every 0.5 s), and the
    # other never got it (seen on a loaded CI machine).
    other_has_it, take_again = asyncio.Event(), lease._try

    async def after_the_other() -> bool:
        await other_has_it.wait()
        return await take_again()

    lease._try = after_the_other  # type: ignore[method-assign]
    other_took = asyncio.create_task(other.take())  # waits for the first to let go
    pid = lease._conn.get_server_pid()
    await db_pool.execute("SELECT pg_terminate_backend($1)", pid)  # the database dropped that session
    await other_took
    other_has_it.set()
    try:
        await eventually(lambda: oms.module.engine.ledger_taken != "")
        await oms.module.engine.accept_many([accepted(order(client_order_id="after-taken"))])

        row = await PgLedger(db_pool).get("after-taken")
        assert row is not None and (row.status, row.reason_code) == (t.ORDER_STATUS_REJECTED, "NOT_SENT")
        assert "another OMS holds the order ledger" in row.reason and not oms.broker.book
        assert any(n.title == "Order ledger taken by another OMS" for n in oms.notifications)
    finally:
        await other.release()


async def test_an_oms_whose_lock_connection_died_takes_the_ledger_again_when_no_one_else_did(start_oms, db_pool):
    oms = await start_oms(ledger=PgLedger(db_pool))
    lease = oms.module.lease
    assert lease is not None and lease._conn is not None
    lease.check_s = 0.05
    old = lease._conn.get_server_pid()

    await db_pool.execute("SELECT pg_terminate_backend($1)", old)
    await eventually(lambda: lease._conn is not None and lease._conn.get_server_pid() != old)

    assert oms.module.engine.ledger_taken == ""
    holders = await db_pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    assert holders == 1


async def test_a_memory_ledger_takes_no_lease(start_oms):
    oms = await start_oms()
    assert oms.module.lease is None



async def advisory_locks(db_pool) -> int:
    return await db_pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")


async def test_an_oms_stopped_while_its_run_goes_on_does_not_take_the_ledger_again(start_oms, db_pool):
    """The monolith stops a module before it cancels its run(): the lease's keep() must not take back the lock
    that stop() released (the next OMS on this ledger would then refuse to start)."""
    oms = await start_oms(ledger=PgLedger(db_pool))
    lease = oms.module.lease
    assert lease is not None
    lease.check_s = 0.01

    await oms.module.stop()
    await asyncio.sleep(0.2)  # a few of keep()'s checks

    assert await advisory_locks(db_pool) == 0
    assert lease._conn is None


class CheckHeldUp:
    """The lease's connection, its liveness check held up until `go` is set (a slow round trip)."""

    def __init__(self, conn) -> None:
        self.conn, self.checking, self.go = conn, asyncio.Event(), asyncio.Event()

    async def fetchval(self, *args, **kwargs):
        self.checking.set()
        await self.go.wait()
        return await self.conn.fetchval(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.conn, name)


async def test_a_lease_released_while_its_check_is_on_the_wire_ends_its_keep_without_an_error(db_pool):
    """An error escaping keep() would end the OMS's run() (and the monolith's task group with it)."""
    lease = LedgerLease(db_pool, check_s=0.01)
    await lease.take()
    held_up = lease._conn = CheckHeldUp(lease._conn)
    lost: list[str] = []

    async def told(holder: str) -> None:
        lost.append(holder)

    keep = asyncio.create_task(lease.keep(told))
    await held_up.checking.wait()
    await lease.release()
    held_up.go.set()

    async with asyncio.timeout(2):
        assert await keep is None
    assert (lost, await advisory_locks(db_pool)) == ([], 0)


class PlacesForever(VirtualBroker):
    """A broker outside the process whose place_order call never comes back (a REST call hanging)."""

    in_process = False

    async def place_order(self, order):
        await asyncio.Event().wait()


async def test_an_oms_stop_cut_short_while_a_placement_hangs_still_releases_the_ledger(start_oms, db_pool):
    oms = await start_oms(ledger=PgLedger(db_pool), broker=PlacesForever(None, ChargeModel.default(), None))
    await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id="hangs")))
    await eventually(lambda: oms.module.engine._placing)

    stopping = asyncio.create_task(oms.module.stop())  # waits up to STOP_WAIT_S for the placement
    await asyncio.sleep(0.1)
    stopping.cancel()  # the process's stop budget ran out (monolith: _step)
    await asyncio.gather(stopping, return_exceptions=True)

    assert await advisory_locks(db_pool) == 0


class HalfOpen:
    """The lease's connection after the network between it and the server broke without either side hearing of
    it: the check never comes back, and closing it reaches no one (the server's session, and its lock, live on)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    async def fetchval(self, *args, **kwargs):
        async with asyncio.timeout(kwargs.get("timeout")):  # as asyncpg's `timeout` does
            await asyncio.Event().wait()

    def terminate(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self.conn, name)


async def test_a_lease_whose_connection_went_silent_takes_the_ledger_back_from_its_own_stale_session(db_pool):
    lease = LedgerLease(db_pool, check_s=0.02)
    lease.answer_s = 0.1
    await lease.take()
    stale = lease._conn
    lease._conn = HalfOpen(stale)
    lost: list[str] = []

    async def told(holder: str) -> None:
        lost.append(holder)

    keep = asyncio.create_task(lease.keep(told))
    try:
        await eventually(lambda: isinstance(lease._conn, type(stale)) and lease._conn is not stale)

        assert lost == [] and not keep.done()
        assert stale.is_closed() or not await db_pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", stale.get_server_pid())
        assert await advisory_locks(db_pool) == 1
    finally:
        keep.cancel()
        await asyncio.gather(keep, return_exceptions=True)
        await lease.release()
        stale.terminate()
