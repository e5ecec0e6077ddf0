"""The kill switch and the day's trading state outlive a restart of the risk module: saved in PostgreSQL
(risk_state, migration 0006) on every change, read back at start; so does how far its decisions went when it
stopped cleanly (what split mode tells the OMS's bridge). A real Bus, RiskModule and database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.state import PgRiskState, Published
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, ops_pb2, risk_pb2, trading_pb2
from shared.errors import RiskRejected, TradingHalted
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


async def test_a_kill_switch_whose_reason_holds_a_nul_is_still_saved(db_pool, clock):
    """jsonb refuses json.dumps's \\u0000: the switch answered OK, engaged in memory only, and every later save
    failed too; a restart came up trading."""
    bus, _, _, task = await _risk(clock, PgRiskState(db_pool))
    await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="bad\x00feed"))
    await _stop(task)

    _, module, _, task = await _risk(clock, PgRiskState(db_pool))
    await _stop(task)

    assert module.engine.kill_switch_engaged and "bad\ufffdfeed" in module.engine.state_reason


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


async def _decide(bus: Bus, accepted: int, rejected: int) -> list[trading_pb2.RiskDecision]:
    """`accepted` orders risk accepts, then `rejected` it refuses (too big); the decisions it published."""
    decisions: list[trading_pb2.RiskDecision] = []

    async def collect(d: trading_pb2.RiskDecision) -> None:
        decisions.append(d)

    bus.subscribe(Topic.ORDERS, "oms", collect)
    for _ in range(accepted):
        await bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order()))
    for _ in range(rejected):
        with pytest.raises(RiskRejected):
            await bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(quantity=100_000)))
    await bus.drain()
    return decisions


async def _next_process_record(clock: ManualClock, db_pool: Any) -> tuple[RiskModule, Published | None]:
    """What the next risk process tells before its server starts (split mode asks it then)."""
    module = RiskModule(Bus(), load(RiskSettings, {}), clock, PgRiskState(db_pool))
    return module, await module.restore_published()


async def test_a_risk_that_stopped_cleanly_tells_the_next_one_how_far_its_decisions_went(db_pool, clock):
    bus, module, _, task = await _risk(clock, PgRiskState(db_pool))
    accepted, rejected = await _decide(bus, accepted=1, rejected=1)
    await module.stop()
    await _stop(task)

    _, record = await _next_process_record(clock, db_pool)

    assert record is not None
    assert record.highest == {"all": rejected.sequence, "accepted": accepted.sequence, "rejections": rejected.sequence}
    assert record.unknown_below < accepted.sequence  # only before the first process on this database


async def test_a_risk_on_a_clock_behind_the_last_ones_numbers_its_decisions_above_theirs(db_pool, clock):
    """Decisions are numbered from the process's start time: on a clock behind its predecessor's (stepped back,
    another host) they came below those already out, and the OMS's bridge, resuming after the last one it took,
    dropped them as already seen."""
    bus, module, _, task = await _risk(clock, PgRiskState(db_pool))
    module.sequencer.value += 3_600_000_000  # its clock an hour ahead of this one
    [before] = await _decide(bus, accepted=1, rejected=0)
    await module.stop()
    await _stop(task)

    told, _ = await _next_process_record(clock, db_pool)
    bus, _, _, task = await _risk(clock, PgRiskState(db_pool))
    try:
        [after] = await _decide(bus, accepted=1, rejected=0)
    finally:
        await _stop(task)

    assert told.sequencer.value >= before.sequence  # split mode: what its streams say it starts above
    assert after.sequence > before.sequence


async def test_the_record_outlives_a_process_that_decided_nothing_and_a_crash_makes_all_before_it_unknown(
        db_pool, clock):
    """A later clean stop must not wipe what an earlier process published (the OMS may still miss it); after a crash
    nothing before the next process is known for sure; and the record must not drop the kill switch saved with it."""
    bus, module, _, task = await _risk(clock, PgRiskState(db_pool))
    [accepted] = await _decide(bus, accepted=1, rejected=0)
    await module.stop()
    await _stop(task)
    _, module, _, task = await _risk(clock, PgRiskState(db_pool))  # decides nothing, stops cleanly
    await module.stop()
    await _stop(task)
    bus, _, _, task = await _risk(clock, PgRiskState(db_pool))
    await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="runaway strategy"))
    await _stop(task)  # a crash: no stop()

    after_crash, record = await _next_process_record(clock, db_pool)

    assert record is not None and record.highest["accepted"] == accepted.sequence
    assert record.unknown_below == after_crash.sequencer.value  # all the crashed process could have published
    _, module, _, task = await _risk(clock, PgRiskState(db_pool))
    await _stop(task)
    assert module.engine.kill_switch_engaged


async def test_limits_changed_at_run_time_come_back_from_the_database_after_a_restart(db_pool, clock):
    bus, module, _, task = await _risk(clock, PgRiskState(db_pool))
    changed = module.engine.limits.model_copy(update={"max_orders_per_second": 2.5, "daily_loss_halt_paise": 80_000_00,
                                                      "square_off_time_ist": "15:00"})
    await bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=changed.to_proto()))
    await _stop(task)

    _, module, _, task = await _risk(clock, PgRiskState(db_pool))
    await _stop(task)

    assert module.engine.limits == changed
