"""A failed risk state save is tried again off the timer: a database that then hangs (or takes its connect timeout
to fail each time) must not stop the timer's square-off, its cancels and the loss cancels. Before, the retry ran
inside the timer, and every turn waited for the database."""

from __future__ import annotations

import asyncio
from typing import Any

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.state import MemoryRiskState
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.risk.factories import DAY, RELIANCE

LONG = trading_pb2.Position(token=RELIANCE, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
                            product=trading_pb2.PRODUCT_MIS, net_quantity=100, average_price_paise=1290_00,
                            last_price_paise=1290_00)


class FailsThenHangs(MemoryRiskState):
    """The first save fails at once (a connection reset); the later ones hang (the database host unreachable)."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.back = asyncio.Event()

    async def save(self, state: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("connection reset")
        await self.back.wait()
        await super().save(state)


async def test_the_square_off_does_not_wait_for_a_retried_save_of_a_database_that_hangs():
    clock = ManualClock(ist_ns(DAY, 15, 0))
    store = FailsThenHangs()
    bus = Bus()
    module = RiskModule(bus, load(RiskSettings, {}, timer_interval_ms=2), clock, store)
    decisions: list[trading_pb2.RiskDecision] = []

    async def list_instruments(request: Any) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_positions(request: Any) -> oms_pb2.ListPositionsResponse:
        return oms_pb2.ListPositionsResponse(positions=[LONG])

    async def on_decision(decision: trading_pb2.RiskDecision) -> None:
        decisions.append(decision)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_POSITIONS, list_positions)
    bus.subscribe(Topic.ORDERS, "test", on_decision)
    await module.start()
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(module.run())]
    try:
        limits = module.engine.limits.model_copy(update={"max_order_quantity": 500}).to_proto()
        await bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits))  # its save fails
        await asyncio.sleep(0.05)  # the timer tries again: the database hangs now
        assert store.calls >= 2

        clock.set(ist_ns(DAY, 15, 16))  # past square_off_time_ist 15:15
        for _ in range(100):
            if decisions:
                break
            await asyncio.sleep(0.01)

        assert [(d.order.strategy_tag, d.order.quantity) for d in decisions] == [("SQUAREOFF", 100)]
    finally:
        store.back.set()
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
