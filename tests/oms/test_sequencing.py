"""ORDER_UPDATES reach the bus in sequence order, even when one order's ledger write is slow."""

import asyncio

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.ledger import MemoryLedger
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import accepted
from tests.oms.helpers import order


class SlowForOneOrder(MemoryLedger):
    """Once armed, holds record() of the order tagged `slow_tag` until `release` is set."""

    def __init__(self, slow_tag: str) -> None:
        super().__init__()
        self.slow_tag = slow_tag
        self.armed = False
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def record(self, update: t.OrderUpdate, audit: dict) -> None:
        if self.armed and update.client_order_id == self.slow_tag:
            self.waiting.set()
            await self.release.wait()
        await super().record(update, audit)


def fill(opened: t.OrderUpdate, quantity: int) -> BrokerOrderEvent:
    return BrokerOrderEvent(exchange_order_id=opened.exchange_order_id, client_order_id=opened.client_order_id,
                            status=t.ORDER_STATUS_PARTIALLY_FILLED, filled_quantity=quantity,
                            average_price_paise=100_00)


async def let_other_tasks_run() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_updates_are_published_in_strictly_increasing_sequence_while_a_ledger_write_is_slow(start_oms):
    ledger = SlowForOneOrder("slow")
    oms = await start_oms(ledger=ledger)
    engine = oms.module.engine
    for tag in ("slow", "fast"):
        await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id=tag)))
    slow, fast = [await oms.until_status(tag, t.ORDER_STATUS_OPEN) for tag in ("slow", "fast")]
    await oms.bus.drain()
    seen = len(oms.updates)
    ledger.armed = True

    held = asyncio.create_task(engine.on_event(fill(slow, 2)))
    await asyncio.wait_for(ledger.waiting.wait(), 2)
    passing = asyncio.create_task(engine.on_event(fill(fast, 3)))
    await let_other_tasks_run()
    ledger.release.set()
    await asyncio.gather(held, passing)
    await oms.bus.drain()

    sequences = [u.sequence for u in oms.updates[seen:]]
    assert len(sequences) == 2
    assert sequences == sorted(set(sequences))


class NotingBroker(VirtualBroker):
    """Notes, as each order reaches it, how many updates the test's subscriber had been handed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queue: asyncio.Queue | None = None
        self.fanned_out: list[int] = []

    async def place_order(self, order: t.OrderRequest):
        assert self.queue is not None
        self.fanned_out.append(self.queue.qsize())
        return await super().place_order(order)


async def test_a_burst_is_placed_before_its_updates_fan_out_and_they_stay_in_sequence_order_despite_a_refusal(
        start_oms):
    broker = NotingBroker(None, ChargeModel.default(), None)
    oms = await start_oms(broker=broker)
    broker.queue = next(s.queue for s in oms.bus.subscriptions() if s.name == "test")
    burst = [order(client_order_id="a"), order(client_order_id="refused", quantity=0), order(client_order_id="c")]
    for o in burst:  # queued together: one burst
        await oms.bus.publish(Topic.ORDERS, accepted(o))
    for tag in ("a", "c"):
        await oms.until_status(tag, t.ORDER_STATUS_OPEN)
    await oms.until_status("refused", t.ORDER_STATUS_REJECTED)
    await oms.bus.drain()

    # Nothing before the burst is placed but the refusal, at once: after the burst's 3 PENDING_NEWs, in order.
    assert broker.fanned_out == [0, 0, 5]
    sequences = [u.sequence for u in oms.updates]
    assert sequences == sorted(set(sequences))
    assert [oms.statuses(tag)[0] for tag in ("a", "refused", "c")] == [t.ORDER_STATUS_PENDING_NEW] * 3
    assert oms.statuses("refused")[1:] == [t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_REJECTED]


async def test_cancelled_while_booking_a_bursts_acknowledgements_no_order_is_left_busy(start_oms):
    ledger = SlowForOneOrder("a")
    ledger.armed = True  # the first acknowledgement's SUBMITTED waits in the ledger
    oms = await start_oms(ledger=ledger)
    engine = oms.module.engine
    for tag in ("a", "b", "c"):
        await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id=tag)))
    await asyncio.wait_for(ledger.waiting.wait(), 2)
    ids = [engine.lookup(tag).internal_id for tag in ("a", "b", "c")]
    assert all(engine.busy(i) for i in ids)  # their events wait for their acknowledgements

    [booking] = [task for task in engine._placing if task.get_name() == "oms:acks"]
    booking.cancel()
    await asyncio.gather(booking, return_exceptions=True)

    assert [(engine.busy(i), engine.lock(i).locked()) for i in ids] == [(False, False)] * 3
