"""A risk request that changes its state runs to its end when its caller stops waiting, and its save is not lost.

In the monolith a request handler runs in the caller's task (a gRPC deadline, Telegram's 10 s timeout, Ctrl-C of
`ctl halt` cancel it there). A real Bus and RiskModule; the database is a store that holds each save until the test
lets it through (a slow database), or refuses the first ones (a database that is down for a moment).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.state import MemoryRiskState
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2, ops_pb2, risk_pb2
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.risk.factories import order


class SlowDatabase(MemoryRiskState):
    """Each save waits until `through` is set."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.through = asyncio.Event()
        self.through.set()

    async def save(self, state: dict[str, Any]) -> None:
        await self.through.wait()
        await super().save(state)


class DownAtFirst(MemoryRiskState):
    """The first `failures` saves fail (the database down), the later ones work."""

    durable = True

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def save(self, state: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        await super().save(state)


@dataclass
class Risk:
    bus: Bus
    module: RiskModule
    notes: list[ops_pb2.Notification] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


async def _instruments(request: Any) -> ingestion_pb2.ListInstrumentsResponse:
    return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())


@asynccontextmanager
async def _running(clock: ManualClock, store: MemoryRiskState) -> AsyncIterator[Risk]:
    bus = Bus()
    risk = Risk(bus, RiskModule(bus, load(RiskSettings, {}, timer_interval_ms=2), clock, store))

    async def on_note(note: ops_pb2.Notification) -> None:
        risk.notes.append(note)

    async def cancel(request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        risk.cancelled.append(request.order_id)
        return oms_pb2.CancelOrderResponse()

    bus.handle(rpc.LIST_INSTRUMENTS, _instruments)
    bus.handle(rpc.CANCEL_ORDER, cancel)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    await risk.module.start()
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(risk.module.run())]
    try:
        yield risk
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def slow_db() -> SlowDatabase:
    return SlowDatabase()


@pytest.fixture
async def risk(clock: ManualClock, slow_db: SlowDatabase) -> AsyncIterator[Risk]:
    async with _running(clock, slow_db) as running:
        yield running


def halt(cancel: bool = True) -> risk_pb2.SetKillSwitchRequest:
    return risk_pb2.SetKillSwitchRequest(engaged=True, reason="panic", cancel_open_orders=cancel)


async def test_a_kill_switch_whose_caller_gives_up_during_the_save_is_saved_announced_and_cancels(risk, slow_db):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="resting")))
    slow_db.through.clear()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await risk.bus.call(rpc.SET_KILL_SWITCH, halt())
    slow_db.through.set()  # the database answers again

    await eventually(lambda: bool(risk.notes))
    assert ((slow_db.saved or {}).get("kill_switch"), [n.title for n in risk.notes], risk.cancelled) == (
        True, ["Kill switch: trading HALTED"], ["resting"])


async def test_the_kill_switchs_cancel_round_does_not_wait_for_a_slow_database(risk, slow_db):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="resting")))
    slow_db.through.clear()

    reply = asyncio.create_task(risk.bus.call(rpc.SET_KILL_SWITCH, halt()))

    await eventually(lambda: risk.cancelled == ["resting"])  # while the save still waits
    assert not reply.done()  # answered only once saved: a switch answered engaged survives a restart
    slow_db.through.set()
    assert (await reply).state == risk_pb2.TRADING_STATE_HALTED and slow_db.saved["kill_switch"] is True


async def test_limits_whose_caller_gives_up_during_the_save_are_still_saved(risk, slow_db):
    limits = risk.module.engine.limits.model_copy(update={"max_order_quantity": 50}).to_proto()
    slow_db.through.clear()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits))
    slow_db.through.set()

    await eventually(lambda: (slow_db.saved or {}).get("limits", {}).get("max_order_quantity", {}).get("value") == 50)


async def test_a_state_whose_save_failed_is_saved_once_the_database_is_back(clock):
    store = DownAtFirst(failures=1)
    async with _running(clock, store) as risk:
        await risk.bus.call(rpc.SET_KILL_SWITCH, halt(cancel=False))

        await eventually(lambda: (store.saved or {}).get("kill_switch") is True)  # the timer tried again
        assert [n.title for n in risk.notes] == ["Risk state not saved", "Kill switch: trading HALTED"]


async def test_limits_set_while_another_save_is_on_its_way_are_saved_too(risk, slow_db):
    slow_db.through.clear()
    halting = asyncio.create_task(risk.bus.call(rpc.SET_KILL_SWITCH, halt(cancel=False)))  # its save waits
    await asyncio.sleep(0.01)
    limits = risk.module.engine.limits.model_copy(update={"max_order_quantity": 50}).to_proto()
    setting = asyncio.create_task(risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits)))

    slow_db.through.set()
    await asyncio.gather(halting, setting)

    assert slow_db.saved["limits"]["max_order_quantity"]["value"] == 50 and slow_db.saved["kill_switch"] is True
