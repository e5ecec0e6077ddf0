"""An order the OMS gave up on (placement outcome unknown, tag not found) that later shows up at the broker."""

import asyncio

from services.oms.broker import BrokerAck
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.states import ReasonCode
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import market_pb2, ops_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import RetryableError
from tests.helpers import eventually as until
from tests.oms.conftest import accepted
from tests.oms.helpers import MINUTE, T0, candle, order


class LosesTheAck(VirtualBroker):
    """Takes the order but the answer times out, and its order book does not show it yet."""

    async def place_order(self, order: t.OrderRequest) -> BrokerAck:
        await super().place_order(order)
        raise RetryableError("place timed out")

    async def find_by_tag(self, client_order_id: str):
        return None


async def test_an_order_given_up_as_unknown_that_fills_at_the_broker_is_adopted_and_reported(start_oms):
    oms = await start_oms(broker=LosesTheAck(None, ChargeModel.default(), ManualClock(0)))
    notes: list[ops_pb2.Notification] = []

    async def collect(note: ops_pb2.Notification) -> None:
        notes.append(note)

    oms.bus.subscribe(Topic.NOTIFICATIONS, "test-notes", collect)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(
        candles=[candle(99_00, 99_50, 98_00, 99_00, start_ns=T0 + MINUTE)]))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await until(lambda: notes)

    assert "placement outcome unknown" in rejected.reason and rejected.reason_code == ReasonCode.OUTCOME_UNKNOWN
    assert (traded.previous_status, traded.filled_quantity, traded.exchange_order_id[:3]) == (
        t.ORDER_STATUS_REJECTED, 10, "VB-")
    assert "found at the broker after it was given up" in traded.reason and traded.reason_code == ReasonCode.ADOPTED
    assert oms.module.engine.positions.net_quantity(order().token) == 10
    (note,) = notes
    assert (note.kind, note.severity, note.title) == (
        ops_pb2.NOTIFICATION_KIND_SYSTEM, ops_pb2.SEVERITY_CRITICAL, "Order found at broker after it was given up")
    assert note.fields["order_id"] == traded.internal_id


async def test_an_order_the_broker_rejected_is_not_adopted_by_a_later_event(start_oms):
    from services.oms.broker import BrokerOrderEvent

    oms = await start_oms()
    await oms.bus.publish(Topic.ORDERS, accepted(order(quantity=0)))  # the VirtualBroker refuses quantity 0
    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    await oms.module.engine.on_event(BrokerOrderEvent("VB-x", "c-1", t.ORDER_STATUS_OPEN))

    assert rejected.reason_code == ReasonCode.BROKER_REJECTED
    assert oms.module.engine.lookup("c-1") == rejected


async def test_a_broker_rejection_whose_text_reads_like_giving_up_is_still_not_adopted(start_oms):
    """Given up is a code the OMS sets, not words in a reason: the broker's text cannot make an order adoptable."""
    from services.oms.broker import BrokerOrderEvent

    class SaysOutcomeUnknown(VirtualBroker):
        async def place_order(self, order: t.OrderRequest) -> BrokerAck:
            return BrokerAck("EX-1", t.ORDER_STATUS_REJECTED,
                             "placement outcome unknown: RMS the broker has no order tagged with this margin")

    oms = await start_oms(broker=SaysOutcomeUnknown(None, ChargeModel.default(), ManualClock(0)))
    await oms.bus.publish(Topic.ORDERS, accepted(order()))
    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    await oms.module.engine.on_event(BrokerOrderEvent("EX-1", "c-1", t.ORDER_STATUS_TRADED, filled_quantity=1))

    assert rejected.reason_code == ReasonCode.BROKER_REJECTED
    assert oms.module.engine.lookup("c-1") == rejected


class LosesTheAckWithoutAFeed(LosesTheAck):
    """The same, for a broker the OMS polls: no order feed, only the order book (outside the process)."""

    in_process = False

    def events(self):
        return self._silent()

    async def _silent(self):
        await asyncio.Event().wait()
        yield


async def test_a_polled_broker_shows_a_given_up_order_and_the_oms_adopts_it(start_oms):
    broker = LosesTheAckWithoutAFeed(None, ChargeModel.default(), ManualClock(0))
    oms = await start_oms(broker=broker, settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0.01))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    await broker.process_candle(candle(99_00, 99_50, 98_00, 99_00, start_ns=T0 + MINUTE))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    assert (traded.previous_status, traded.filled_quantity) == (t.ORDER_STATUS_REJECTED, 10)


class KnowsTheOrder(VirtualBroker):
    """After a restart: the broker's book has the order the last run gave up on, filled."""

    async def order_book(self):
        from services.oms.broker import BrokerOrderEvent

        return [BrokerOrderEvent("EX-9", "c-lost", t.ORDER_STATUS_TRADED, filled_quantity=10,
                                 average_price_paise=100_00)]


async def test_an_order_given_up_before_a_restart_is_adopted_from_the_brokers_book_at_start(start_oms):
    from services.oms.ledger import MemoryLedger

    ledger = MemoryLedger()
    lost = t.OrderUpdate(internal_id="i-lost", client_order_id="c-lost", status=t.ORDER_STATUS_PENDING_NEW,
                         request=order(client_order_id="c-lost", quantity=10), ts_ns=T0, sequence=1)
    await ledger.insert_new(lost, {})
    given_up = t.OrderUpdate()
    given_up.CopyFrom(lost)
    given_up.status, given_up.sequence = t.ORDER_STATUS_REJECTED, 2
    given_up.reason = "placement outcome unknown and the broker has no order tagged c-lost; not placed again"
    given_up.reason_code = ReasonCode.OUTCOME_UNKNOWN
    await ledger.record(given_up, {})

    oms = await start_oms(broker=KnowsTheOrder(None, ChargeModel.default(), ManualClock(0)), ledger=ledger)

    adopted = await ledger.get("c-lost")
    assert (adopted.status, adopted.filled_quantity) == (t.ORDER_STATUS_TRADED, 10)
    assert oms.module.engine.positions.net_quantity(order().token) == 10
