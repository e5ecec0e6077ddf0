"""Decisions reach ORDERS in sequence order even when a full subscriber queue makes a publish wait.

A real Bus and RiskModule; the ORDERS consumer is not running, the test drains its queue by hand.
"""

from __future__ import annotations

import asyncio

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, risk_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.risk.factories import order


async def _no_consumer(decision: trading_pb2.RiskDecision) -> None:
    raise AssertionError("the ORDERS consumer is not running in this test")


async def test_a_decision_published_while_another_waits_on_a_full_queue_keeps_sequence_order(clock: ManualClock):
    bus = Bus()

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    slow = bus.subscribe(Topic.ORDERS, "slow", _no_consumer, maxsize=1)
    module = RiskModule(bus, load(RiskSettings, {}), clock)
    await module.start()

    def submit(cid: str) -> risk_pb2.SubmitOrderRequest:
        return risk_pb2.SubmitOrderRequest(order=order(client_order_id=cid))

    await bus.call(rpc.SUBMIT_ORDER, submit("first"))  # fills the queue
    waiting = asyncio.create_task(bus.call(rpc.SUBMIT_ORDER, submit("second")))
    await eventually(lambda: "second" in module.engine.open_orders)  # decided, now waiting for room
    got = [slow.queue.get_nowait()]  # room for one: "second" is woken but has not run yet

    async def drain() -> None:
        while len(got) < 3:
            got.append(await slow.queue.get())

    drainer = asyncio.create_task(drain())
    await bus.call(rpc.SUBMIT_ORDER, submit("third"))  # from this task, while "second" is still waking
    await asyncio.wait_for(asyncio.gather(drainer, waiting), 5)

    sequences = [d.sequence for d in got]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    assert [d.order.client_order_id for d in got] == ["first", "second", "third"]
