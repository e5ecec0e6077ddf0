"""The strategy module on a real Bus: ticks in -> candles and signals out; control requests; order updates."""

import asyncio
from datetime import date

import pytest

from services.oms.engine import OrderStateError
from services.strategy.config import StrategySettings
from services.strategy.engine import NOT_RESTORED
from services.strategy.module import StrategyModule
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, strategy_pb2, trading_pb2
from shared.errors import InvalidInput, NotFound
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN = 3045
# With rsi_period = ema_period = 3 the sixth close (100) lifts RSI from 0 to 66.7 across 60, above the EMA.
FALLING_THEN_JUMP = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]
SETTINGS = {"strategy": {"close_check_ms": 10, "close_grace_ms": 0, "strategies": [
    {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "params": {"rsi_period": 3, "ema_period": 3}}],
    "cancel_working_after_s": 60}}


def ticks(closes, start_minute=0, closer_recv_ns=424242):
    """One tick per minute at :05 with the given prices, then a tick of the next minute that closes the last."""
    out = [market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + (start_minute + i) * 60 * NS + 5 * NS,
                           ltp_paise=p, ltq=10, recv_ns=1) for i, p in enumerate(closes)]
    out.append(market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ltp_paise=closes[-1], ltq=1,
                               ts_ns=T0915 + (start_minute + len(closes)) * 60 * NS, recv_ns=closer_recv_ns))
    return market_pb2.TickBatch(ticks=out)


class Harness:
    def __init__(self):
        self.bus = Bus()
        self.clock = ManualClock(T0915)  # the timer closes nothing until a test moves the clock
        self.candles: list[market_pb2.Candle] = []
        self.signals: list[trading_pb2.Signal] = []
        self.module = StrategyModule(self.bus, cfg.load(StrategySettings, SETTINGS), self.clock)

        async def list_instruments(request):
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

        async def on_candles(batch):
            self.candles.extend(batch.candles)

        async def on_signal(signal):
            self.signals.append(signal)

        self.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        self.bus.subscribe(Topic.CANDLES, "test", on_candles)
        self.bus.subscribe(Topic.SIGNALS, "test", on_signal)

    async def feed(self, batch, candles_expected):
        before = len(self.candles)
        self.bus.publish_nowait(Topic.TICKS, batch)
        await until(lambda: len(self.candles) >= before + candles_expected)
        assert await self.bus.drain()

    @property
    def strategy(self):
        return self.module.engine.strategies["mom"]


@pytest.fixture
async def harness():
    h = Harness()
    bus_task = asyncio.create_task(h.bus.run())
    await h.module.start()
    run_task = asyncio.create_task(h.module.run())
    yield h
    for task in (run_task, bus_task):
        task.cancel()
    await asyncio.gather(run_task, bus_task, return_exceptions=True)


async def test_ticks_in_give_candles_and_a_buy_signal_out(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    assert [(c.start_ns, c.close_paise, c.volume, c.symbol) for c in harness.candles] == [
        (T0915 + i * 60 * NS, p, 10, "SBIN-EQ") for i, p in enumerate(FALLING_THEN_JUMP)]
    (signal,) = harness.signals
    assert (signal.signal_id, signal.strategy, signal.token, signal.symbol, signal.exchange_segment) == (
        f"mom-{SBIN}-{T0915 + 5 * 60 * NS}-BUY", "mom", SBIN, "SBIN-EQ", "nse_cm")
    assert (signal.side, signal.quantity, signal.order_type, signal.limit_price_paise, signal.product) == (
        trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_LIMIT, 100_05, trading_pb2.PRODUCT_MIS)  # 0.05% over the close
    assert (signal.tick_recv_ns, signal.ts_ns) == (424242, harness.clock.now_ns())
    assert signal.sequence > 0


async def test_the_timer_closes_a_quiet_candle_when_the_clock_passes_its_minute(harness):
    tick = market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + 20 * 60 * NS, ltp_paise=81000, ltq=3)
    harness.clock.set(T0915 + 20 * 60 * NS + 30 * NS)
    harness.bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[tick]))
    await until(lambda: harness.module.engine.candles.open_candle(SBIN) is not None)
    assert harness.candles == []
    harness.clock.set(T0915 + 21 * 60 * NS)
    await until(lambda: len(harness.candles) == 1)
    assert (harness.candles[0].start_ns, harness.candles[0].close_paise) == (T0915 + 20 * 60 * NS, 81000)


