"""A pause holds back entries, not exits; a control whose caller gives up is carried out to its end; signals are
numbered in the order they are published (split mode's StreamSignals bridge drops a sequence at or below the last)."""

import asyncio
from datetime import date
from types import SimpleNamespace

import grpc
import pytest

from services.oms.service import OrderService
from services.strategy.config import StrategySettings
from services.strategy.engine import NOT_RESTORED, sends_nothing
from services.strategy.module import StrategyModule
from services.strategy.state import MemoryStrategyState
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, strategy_pb2, trading_pb2
from shared.grpc.bridge import StreamBridge
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.strategy.test_module import FALLING_THEN_JUMP, Harness, ticks, update
from tests.strategy.test_price_levels import SELL, Desk
from tests.strategy.test_restore import TODAY, orders_filling_the_read

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN, RELIANCE = 3045, 2885
LIMIT, OPEN = trading_pb2.ORDER_TYPE_LIMIT, trading_pb2.ORDER_STATUS_OPEN


class SlowState(MemoryStrategyState):
    """The strategies' saved state behind a database that takes `slow_s` to write."""

    slow_s = 0.0

    async def save(self, name, state):
        await asyncio.sleep(self.slow_s)
        await super().save(name, state)


# -- a pause holds back entries, not exits ------------------------------------------------------------------------
def test_a_strategy_the_operator_paused_still_exits_at_its_stop_loss():
    desk = Desk(stop_loss_pct=1)
    desk.hold()  # long 10 at 100.00, stop 99.00
    desk.engine.set_paused("mom", True, "no new entries today")

    signals = desk.ticks(99_50, 98_00, 95_00)

    assert [(s.side, s.quantity) for s in signals] == [(SELL, 10)]


def test_a_strategy_the_operator_paused_still_moves_its_working_limit_exit_to_a_stop_reached():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    desk.update("exit-1", SELL, OPEN, limit=100_50)  # the indicators' exit, resting above
    desk.engine.set_paused("mom", True)

    desk.ticks(98_95)

    assert [(c.request.order_id, c.request.price_paise) for c in desk.engine.orders.take_changes()] == [
        ("exit-1", 98_95)]


def test_a_strategy_paused_because_its_positions_could_not_be_restored_sends_not_even_its_stop():
    """What it holds is not what it thinks: an exit of its 10 could open a short."""
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    desk.engine.set_paused("mom", True, f"{NOT_RESTORED}: a square-off between two fills",
                           by=strategy_pb2.PAUSED_BY_NEOPULSE)

    assert desk.ticks(98_00, 95_00) == []


async def test_a_strategy_whose_positions_cannot_be_restored_is_paused_to_send_nothing_over_an_operators_pause(
        monkeypatch):
    """An operator's pause put back from before the restart (exits go) gives way to NeoPulse's (nothing goes)."""
    oms = await orders_filling_the_read(monkeypatch)
    state = MemoryStrategyState()
    state.saved["mom"] = {"paused": True, "paused_by": "PAUSED_BY_OPERATOR", "pause_reason": "lunch"}
    bus = Bus()
    module = StrategyModule(bus, cfg.load(StrategySettings, {"strategy": {"strategies": [
        {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"]}]}}), ManualClock(TODAY + 3600 * NS),
        state=state)

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())
    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_ORDERS, OrderService(bus, None, SimpleNamespace(ledger=oms.ledger)).list_orders)
    bus_task = asyncio.create_task(bus.run())
    try:
        await module.start()
    finally:
        bus_task.cancel()
        await asyncio.gather(bus_task, return_exceptions=True)

    strategy = module.engine.strategies["mom"]
    assert (sends_nothing(strategy), strategy.paused_by) == (True, strategy_pb2.PAUSED_BY_NEOPULSE)


async def test_a_strategy_the_operator_paused_sends_at_once_the_exit_new_params_call_for():
    h = Harness()
    tasks = [asyncio.create_task(h.bus.run())]
    try:
        await h.module.start()
        await h.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)  # mom buys 1
        await h.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
        await h.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom"))

        await h.bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
            name="mom", params={"entry_long_rsi": "80", "exit_long_rsi": "70"}))  # RSI 66.7: under the new exit
        assert await h.bus.drain()

        assert [(s.side, s.quantity) for s in h.signals] == [(trading_pb2.SIDE_BUY, 1), (trading_pb2.SIDE_SELL, 1)]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- a control whose caller gives up is carried out ----------------------------------------------------------------
@pytest.fixture
async def slow_harness():
    h = Harness()
    h.module.state_store = SlowState()
    tasks = [asyncio.create_task(h.bus.run())]
    await h.module.start()
    tasks.append(asyncio.create_task(h.module.run()))
    yield h
    for task in reversed(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_pause_whose_caller_gives_up_during_the_save_is_saved_still(slow_harness):
    h = slow_harness
    h.module.state_store.slow_s = 0.3

    with pytest.raises(TimeoutError):  # a gRPC deadline, Telegram's timeout
        await asyncio.wait_for(h.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(
            name="mom", reason="lunch")), 0.05)
    assert await h.bus.drain()

    assert h.module.state_store.saved["mom"]["pause_reason"] == "lunch"


