"""A fill whose write times out at the client while PostgreSQL still runs it: asyncpg raises at once and asks the
server to cancel it, best effort, and that cancel is lost. The OMS reads the order back at once and, not finding the
fill, applies the broker's news again; the statement given up on must not commit it a second time after that."""

import asyncio

import asyncpg

from services.oms.ledger_pg import PgLedger
from shared.bus import Topic
from shared.clock import day_of
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, candle, order
from tests.oms.test_ledger_failures import FAST_RETRY_S, candles

TIMEOUT_S = 0.2  # the ledger's statement timeout
HELD_S = 0.7  # how long the order's row stays locked (a slow server): its fill's statements wait past their timeout


async def lost_cancel(**kwargs) -> None:
    """asyncpg's cancel request that never reaches the server (the network that made the statement time out)."""


async def test_a_fill_whose_timed_out_write_would_commit_late_is_recorded_once(start_oms, db_pool, monkeypatch):
    monkeypatch.setattr(asyncpg.connect_utils, "_cancel", lost_cancel)
    ledger = PgLedger(db_pool, timeout_s=TIMEOUT_S)
    oms = await start_oms(ledger=ledger)
    oms.module.engine.ledger_retry_s = FAST_RETRY_S
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM order_ledger WHERE client_order_id = 'c-1' FOR UPDATE")
        await oms.bus.publish(Topic.CANDLES, candles(candle(101_00, 102_00, 99_00, 100_00)))
        await asyncio.sleep(HELD_S)
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await asyncio.sleep(0.2)  # any statement still under way commits meanwhile
    assert await oms.bus.drain()

    fills = [(u.last_fill_quantity, u.last_fill_charges_paise)
             for u, _ in await ledger.history(traded.internal_id) if u.last_fill_quantity]  # GetOrderHistory's
    assert (fills, await ledger.fill_charges(day_of(T0))) == (
        [(10, traded.last_fill_charges_paise)], {traded.internal_id: traded.last_fill_charges_paise})