async def test_a_paused_strategy_emits_nothing_but_keeps_its_indicators_warm(harness):
    reply = await harness.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom"))
    assert reply.strategy.paused
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    assert harness.signals == []
    reply = await harness.bus.call(rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name="mom"))
    assert not reply.strategy.paused
    # Warm already: a dip (RSI 53.3) and a jump (RSI 78.8) cross 60 at once, with no new warm-up.
    await harness.feed(ticks([99_00, 103_00], start_minute=6), candles_expected=2)
    assert [(s.side, s.limit_price_paise) for s in harness.signals] == [(trading_pb2.SIDE_BUY, 103_05)]


async def test_list_strategies_says_an_operator_paused_a_strategy_when_and_why(harness):
    harness.clock.set(T0915 + 90 * NS)
    await harness.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom",
                                                                               reason="telegram:42 /pause"))

    (info,) = (await harness.bus.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())).strategies

    assert (info.paused, info.paused_by, info.pause_reason, info.paused_at_ns) == (
        True, strategy_pb2.PAUSED_BY_OPERATOR, "telegram:42 /pause", T0915 + 90 * NS)


async def test_a_pause_without_a_reason_is_listed_as_the_operators(harness):
    await harness.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom"))

    (info,) = (await harness.bus.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())).strategies

    assert (info.paused_by, info.pause_reason) == (strategy_pb2.PAUSED_BY_OPERATOR, "no reason given")


async def test_resume_clears_why_who_and_when(harness):
    await harness.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom", reason="lunch"))

    reply = await harness.bus.call(rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name="mom"))

    assert (reply.strategy.paused, reply.strategy.pause_reason, reply.strategy.paused_by,
            reply.strategy.paused_at_ns) == (False, "", strategy_pb2.PAUSED_BY_UNSPECIFIED, 0)


async def test_a_pause_reason_longer_than_the_limit_is_refused_naming_the_field(harness):
    with pytest.raises(InvalidInput) as err:
        await harness.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom", reason="x" * 501))

    assert err.value.field == "reason"
    assert not harness.strategy.paused


async def test_list_strategies_shows_kind_state_params_and_tokens(harness):
    reply = await harness.bus.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())
    (info,) = reply.strategies
    assert (info.name, info.kind, info.paused, list(info.tokens), info.signals_emitted) == (
        "mom", "MOMENTUM_RSI", False, [SBIN], 0)
    assert (info.params["rsi_period"], info.params["entry_long_rsi"], info.params["order_type"]) == (
        "3", "60.0", "LIMIT")


async def test_set_params_applies_and_changes_what_the_strategy_does(harness):
    request = strategy_pb2.SetStrategyParamsRequest(name="mom", params={"entry_long_rsi": "70"})
    reply = await harness.bus.call(rpc.SET_STRATEGY_PARAMS, request)
    assert reply.strategy.params["entry_long_rsi"] == "70.0"
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    assert harness.signals == []  # RSI 66.7 no longer crosses the entry level


async def test_set_params_with_one_bad_value_applies_nothing_and_names_the_param(harness):
    request = strategy_pb2.SetStrategyParamsRequest(name="mom", params={"entry_long_rsi": "70", "rsi_period": "x"})
    with pytest.raises(InvalidInput) as err:
        await harness.bus.call(rpc.SET_STRATEGY_PARAMS, request)
    assert err.value.field == "params.rsi_period"
    assert harness.strategy.params.entry_long_rsi == 60.0


async def test_set_params_refuses_an_unknown_param_and_thresholds_out_of_order(harness):
    with pytest.raises(InvalidInput, match=r"params\.rsi_periods: unknown parameter"):
        await harness.bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
            name="mom", params={"rsi_periods": "5"}))
    with pytest.raises(InvalidInput, match="exit_long_rsi must be below entry_long_rsi"):
        await harness.bus.call(rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
            name="mom", params={"exit_long_rsi": "65"}))


async def test_an_unknown_strategy_name_is_not_found_for_every_control_request(harness):
    for method, request in [(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="nope")),
                            (rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name="nope")),
                            (rpc.SET_STRATEGY_PARAMS, strategy_pb2.SetStrategyParamsRequest(
                                name="nope", params={"quantity": "2"}))]:
        with pytest.raises(NotFound, match="no strategy named 'nope'; configured: mom"):
            await harness.bus.call(method, request)