async def test_new_params_whose_caller_gives_up_during_the_save_send_the_exit_they_call_for(slow_harness):
    h = slow_harness
    await h.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)  # mom buys 1
    await h.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    assert await h.bus.drain()
    h.module.state_store.slow_s = 0.3

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(h.bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
            name="mom", params={"entry_long_rsi": "80", "exit_long_rsi": "70"})), 0.05)
    assert await h.bus.drain()

    assert ([(s.side, s.quantity) for s in h.signals], h.module.state_store.saved["mom"]["params"].keys()) == (
        [(trading_pb2.SIDE_BUY, 1), (trading_pb2.SIDE_SELL, 1)], {"entry_long_rsi", "exit_long_rsi"})


# -- signals are numbered in the order they go out ----------------------------------------------------------------
RELIANCE_CLIMB = [1300_00, 1287_00, 1274_00, 1261_00, 1248_00, 1300_00]
TWO = {"strategy": {"close_check_ms": 10, "close_grace_ms": 0, "strategies": [
    {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "params": {"rsi_period": 3, "ema_period": 3}},
    {"name": "mom2", "kind": "MOMENTUM_RSI", "symbols": ["RELIANCE-EQ"],
     "params": {"rsi_period": 3, "ema_period": 3}}]}}
SIGNALS = rpc.method("StrategyService", "StreamSignals")


def minutes(token, closes):
    out = [market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=T0915 + i * 60 * NS + 5 * NS,
                           ltp_paise=p, ltq=10, recv_ns=1) for i, p in enumerate(closes)]
    out.append(market_pb2.Tick(token=token, exchange_segment="nse_cm", ltp_paise=closes[-1], ltq=1,
                               ts_ns=T0915 + len(closes) * 60 * NS, recv_ns=2))
    return market_pb2.TickBatch(ticks=out)


async def test_an_exit_new_params_call_for_reaches_risks_process_in_split_mode_while_other_signals_go_out():
    """mom's exit is made before the slow save, mom2's buy during it: over StreamSignals both arrive."""
    bus, remote, state = Bus(), Bus(), SlowState()
    module = StrategyModule(bus, cfg.load(StrategySettings, TWO), ManualClock(T0915), state=state)

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())
    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    local: list[trading_pb2.Signal] = []
    arrived: list[trading_pb2.Signal] = []

    async def on_local(signal):
        local.append(signal)

    async def on_remote(signal):
        arrived.append(signal)
    bus.subscribe(Topic.SIGNALS, "test", on_local)
    remote.subscribe(Topic.SIGNALS, "risk", on_remote)
    server = GrpcServer(bus, ["StrategyService"], GrpcSettings(), port=0)  # the strategy process's
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(remote.run())]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{await server.start()}")
    try:
        await module.start()
        server.set_all_serving()
        tasks.append(asyncio.create_task(module.run()))
        bridge = StreamBridge(remote, channel, SIGNALS)  # risk's process: StreamSignals -> its bus
        tasks.append(asyncio.create_task(bridge.run()))
        await asyncio.wait_for(bridge.connected.wait(), 10)
        bus.publish_nowait(Topic.TICKS, minutes(SBIN, FALLING_THEN_JUMP))  # mom buys SBIN
        await eventually(lambda: len(local) == 1, 5)
        await bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
        assert await bus.drain()
        state.slow_s = 0.3

        change = asyncio.create_task(bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
            name="mom", params={"entry_long_rsi": "80", "exit_long_rsi": "70"})))
        await asyncio.sleep(0.05)
        bus.publish_nowait(Topic.TICKS, minutes(RELIANCE, RELIANCE_CLIMB))  # meanwhile mom2 buys RELIANCE
        await change
        assert await bus.drain()
        await eventually(lambda: len(arrived) == 3, 5)

        assert sorted((s.strategy, s.side) for s in arrived) == [
            ("mom", trading_pb2.SIDE_BUY), ("mom", trading_pb2.SIDE_SELL), ("mom2", trading_pb2.SIDE_BUY)]
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop(0)
        await channel.close()


async def test_signals_are_numbered_in_the_order_they_are_published(harness_two):
    """mom's exit is made by new params, mom2's buy by the ticks while the params are saved (0.3 s): whichever goes
    out first, each signal's sequence is above the one published before it."""
    bus, module, local = harness_two
    bus.publish_nowait(Topic.TICKS, minutes(SBIN, FALLING_THEN_JUMP))
    await eventually(lambda: len(local) == 1, 5)
    await bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    assert await bus.drain()
    module.state_store.slow_s = 0.3

    change = asyncio.create_task(bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
        name="mom", params={"entry_long_rsi": "80", "exit_long_rsi": "70"})))
    await asyncio.sleep(0.05)
    bus.publish_nowait(Topic.TICKS, minutes(RELIANCE, RELIANCE_CLIMB))
    await change
    assert await bus.drain()

    sequences = [s.sequence for s in local]
    assert len(sequences) == 3 and sequences == sorted(set(sequences))


@pytest.fixture
async def harness_two():
    bus = Bus()
    module = StrategyModule(bus, cfg.load(StrategySettings, TWO), ManualClock(T0915), state=SlowState())
    local: list[trading_pb2.Signal] = []

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def on_local(signal):
        local.append(signal)
    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.subscribe(Topic.SIGNALS, "test", on_local)
    tasks = [asyncio.create_task(bus.run())]
    await module.start()
    tasks.append(asyncio.create_task(module.run()))
    yield bus, module, local
    for task in reversed(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
