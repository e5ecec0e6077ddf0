"""What the operator sets on a strategy outlives a restart (services/strategy/state.py): its pause, the parameters
changed at run time, the day its loss limit stopped it. Before, a restarted NeoPulse traded a strategy the operator
had paused, with its config file's parameters.

Real parts: the StrategyModule on a real Bus, its state in the strategy_state table of a real PostgreSQL (embedded),
read back by a second module as a restarted process would; the engine for the rules on crafted states.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.module import StrategyModule
from services.strategy.state import MemoryStrategyState, PgStrategyState
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_day_number, ist_ns
from shared.contracts import ingestion_pb2, ops_pb2, strategy_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

NOW = ist_ns(date(2026, 1, 20), 10, 0)
SBIN = 3045


def settings(**params: Any) -> StrategySettings:
    return cfg.load(StrategySettings, {"strategy": {"strategies": [
        {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "max_daily_loss": 1000,
         "params": {"rsi_period": 3, "ema_period": 3, **params}}]}})


class Started:
    def __init__(self, module: StrategyModule, bus: Bus, notes: list[ops_pb2.Notification]) -> None:
        self.module, self.bus, self.notes = module, bus, notes

    async def call(self, method: str, request: Any) -> Any:
        return await self.bus.call(method, request)

    async def info(self) -> strategy_pb2.StrategyInfo:
        (info,) = (await self.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())).strategies
        return info


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    """start(state, settings) -> a started module (a process's strategy module) with its state in `state`."""
    tasks: list[asyncio.Task] = []

    async def make(state: Any, strategy_settings: StrategySettings | None = None, now_ns: int = NOW) -> Started:
        bus, notes = Bus(), []

        async def list_instruments(_: Any) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

        async def on_note(note: ops_pb2.Notification) -> None:
            notes.append(note)

        bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
        module = StrategyModule(bus, strategy_settings or settings(), ManualClock(now_ns), None, state)
        tasks.append(asyncio.create_task(bus.run()))
        await module.start()
        assert await bus.drain()
        return Started(module, bus, notes)

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_pause_and_params_set_at_run_time_hold_after_a_restart(db_pool, start):
    first = await start(PgStrategyState(db_pool))
    await first.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom", reason="news at 11"))
    await first.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
        name="mom", params={"stop_loss_pct": "0.8", "max_daily_loss": "500"}))
    paused_at = (await first.info()).paused_at_ns

    again = await start(PgStrategyState(db_pool), now_ns=NOW + 3600 * NS)  # a new process on the same database

    info = await again.info()
    assert (info.paused, info.pause_reason, info.paused_by, info.paused_at_ns) == (
        True, "news at 11", strategy_pb2.PAUSED_BY_OPERATOR, paused_at)
    assert (info.params["stop_loss_pct"], info.params["max_daily_loss"], info.max_daily_loss_paise) == (
        "0.8", "500", 500_00)
    assert info.params["rsi_period"] == "3"  # the config's, untouched

    await again.call(rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name="mom"))
    third = await start(PgStrategyState(db_pool), now_ns=NOW + 7200 * NS)
    assert not (await third.info()).paused
    row = json.loads(await db_pool.fetchval("SELECT value FROM strategy_state WHERE name = 'mom'"))
    assert row["params"] == {"stop_loss_pct": {"value": "0.8", "config": "0.0"},
                             "max_daily_loss": {"value": "500", "config": "1000"}}


async def test_a_param_whose_config_value_was_edited_since_takes_the_configs(db_pool, start):
    first = await start(PgStrategyState(db_pool))
    await first.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
        name="mom", params={"stop_loss_pct": "0.8", "target_pct": "2"}))

    again = await start(PgStrategyState(db_pool), settings(stop_loss_pct=1.5))  # the file now says 1.5

    params = (await again.info()).params
    assert (params["stop_loss_pct"], params["target_pct"]) == ("1.5", "2.0")


async def test_run_time_params_no_longer_valid_start_the_strategy_paused_and_say_so(db_pool, start):
    """A value saved that the params no longer take (rsi_period 1: its lower bound is 2 now, say after an upgrade)."""
    first = await start(PgStrategyState(db_pool))
    await first.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
        name="mom", params={"rsi_period": "5"}))
    await db_pool.execute("UPDATE strategy_state SET value = jsonb_set(value, '{params,rsi_period,value}', "
                          "'\"1\"') WHERE name = 'mom'")  # a value no longer valid (a bound changed)

    again = await start(PgStrategyState(db_pool))

    info = await again.info()
    assert info.paused and info.paused_by == strategy_pb2.PAUSED_BY_NEOPULSE
    assert info.pause_reason.startswith("its parameters changed at run time (rsi_period=1) are not valid now: ")
    assert info.params["rsi_period"] == "3"
    assert [(n.title, n.severity) for n in again.notes] == [("Strategy paused at start", ops_pb2.SEVERITY_CRITICAL)]
    kept = json.loads(await db_pool.fetchval("SELECT value FROM strategy_state WHERE name = 'mom'"))
    assert kept["paused"] is True and kept["paused_by"] == "PAUSED_BY_NEOPULSE"