def update(sequence, tag="mom", side=trading_pb2.SIDE_BUY, qty=1):
    return trading_pb2.OrderUpdate(
        sequence=sequence, status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=qty,
        request=trading_pb2.OrderRequest(token=SBIN, side=side, strategy_tag=tag))


async def test_its_own_fills_move_the_position_and_repeats_and_other_tags_do_not(harness):
    for u in (update(5), update(5), update(4), update(6, tag="other"), update(7, qty=2)):
        await harness.bus.publish(Topic.ORDER_UPDATES, u)
    assert await harness.bus.drain()
    assert harness.strategy.position(SBIN) == 3


async def test_a_long_position_is_exited_with_a_sell_of_its_size(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await harness.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    await harness.feed(ticks([95_00], start_minute=6), candles_expected=1)
    assert [(s.side, s.quantity) for s in harness.signals] == [(trading_pb2.SIDE_BUY, 1), (trading_pb2.SIDE_SELL, 1)]


async def test_a_tick_past_the_stop_loss_sends_the_exit_before_its_minute_closes(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await set_params(harness, stop_loss_pct=1)
    fill_at_100 = update(1, qty=1)
    fill_at_100.last_fill_price_paise = 100_00
    await harness.bus.publish(Topic.ORDER_UPDATES, fill_at_100)
    assert await harness.bus.drain()
    closes_before = len(harness.candles)

    harness.bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + 6 * 60 * NS + 30 * NS, ltp_paise=98_90, ltq=1)]))
    await until(lambda: len(harness.signals) == 2)

    exit_ = harness.signals[1]
    assert (exit_.side, exit_.quantity, exit_.order_type, exit_.reason) == (
        trading_pb2.SIDE_SELL, 1, trading_pb2.ORDER_TYPE_MARKET,
        "stop loss 1%: tick ₹98.90, 1.10% under the entry ₹100.00")
    assert len(harness.candles) == closes_before  # 09:21's candle is still open


async def set_params(harness, **params):
    request = strategy_pb2.SetStrategyParamsRequest(name="mom", params={k: str(v) for k, v in params.items()})
    reply = await harness.bus.call(rpc.SET_STRATEGY_PARAMS, request)
    assert await harness.bus.drain()
    return reply.strategy


async def test_after_a_period_change_the_next_candle_can_exit_a_long_position(harness):
    """The period change used to discard the indicators: RSI(4) needed five new candles, and until then the
    strategy checked no exit however far the price fell. Now they are warmed up again from the closes kept."""
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await harness.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    await set_params(harness, rsi_period=4)

    await harness.feed(ticks([95_00], start_minute=6), candles_expected=1)

    assert [(s.side, s.quantity) for s in harness.signals] == [(trading_pb2.SIDE_BUY, 1), (trading_pb2.SIDE_SELL, 1)]


async def test_a_period_change_sends_at_once_the_exit_the_warmed_up_indicators_call_for(harness):
    """Long after the jump to 100 (above EMA(3) 98.5); EMA(10) over the same closes is 101.6: the close is below it."""
    await harness.feed(ticks([110_00, 108_00, 106_00, 104_00, 102_00, *FALLING_THEN_JUMP]), candles_expected=11)
    await harness.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    assert await harness.bus.drain()
    harness.clock.set(T0915 + 11 * 60 * NS + 7 * NS)  # in the open minute 11: the timer closes nothing

    await set_params(harness, ema_period=10)

    _, sell = harness.signals
    assert (sell.side, sell.quantity, sell.limit_price_paise, sell.signal_id) == (
        trading_pb2.SIDE_SELL, 1, 99_95, f"mom-{SBIN}-{T0915 + 11 * 60 * NS + 7 * NS}-SELL")
    assert sell.reason.startswith("exit long") and "EMA ₹101.64" in sell.reason


