"""Review of the adoption path: broker rows for orders the OMS gave up on or does not hold, and positions the
broker carries that the book does not."""

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.ledger import MemoryLedger
from services.oms.states import ReasonCode
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, order
from tests.oms.test_adoption import LosesTheAck


async def given_up_order(start_oms):
    oms = await start_oms(broker=LosesTheAck(None, ChargeModel.default(), ManualClock(0)))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)
    assert rejected.reason_code == ReasonCode.OUTCOME_UNKNOWN
    return oms, rejected


async def test_a_given_up_order_reported_filled_without_a_price_is_not_adopted_at_price_zero(start_oms):
    """Kotak leaves avgPrc empty in some rows: adopting such a row would book 10 units at cost 0, a phantom gain
    as large as their value in risk's daily P&L. The row is held like any unpriced fill."""
    oms, rejected = await given_up_order(start_oms)
    engine = oms.module.engine

    await engine.on_event(BrokerOrderEvent("EX-7", "c-1", t.ORDER_STATUS_TRADED, filled_quantity=10))

    assert engine.lookup("c-1") == rejected
    assert engine.positions.net_quantity(order().token) == 0 and engine.unpriced_fills == 1


async def test_a_given_up_order_held_for_its_price_is_adopted_by_the_next_row_that_has_it(start_oms):
    oms, _ = await given_up_order(start_oms)
    engine = oms.module.engine
    await engine.on_event(BrokerOrderEvent("EX-7", "c-1", t.ORDER_STATUS_TRADED, filled_quantity=10))

    await engine.on_event(BrokerOrderEvent("EX-7", "c-1", t.ORDER_STATUS_TRADED, filled_quantity=10,
                                           average_price_paise=99_50))

    adopted = engine.lookup("c-1")
    assert (adopted.status, adopted.reason_code, adopted.last_fill_quantity, adopted.last_fill_price_paise) == (
        t.ORDER_STATUS_TRADED, ReasonCode.ADOPTED, 10, 99_50)
    assert engine.positions.position(order().token).average_price_paise == 99_50


class BookWithoutPrice(VirtualBroker):
    """After a restart: the broker's book has the order the last run gave up on, filled, but the row has no price."""

    async def order_book(self):
        return [BrokerOrderEvent("EX-9", "c-lost", t.ORDER_STATUS_TRADED, filled_quantity=10)]


async def test_an_unpriced_row_for_an_order_given_up_before_a_restart_is_not_booked_at_start(start_oms):
    ledger = MemoryLedger()
    lost = t.OrderUpdate(internal_id="i-lost", client_order_id="c-lost", status=t.ORDER_STATUS_PENDING_NEW,
                         request=order(client_order_id="c-lost", quantity=10), ts_ns=T0, sequence=1)
    await ledger.insert_new(lost, {})
    gave_up = t.OrderUpdate()
    gave_up.CopyFrom(lost)
    gave_up.status, gave_up.sequence, gave_up.reason_code = t.ORDER_STATUS_REJECTED, 2, ReasonCode.OUTCOME_UNKNOWN
    await ledger.record(gave_up, {})

    oms = await start_oms(broker=BookWithoutPrice(None, ChargeModel.default(), ManualClock(0)), ledger=ledger)

    assert (await ledger.get("c-lost")).status == t.ORDER_STATUS_REJECTED
    assert oms.module.engine.positions.net_quantity(order().token) == 0
    assert "c-lost" in oms.module.engine.given_up_tags()  # still looked for: a priced row adopts it
