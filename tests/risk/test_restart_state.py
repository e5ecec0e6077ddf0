"""The kill switch and the day's trading state outlive a restart of the risk module: saved in PostgreSQL
(risk_state, migration 0006) on every change, read back at start. A real Bus, RiskModule and database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.state import PgRiskState
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, ops_pb2, risk_pb2
from shared.errors import TradingHalted
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.risk.factories import order


async def _instruments(request: Any) -> ingestion_pb2.ListInstrumentsResponse:
    return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())


async def _risk(clock: ManualClock, store: Any) -> tuple[Bus, RiskModule, list[ops_pb2.Notification], asyncio.Task]:
    """A risk module as a process starts it: its own bus, the same database."""
    bus, notes = Bus(), []

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note)

    bus.handle(rpc.LIST_INSTRUMENTS, _instruments)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    task = asyncio.create_task(bus.run())
    module = RiskModule(bus, load(RiskSettings, {}), clock, store)
    await module.start()
    return bus, module, notes, task


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_engaged_kill_switch_is_still_engaged_after_risk_restarts(db_pool, clock):
    bus, _, _, task = await _risk(clock, PgRiskState(db_pool))
    await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="runaway strategy"))
    await _stop(task)

    bus, module, notes, task = await _risk(clock, PgRiskState(db_pool))
    try:
        assert (module.engine.state, module.engine.kill_switch_engaged) == (risk_pb2.TRADING_STATE_HALTED, True)
        with pytest.raises(TradingHalted):
            await bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="after")))
        await eventually(lambda: any("runaway strategy" in n.text for n in notes))  # announced again at start

        await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=False, reason="fixed"))
    finally:
        await _stop(task)
    _, module, _, task = await _risk(clock, PgRiskState(db_pool))
    await _stop(task)
    assert module.engine.state == risk_pb2.TRADING_STATE_ACTIVE  # released is released, restart or not


class FailingStore:
    durable = True

    async def load(self) -> None:
        return None

    async def save(self, state: dict[str, Any]) -> None:
        raise ConnectionError("database down")


async def test_a_state_that_cannot_be_saved_is_in_force_and_a_critical_alert(clock):
    bus, module, notes, task = await _risk(clock, FailingStore())
    try:
        await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="stop"))

        assert module.engine.state == risk_pb2.TRADING_STATE_HALTED
        await eventually(lambda: any(n.title == "Risk state not saved" for n in notes))
        [alert] = [n for n in notes if n.title == "Risk state not saved"]
        assert alert.severity == ops_pb2.SEVERITY_CRITICAL and "restart" in alert.text
    finally:
        await _stop(task)
