"""ORDER_UPDATES reach the bus in sequence order, even when one order's ledger write is slow."""

import asyncio

from services.oms.broker import BrokerOrderEvent
from services.oms.ledger import MemoryLedger
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