async def test_a_threshold_change_also_sends_at_once_the_exit_it_calls_for(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await harness.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    assert await harness.bus.drain()

    await set_params(harness, entry_long_rsi=80, exit_long_rsi=70)  # RSI 66.7 is below the new exit level

    assert [(s.side, s.quantity) for s in harness.signals] == [(trading_pb2.SIDE_BUY, 1), (trading_pb2.SIDE_SELL, 1)]


async def test_a_strategy_paused_to_send_nothing_sends_no_exit_on_new_params(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await harness.bus.publish(Topic.ORDER_UPDATES, update(1, qty=1))
    harness.module.engine.set_paused("mom", True, f"{NOT_RESTORED}: ...", by=strategy_pb2.PAUSED_BY_NEOPULSE)

    await set_params(harness, entry_long_rsi=80, exit_long_rsi=70)

    assert [s.side for s in harness.signals] == [trading_pb2.SIDE_BUY]


async def test_a_period_change_never_sends_an_entry_the_replayed_closes_call_for(harness):
    await set_params(harness, rsi_period=4)
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)  # RSI(4) 57.1: no cross of 60

    await set_params(harness, rsi_period=3)  # RSI(3) over the same closes crosses 60 at the last one

    assert harness.signals == []
    await harness.feed(ticks([99_00, 103_00], start_minute=6), candles_expected=2)  # warm: a new cross enters
    assert [(s.side, s.limit_price_paise) for s in harness.signals] == [(trading_pb2.SIDE_BUY, 103_05)]


async def test_a_rejected_signal_frees_its_token_at_once(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    (signal,) = harness.signals
    assert harness.strategy.is_pending(SBIN, harness.clock.now_ns())
    rejection = trading_pb2.RiskDecision(accepted=False, reason_code="PRICE_BAND", strategy="mom",
                                         signal_id=signal.signal_id,
                                         order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="mom"))
    await harness.bus.publish(Topic.ORDERS, rejection)
    assert await harness.bus.drain()
    assert not harness.strategy.is_pending(SBIN, harness.clock.now_ns())


async def test_a_duplicate_rejection_leaves_the_original_order_pending(harness):
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    duplicate = trading_pb2.RiskDecision(accepted=False, reason_code="DUPLICATE_ORDER", strategy="mom",
                                         order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="mom"))
    await harness.bus.publish(Topic.ORDERS, duplicate)
    assert await harness.bus.drain()
    assert harness.strategy.is_pending(SBIN, harness.clock.now_ns())


async def test_a_restarted_strategy_gets_back_its_position_and_working_order_from_the_oms():
    """Taking itself for flat it would enter again and never exit what it holds."""
    from shared.contracts import oms_pb2

    h = Harness()
    bought = trading_pb2.OrderUpdate(
        client_order_id="c-1", status=trading_pb2.ORDER_STATUS_TRADED, sequence=5, filled_quantity=10, ts_ns=T0915,
        request=trading_pb2.OrderRequest(client_order_id="c-1", token=SBIN, side=trading_pb2.SIDE_BUY, quantity=10,
                                         strategy_tag="mom"))
    exiting = trading_pb2.OrderUpdate(
        client_order_id="c-2", status=trading_pb2.ORDER_STATUS_OPEN, sequence=6, ts_ns=T0915,
        request=trading_pb2.OrderRequest(client_order_id="c-2", token=SBIN, side=trading_pb2.SIDE_SELL, quantity=10,
                                         strategy_tag="mom"))

    async def list_orders(request):
        return oms_pb2.ListOrdersResponse(orders=[exiting, bought])

    h.bus.handle(rpc.LIST_ORDERS, list_orders)
    await h.module.start()
    strategy = h.module.engine.strategies["mom"]
    delivered_again = trading_pb2.OrderUpdate()
    delivered_again.CopyFrom(bought)
    delivered_again.last_fill_quantity = 10
    h.module.engine.on_order_update(delivered_again)  # a gated split-mode bridge delivers it after start()

    assert strategy.position(SBIN) == 10
    assert strategy.is_pending(SBIN, T0915 + 3600 * NS)  # its exit is working: no new signal for SBIN


async def test_a_fill_the_oms_publishes_while_the_strategy_reads_its_orders_is_not_lost():
    """Monolith: the OMS runs while the strategy starts; a fill published during its ListOrders read (which may
    wait on the ledger) would never reach the strategy, which would then take itself for flat."""
    h = Harness()
    meanwhile = update(7, qty=4)

    async def list_orders(request):
        await h.bus.publish(Topic.ORDER_UPDATES, meanwhile)
        await asyncio.sleep(0.01)
        return oms_pb2.ListOrdersResponse(orders=[])

    h.bus.handle(rpc.LIST_ORDERS, list_orders)
    bus_task = asyncio.create_task(h.bus.run())
    try:
        await asyncio.sleep(0)
        await h.module.start()
        assert await h.bus.drain()
    finally:
        bus_task.cancel()
        await asyncio.gather(bus_task, return_exceptions=True)

    assert h.strategy.position(SBIN) == 4


