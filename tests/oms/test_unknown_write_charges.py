"""A fill whose write and read-back both lost their reply, found committed when the order's next write settles it:
its charges count as booked, so the order's next fill is not charged them again."""

import dataclasses

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import accepted
from tests.oms.helpers import MINUTE, T0, candle, order
from tests.oms.test_ledger_failures import DroppedConnection, candles, start_failing


class CumulativeOnly(VirtualBroker):
    """Like Kotak's order feed: an order's fills and charges so far, without the last fill's own."""

    def _event(self, vo, at_ns=0):
        return dataclasses.replace(super()._event(vo, at_ns), raw={})


async def test_a_fill_found_committed_after_its_reply_and_read_back_were_lost_is_not_charged_again(
        start_oms, db_pool):
    broker = CumulativeOnly(None, ChargeModel.default(), ManualClock(T0 + 1))
    ledger = DroppedConnection(db_pool, committed=True)  # the first fill's write commits, its reply is lost
    oms = await start_failing(start_oms, ledger, broker=broker)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, candles(candle(99_00, 99_50, 98_00, 99_00, volume=4)))
    await oms.until_status("c-1", t.ORDER_STATUS_PARTIALLY_FILLED)
    await oms.bus.publish(Topic.CANDLES, candles(candle(98_00, 99_00, 97_00, 98_50, start_ns=T0 + 2 * MINUTE)))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    assert await oms.bus.drain()

    charged = await db_pool.fetch(
        "SELECT fill_qty, fill_charges FROM order_events WHERE fill_qty > 0 ORDER BY event_id")
    assert [r["fill_qty"] for r in charged] == [4, 6]
    assert sum(r["fill_charges"] for r in charged) == (await broker.find_by_tag("c-1")).charges_paise