async def test_a_database_that_cannot_be_read_starts_the_strategies_as_configured_with_a_critical_note(
        database, start):
    import asyncpg

    pool = await asyncpg.create_pool(database, min_size=0, max_size=1)
    await pool.close()

    started = await start(PgStrategyState(pool))

    assert not (await started.info()).paused and started.module.ready.is_set()
    assert [n.title for n in started.notes] == ["Strategy states not read"]
    await started.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom"))
    assert (await started.info()).paused  # in force here, though not saved
    assert await started.bus.drain()
    assert [n.title for n in started.notes][-1] == "Strategy state not saved"


def engine(now_ns: int = NOW) -> StrategyEngine:
    instruments = InstrumentBook(nse_instruments(["SBIN-EQ"]))
    return StrategyEngine(build_strategies(settings(), instruments), instruments, ManualClock(now_ns))


def lost_today(e: StrategyEngine) -> None:
    """The strategy bought 10 at 100.00 and SBIN fell to 98.00: Rs 20 lost, past a limit of Rs 10."""
    e.set_params("mom", {"max_daily_loss": "10"})
    e.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="b", status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=10,
        last_fill_price_paise=100_00, filled_quantity=10, sequence=1, ts_ns=NOW,
        request=trading_pb2.OrderRequest(client_order_id="b", token=SBIN, side=trading_pb2.SIDE_BUY, quantity=10,
                                         strategy_tag="mom", product=trading_pb2.PRODUCT_MIS)))


def test_a_strategy_the_operator_resumed_after_its_loss_limit_is_not_stopped_again_that_day_after_a_restart():
    before = engine()
    lost_today(before)
    before.candles.on_ticks([_tick(98_00)])
    assert before.loss_turn(NOW).stopped  # stopped, and closing out
    before.set_paused("mom", False)  # the operator resumes it: their call for the rest of the day
    saved = before.durable_state("mom")

    after = engine(NOW + 60 * NS)
    after.restore_state("mom", saved, NOW + 60 * NS)
    lost_today(after)
    after.candles.on_ticks([_tick(97_00)])
    assert after.loss_turn(NOW + 60 * NS).stopped == []

    tomorrow = engine(NOW + 86_400 * NS)
    tomorrow.restore_state("mom", saved, NOW + 86_400 * NS)
    assert tomorrow.strategies["mom"].loss_stopped_day != ist_day_number(NOW)


def test_a_strategy_stopped_by_its_loss_limit_goes_on_closing_out_after_a_restart():
    before = engine()
    lost_today(before)
    before.candles.on_ticks([_tick(98_00)])
    before.loss_turn(NOW)
    saved = before.durable_state("mom")
    assert (saved["paused"], saved["paused_by"], saved["closing"]) == (True, "PAUSED_BY_NEOPULSE", True)

    after = engine(NOW + 60 * NS)
    done = after.restore_state("mom", saved, NOW + 60 * NS)
    lost_today(after)  # its position, as the OMS's orders give it back

    turn = after.loss_turn(NOW + 60 * NS)
    assert done.paused and turn.stopped == []  # not stopped (and notified) a second time
    assert [(s.side, s.quantity, s.order_type) for s in turn.signals] == [
        (trading_pb2.SIDE_SELL, 10, trading_pb2.ORDER_TYPE_MARKET)]


def test_a_malformed_saved_state_restores_what_it_can():
    e = engine()
    done = e.restore_state("mom", {"paused": True, "paused_by": "SOMEONE", "params": {
        "stop_loss_pct": 5, "target_pct": {"value": "2", "config": "0.0"}}}, NOW)

    strategy = e.strategies["mom"]
    assert (strategy.paused, strategy.paused_by, strategy.pause_reason) == (
        True, strategy_pb2.PAUSED_BY_OPERATOR, "no reason given")
    assert strategy.params.target_pct == 2 and done.dropped == {"stop_loss_pct": "not understood"}


def _tick(price: int) -> Any:
    from shared.contracts import market_pb2

    return market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=NOW, ltp_paise=price, ltq=1)


class FirstSaveSlow(MemoryStrategyState):
    """The first save takes a while to commit (its connection still being opened); the others go at once."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = True

    async def save(self, name: str, state: dict[str, Any]) -> None:
        if self.slow:
            self.slow = False
            await asyncio.sleep(0.1)
        await super().save(name, state)


async def test_a_pause_and_a_resume_in_quick_succession_save_the_resume_last(start):
    store = FirstSaveSlow()
    started = await start(store)
    store.slow = True

    await asyncio.gather(
        started.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom", reason="a look")),
        started.call(rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name="mom")))

    assert not (await started.info()).paused
    assert not store.saved["mom"].get("paused")
