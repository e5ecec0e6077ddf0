"""Limits changed at run time (SetRiskLimits, /limits, `ctl limits --set`) outlive a restart of the risk module, as
the kill switch does: saved with risk's state, each with the config's value it replaced, and put back at start
before the positions are counted; a limit whose value in the config file has changed since takes the file's.

A real Bus and RiskModule on the in-memory store a restarted module finds in the same process (test_restart_state
holds the PostgreSQL round trip); the engine alone where only its restore is asked about."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.engine import HALTED, RiskEngine
from services.risk.module import RiskModule
from services.risk.state import MemoryRiskState
from shared import rpc
from shared.bus import Bus
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.risk.factories import DAY, RELIANCE, instruments

# A long 100 RELIANCE MIS bought at Rs 1,290, now at Rs 1,260: Rs 3,000 down today.
DOWN_3000 = trading_pb2.Position(token=RELIANCE, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
                                 product=trading_pb2.PRODUCT_MIS, net_quantity=100, average_price_paise=1290_00,
                                 last_price_paise=1260_00)
CONFIG: dict[str, Any] = {"daily_loss_reducing": 1000, "daily_loss_halt": 2000}


async def _risk(clock: ManualClock, store: MemoryRiskState, config: dict[str, Any] | None = None,
                positions: tuple[trading_pb2.Position, ...] = ()) -> RiskModule:
    """A risk module as a process starts it: its own bus, the same store, the OMS holding `positions`."""
    bus = Bus()

    async def list_instruments(request: Any) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_positions(request: Any) -> oms_pb2.ListPositionsResponse:
        return oms_pb2.ListPositionsResponse(positions=positions)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_POSITIONS, list_positions)
    module = RiskModule(bus, load(RiskSettings, {"risk": config or CONFIG}), clock, store)
    await module.start()
    return module


async def _set(module: RiskModule, **changes: Any) -> None:
    limits = module.engine.limits.model_copy(update=changes)
    await module.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits.to_proto()))


@pytest.fixture
def store() -> MemoryRiskState:
    return MemoryRiskState()


async def test_limits_tightened_at_run_time_hold_after_a_restart(clock, store):
    module = await _risk(clock, store)
    await _set(module, daily_loss_reducing_paise=500_00, daily_loss_halt_paise=800_00, max_order_quantity=50)
    await module.stop()

    again = await _risk(clock, store)

    limits = again.engine.limits
    assert (limits.daily_loss_reducing_paise, limits.daily_loss_halt_paise, limits.max_order_quantity) == (
        500_00, 800_00, 50)


async def test_a_daily_loss_halt_raised_to_trade_on_does_not_halt_and_square_off_at_a_restart(clock, store):
    """README: raise daily_loss_halt first to trade on. With the config's back at start, the day's loss halted
    trading and squared off every MIS position at market."""
    module = await _risk(clock, store, positions=(DOWN_3000,))
    await _set(module, daily_loss_reducing_paise=5_000_00, daily_loss_halt_paise=10_000_00)
    await module.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=False, reason="trade on"))
    assert module.engine.state == risk_pb2.TRADING_STATE_ACTIVE

    again = await _risk(clock, store, positions=(DOWN_3000,))

    assert (again.engine.state, again.engine.square_off_due()) == (risk_pb2.TRADING_STATE_ACTIVE, [])


async def test_run_time_limits_hold_on_the_next_trading_day_too(clock, store):
    """The operator's, like the kill switch: in force until changed, as they would be had risk not restarted."""
    module = await _risk(clock, store)
    await _set(module, max_order_quantity=50)
    clock.set(ist_ns(DAY + timedelta(days=1), 9, 0))

    again = await _risk(clock, store)

    assert again.engine.limits.max_order_quantity == 50


async def test_a_limit_whose_config_value_changed_since_takes_the_configs_and_the_others_are_kept(clock, store):
    module = await _risk(clock, store)
    await _set(module, max_order_quantity=50, max_open_orders=5)

    again = await _risk(clock, store, {**CONFIG, "max_order_quantity": 200})  # the file edited since

    assert (again.engine.limits.max_order_quantity, again.engine.limits.max_open_orders) == (200, 5)


async def test_a_limit_set_back_to_the_configs_value_is_no_run_time_change_any_more(clock, store):
    module = await _risk(clock, store)
    await _set(module, max_order_quantity=50)
    await _set(module, max_order_quantity=1000)  # the config's (the default) again

    again = await _risk(clock, store, {**CONFIG, "max_order_quantity": 200})

    assert again.engine.limits.max_order_quantity == 200


async def test_the_limits_restored_at_start_are_logged(clock, store, caplog):
    module = await _risk(clock, store)
    await _set(module, max_order_quantity=50)
    caplog.set_level(logging.INFO, logger="services.risk.module")

    await _risk(clock, store)

    [record] = [r for r in caplog.records if "restored over the config" in r.getMessage()]
    assert (record.levelno, record.limits) == (logging.WARNING, {"max_order_quantity": 50})


def test_saved_limits_not_valid_with_the_config_now_are_none_applied(clock):
    """daily_loss_halt's config value changed since (the config's holds), and the saved daily_loss_reducing is over
    it: applying that one alone would leave reducing above halt."""
    first = RiskEngine(load(RiskSettings, {"risk": CONFIG}).limits(), clock, instruments())
    first.set_limits(first.limits.model_copy(update={"daily_loss_reducing_paise": 5_000_00,
                                                     "daily_loss_halt_paise": 10_000_00}))
    config = load(RiskSettings, {"risk": {**CONFIG, "daily_loss_halt": 3000}}).limits()
    again = RiskEngine(config, clock, instruments())

    restored = again.restore_limits(first.durable_state())

    assert (restored.applied, sorted(restored.dropped), again.limits) == (
        {}, ["daily_loss_halt_paise", "daily_loss_reducing_paise"], config)


async def test_an_engaged_kill_switch_and_run_time_limits_are_both_kept(clock, store):
    module = await _risk(clock, store)
    await _set(module, max_order_quantity=50)
    await module.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="lunch"))
    await asyncio.sleep(0)

    again = await _risk(clock, store)

    assert (again.engine.state, again.engine.limits.max_order_quantity) == (HALTED, 50)