def working(sequence, status=trading_pb2.ORDER_STATUS_OPEN, filled=0, coid="c-work", last_fill=0, by_hand=False):
    return trading_pb2.OrderUpdate(
        sequence=sequence, internal_id=f"i-{coid}", client_order_id=coid, status=status, filled_quantity=filled,
        changed_by_hand=by_hand,
        last_fill_quantity=last_fill, request=trading_pb2.OrderRequest(client_order_id=coid, token=SBIN, quantity=2,
                                                                    side=trading_pb2.SIDE_BUY, strategy_tag="mom"))


def cancels_to(harness, refuse_first=0):
    """An OMS stand-in for CancelOrder: notes each request; refuses the first `refuse_first` as not yet cancellable."""
    asked = []

    async def cancel(request):
        asked.append(request.order_id)
        if len(asked) <= refuse_first:
            raise OrderStateError(f"order {request.order_id} is SUBMITTED and cannot be cancelled yet")
        return oms_pb2.CancelOrderResponse()

    harness.bus.handle(rpc.CANCEL_ORDER, cancel)
    return asked


async def test_a_partly_filled_entry_left_working_is_cancelled_and_the_strategy_can_exit_what_filled(harness):
    """A limit entry the market left behind blocks its strategy: no new entry, and no exit for the part that
    filled. Past cancel_working_after_s it is cancelled; then the exit goes out for what was bought."""
    asked = cancels_to(harness)
    await harness.feed(ticks(FALLING_THEN_JUMP), candles_expected=6)
    await harness.bus.publish(Topic.ORDER_UPDATES, working(1, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, filled=1,
                                                                    last_fill=1))
    assert await harness.bus.drain()
    harness.clock.advance(59)
    await asyncio.sleep(0.05)
    assert asked == []

    harness.clock.advance(2)
    await until(lambda: asked == ["i-c-work"])
    await harness.bus.publish(Topic.ORDER_UPDATES, working(2, trading_pb2.ORDER_STATUS_CANCELLED, filled=1))
    await harness.feed(ticks([95_00], start_minute=7), candles_expected=1)

    assert [(s.side, s.quantity) for s in harness.signals][-1] == (trading_pb2.SIDE_SELL, 1)
    await asyncio.sleep(0.05)
    assert asked == ["i-c-work"]  # once


async def test_a_refused_cancel_of_a_stale_order_is_asked_again_later_and_a_finished_one_never(harness):
    asked = cancels_to(harness, refuse_first=1)
    await harness.bus.publish(Topic.ORDER_UPDATES, working(1))
    await harness.bus.publish(Topic.ORDER_UPDATES, working(2, coid="c-done"))
    await harness.bus.publish(Topic.ORDER_UPDATES, working(3, trading_pb2.ORDER_STATUS_TRADED, filled=2,
                                                            coid="c-done", last_fill=2))
    assert await harness.bus.drain()
    harness.clock.advance(61)
    await until(lambda: asked == ["i-c-work"])

    harness.clock.advance(11)

    await until(lambda: asked == ["i-c-work", "i-c-work"])


async def test_an_order_a_trader_changed_is_not_cancelled_as_stale(harness):
    """The trader took it over (moved its price by hand): it works as long as they want, not cancelled
    cancel_working_after_s after its strategy placed it; an order of the strategy's own is still cancelled."""
    asked = cancels_to(harness)
    await harness.bus.publish(Topic.ORDER_UPDATES, working(1, coid="c-taken"))
    await harness.bus.publish(Topic.ORDER_UPDATES, working(2, coid="c-own"))
    await harness.bus.publish(Topic.ORDER_UPDATES, working(3, coid="c-taken", by_hand=True))
    assert await harness.bus.drain()

    harness.clock.advance(61)

    await until(lambda: asked == ["i-c-own"])
    harness.clock.advance(120)
    await asyncio.sleep(0.05)
    assert asked.count("i-c-taken") == 0


async def test_a_stale_order_is_cancelled_after_the_signals_already_queued(harness):
    """Stale orders come due together, often at a minute's close: their cancels (each a call into the OMS) must
    not hold up the signals of that close on their way to risk."""
    handled = []
    asked = cancels_to(harness)

    async def risk(signal):
        handled.append(f"signal {signal.signal_id}")

    harness.bus.subscribe(Topic.SIGNALS, "risk", risk)
    await asyncio.sleep(0)
    await harness.bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="s-1"))

    await harness.module._cancel_stale("i-stale")
    handled.extend(f"cancel {order_id}" for order_id in asked)

    assert handled == ["signal s-1", "cancel i-stale"]
