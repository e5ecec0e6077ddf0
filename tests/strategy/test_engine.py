"""The engine's plugin hooks: per-tick plugins, paused plugins, symbol filters."""

from datetime import date

import pytest
from pydantic import BaseModel, ConfigDict

from services.strategy.engine import StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from services.strategy.plugins import Decision, OrderChange, OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, oms_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN, TCS = 3045, 11536


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuyEveryTick(Strategy):
    """A test plugin: wants every tick, buys one share on each, ignores candles."""

    kind = "BUY_EVERY_TICK"
    Params = NoParams

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[OrderIntent]:
        return []

    def on_tick(self, tick: market_pb2.Tick, ctx: StrategyContext) -> list[OrderIntent]:
        return [OrderIntent(tick.token, trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)]


def engine_with(*strategies):
    return StrategyEngine(list(strategies), InstrumentBook(nse_instruments()), ManualClock(T0915))


def tick(token, recv_ns=0):
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=T0915 + NS, ltp_paise=100_00, ltq=1,
                           recv_ns=recv_ns)


def test_a_plugin_with_on_tick_gets_every_tick_of_its_tokens():
    engine = engine_with(BuyEveryTick("every", NoParams(), frozenset({SBIN})))
    _, signals = engine.on_ticks([tick(SBIN, recv_ns=99), tick(TCS)])
    assert [(s.signal_id, s.symbol, s.order_type, s.tick_recv_ns) for s in signals] == [
        (f"every-{SBIN}-{T0915 + NS}-BUY", "SBIN-EQ", trading_pb2.ORDER_TYPE_MARKET, 99)]


def test_a_paused_plugin_sends_nothing():
    strategy = BuyEveryTick("every", NoParams())
    strategy.paused = True
    _, signals = engine_with(strategy).on_ticks([tick(SBIN)])
    assert signals == []
    assert strategy.signals_emitted == 0


def test_a_plugin_that_raises_does_not_stop_candles_or_other_strategies():
    class Broken(Strategy):
        kind = "BROKEN"
        Params = NoParams

        def on_candle(self, candle, ctx):
            raise RuntimeError("bug in a plugin")

    healthy = MomentumRsi("healthy", MomentumRsiParams())
    engine = engine_with(Broken("broken", NoParams()), healthy)
    candles, _ = engine.on_ticks([tick(SBIN), market_pb2.Tick(token=SBIN, ts_ns=T0915 + 60 * NS, ltp_paise=1)])
    assert [c.token for c in candles] == [SBIN]
    assert healthy._state[SBIN].rsi._prev == 100_00


def test_a_plugin_whose_intent_is_no_signal_loses_it_and_stops_nothing_else():
    """A float quantity (budget / price) makes no protobuf Signal: the intent is dropped, said in the log, and the
    strategies after it still get their candles and send their signals."""
    class FloatQuantity(Strategy):
        kind = "FLOAT_QUANTITY"
        Params = NoParams

        def on_candle(self, candle, ctx):
            return [OrderIntent(candle.token, trading_pb2.SIDE_BUY, 25_000 / 1_290, trading_pb2.ORDER_TYPE_MARKET),
                    OrderIntent(candle.token, trading_pb2.SIDE_BUY, 19, trading_pb2.ORDER_TYPE_MARKET)]

    healthy = BuyOnFirstTickAndEachCandle("healthy", NoParams())
    engine = engine_with(FloatQuantity("floats", NoParams()), healthy)
    healthy.ticked = True
    closer = market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + 60 * NS, ltp_paise=100_00, ltq=1)

    _, signals = engine.on_ticks([tick(SBIN), closer])

    assert [(s.strategy, s.quantity) for s in signals] == [("floats", 19), ("healthy", 1)]


def filled(tag: str, side: int, quantity: int, sequence: int) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(
        client_order_id=f"{tag}-{sequence}", status=trading_pb2.ORDER_STATUS_TRADED, sequence=sequence,
        filled_quantity=quantity, last_fill_quantity=quantity, last_fill_price_paise=800_00,
        request=trading_pb2.OrderRequest(client_order_id=f"{tag}-{sequence}", token=SBIN, side=side,
                                         quantity=quantity, strategy_tag=tag))


def test_a_square_off_fill_closes_the_position_the_strategies_held_for_it():
    """Risk's intraday square-off trades under its own tag: the strategies it closed for must see it, or their
    next exit signal (SELL 'the long') would open a short."""
    first, second = (MomentumRsi(name, MomentumRsiParams(), frozenset({SBIN})) for name in ("rsi-a", "rsi-b"))
    engine = engine_with(first, second)
    engine.on_order_update(filled("rsi-a", trading_pb2.SIDE_BUY, 10, 1))
    engine.on_order_update(filled("rsi-b", trading_pb2.SIDE_BUY, 5, 2))

    engine.on_order_update(filled("SQUAREOFF", trading_pb2.SIDE_SELL, 12, 3))

    assert (first.position(SBIN), second.position(SBIN)) == (0, 3)


M = 60 * NS


class Market:
    """Drives one engine with MOMENTUM_RSI on SBIN, one candle per call, and stamps order updates."""

    def __init__(self):
        self.strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3), frozenset({SBIN}))
        self.engine = engine_with(self.strategy)
        self.minute = self.sequence = 0

    def candle(self, price):
        start = T0915 + self.minute * M
        self.minute += 1
        _, signals = self.engine.on_ticks([
            market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=start + NS, ltp_paise=price, ltq=1),
            market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=start + M, ltp_paise=price, ltq=1)])
        return signals

    def update(self, coid, side, status, fill=0, reason_code=""):
        self.sequence += 1
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            internal_id=f"i-{coid}", client_order_id=coid, status=status, sequence=self.sequence,
            last_fill_quantity=fill, filled_quantity=fill, reason_code=reason_code,
            request=trading_pb2.OrderRequest(client_order_id=coid, token=SBIN, side=side, quantity=10,
                                             strategy_tag="mom", product=trading_pb2.PRODUCT_MIS)))

    def long_10_with_exit_given_up(self):
        for price in (100_00, 101_00, 102_00, 103_00, 104_00):
            self.candle(price)
        self.update("entry", trading_pb2.SIDE_BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10)
        (exit_signal,) = self.candle(99_00)  # close below the EMA: exit the long
        self.update("exit-1", trading_pb2.SIDE_SELL, trading_pb2.ORDER_STATUS_PENDING_NEW)
        self.update("exit-1", trading_pb2.SIDE_SELL, trading_pb2.ORDER_STATUS_REJECTED, reason_code="OUTCOME_UNKNOWN")
        return exit_signal


def test_an_exit_of_unknown_outcome_keeps_its_token_blocked_until_the_oms_adopts_it(caplog):
    market = Market()
    market.long_10_with_exit_given_up()

    assert market.candle(98_00) == []  # no second exit while the first may be live at the broker
    market.update("exit-1", trading_pb2.SIDE_SELL, trading_pb2.ORDER_STATUS_TRADED, fill=10, reason_code="ADOPTED")

    assert market.strategy.position(SBIN) == 0
    assert not market.strategy.is_pending(SBIN, T0915 + 3600 * NS)
    assert [r.order_id for r in caplog.records if r.levelname == "WARNING"] == ["exit-1"]


def test_an_operator_resume_releases_a_token_blocked_by_an_order_of_unknown_outcome():
    market = Market()
    market.long_10_with_exit_given_up()

    market.engine.set_paused("mom", True)
    market.engine.set_paused("mom", False)

    assert [(s.side, s.quantity) for s in market.candle(98_00)] == [(trading_pb2.SIDE_SELL, 10)]


def test_a_restart_keeps_the_token_of_an_order_of_unknown_outcome_blocked():
    market = Market()
    given_up = trading_pb2.OrderUpdate(
        internal_id="i-x", client_order_id="x", status=trading_pb2.ORDER_STATUS_REJECTED, sequence=3,
        reason_code="OUTCOME_UNKNOWN", request=trading_pb2.OrderRequest(
            client_order_id="x", token=SBIN, side=trading_pb2.SIDE_SELL, quantity=10, strategy_tag="mom"))

    market.engine.load_orders([given_up])

    assert market.strategy.is_pending(SBIN, T0915 + 3600 * NS)


def accepted(signal):
    return trading_pb2.RiskDecision(accepted=True, strategy=signal.strategy, signal_id=signal.signal_id,
                                    order=trading_pb2.OrderRequest(token=signal.token, side=signal.side,
                                                                   quantity=signal.quantity))


def long_10_with_an_exit_signal(market):
    for price in (100_00, 101_00, 102_00, 103_00, 104_00):
        market.candle(price)
    market.update("entry", trading_pb2.SIDE_BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10)
    (exit_signal,) = market.candle(99_00)
    return exit_signal


def test_an_exit_risk_accepted_does_not_expire_while_its_order_is_not_yet_in_the_oms():
    market = Market()
    market.engine.on_decision(accepted(long_10_with_an_exit_signal(market)))

    later = [market.candle(price) for price in (98_00, 97_00, 96_00, 95_00, 94_00)]  # 5 minutes > pending expiry

    assert later == [[]] * 5


def test_an_accepted_exit_not_sent_by_the_oms_frees_its_token():
    market = Market()
    market.engine.on_decision(accepted(long_10_with_an_exit_signal(market)))

    market.update("exit-1", trading_pb2.SIDE_SELL, trading_pb2.ORDER_STATUS_REJECTED, reason_code="NOT_SENT")

    assert [(s.side, s.quantity) for s in market.candle(98_00)] == [(trading_pb2.SIDE_SELL, 10)]


def test_an_acceptance_of_an_earlier_signal_does_not_hold_the_pending_one_past_its_expiry():
    market = Market()
    exit_signal = long_10_with_an_exit_signal(market)
    earlier = trading_pb2.Signal()
    earlier.CopyFrom(exit_signal)
    earlier.signal_id = "mom-3045-0-BUY"

    market.engine.on_decision(accepted(earlier))

    assert not market.strategy.is_pending(SBIN, T0915 + 3600 * NS)


def test_a_late_rejection_of_an_earlier_signal_does_not_free_the_pending_one():
    market = Market()
    exit_signal = long_10_with_an_exit_signal(market)
    market.engine.on_decision(accepted(exit_signal))
    earlier = trading_pb2.RiskDecision()
    earlier.CopyFrom(accepted(exit_signal))
    earlier.accepted, earlier.reason_code, earlier.signal_id = False, "RATE_LIMIT", "mom-3045-0-BUY"

    market.engine.on_decision(earlier)

    assert market.strategy.is_pending(SBIN, T0915 + 3600 * NS)  # the exit's order is still to come: no second exit


def square_off(product, quantity, sequence):
    return trading_pb2.OrderUpdate(
        internal_id=f"i-sq-{sequence}", client_order_id=f"SQUAREOFF-{sequence}", sequence=sequence,
        status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=quantity, filled_quantity=quantity,
        request=trading_pb2.OrderRequest(client_order_id=f"SQUAREOFF-{sequence}", token=SBIN, quantity=quantity,
                                         side=trading_pb2.SIDE_SELL, strategy_tag="SQUAREOFF", product=product))


@pytest.mark.parametrize(("product", "quantity", "left"), [
    (trading_pb2.PRODUCT_CNC, 50, 10),  # the user's delivery holding: the strategy's intraday long is untouched
    (trading_pb2.PRODUCT_UNSPECIFIED, 4, 6),  # unspecified is MIS: it closes part of the strategy's long
], ids=["delivery-leaves-the-intraday-long", "unspecified-closes-the-intraday-long"])
def test_a_square_off_fill_closes_only_strategy_positions_of_its_product(product, quantity, left):
    market = Market()
    market.update("entry", trading_pb2.SIDE_BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10)  # MIS
    market.sequence += 1

    market.engine.on_order_update(square_off(product, quantity, market.sequence))

    assert market.strategy.position(SBIN) == left


class FlipEveryTick(Strategy):
    """A test plugin: on each tick with nothing pending, buys one share when flat and sells it when long."""

    kind = "FLIP_EVERY_TICK"
    Params = NoParams

    def on_candle(self, candle, ctx):
        return []

    def on_tick(self, tick, ctx):
        if self.is_pending(tick.token, ctx.now_ns):
            return []
        side = trading_pb2.SIDE_SELL if self.position(tick.token) > 0 else trading_pb2.SIDE_BUY
        return [OrderIntent(tick.token, side, 1, trading_pb2.ORDER_TYPE_MARKET)]


def flip_in_one_second(engine):
    """Three signals on ticks stamped with the same second, each filled before the next tick."""
    ids = []
    for n in range(3):
        _, (signal,) = engine.on_ticks([tick(SBIN)])
        ids.append(signal.signal_id)
        engine.on_order_update(trading_pb2.OrderUpdate(
            status=trading_pb2.ORDER_STATUS_TRADED, sequence=n + 1, last_fill_quantity=1, client_order_id=f"c{n}",
            request=trading_pb2.OrderRequest(client_order_id=f"c{n}", token=SBIN, side=signal.side,
                                             strategy_tag="flip")))
    return ids


def test_tick_signals_of_one_strategy_token_and_second_get_distinct_ids_the_same_on_a_replay():
    ids = flip_in_one_second(engine_with(FlipEveryTick("flip", NoParams(), frozenset({SBIN}))))

    assert ids == [f"flip-{SBIN}-{T0915 + NS}-BUY", f"flip-{SBIN}-{T0915 + NS}-SELL",
                   f"flip-{SBIN}-{T0915 + NS}-BUY-2"]
    assert flip_in_one_second(engine_with(FlipEveryTick("flip", NoParams(), frozenset({SBIN})))) == ids


class BuyOnFirstTickAndEachCandle(Strategy):
    """A test plugin: buys on its first tick, and at every candle's close."""

    kind = "BUY_ON_FIRST_TICK_AND_EACH_CANDLE"
    Params = NoParams

    def reset(self) -> None:
        self.ticked = False

    def on_candle(self, candle, ctx):
        return [OrderIntent(candle.token, trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)]

    def on_tick(self, tick, ctx):
        if self.ticked:
            return []
        self.ticked = True
        return [OrderIntent(tick.token, trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)]


def test_a_tick_signal_at_a_minutes_first_second_and_that_minutes_candle_signal_get_distinct_ids():
    """A tick's signal is stamped with its second, a candle's with its minute: at 09:16:00 both, on the same side,
    would share one id, and risk would refuse the second as DUPLICATE_ORDER."""
    engine = engine_with(BuyOnFirstTickAndEachCandle("both", NoParams(), frozenset({SBIN})))
    at_0916 = market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + 60 * NS, ltp_paise=100_00, ltq=1)
    closer = market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + 121 * NS, ltp_paise=100_00, ltq=1)

    ids = [s.signal_id for batch in ([at_0916], [closer]) for s in engine.on_ticks(batch)[1]]

    assert ids == [f"both-{SBIN}-{T0915 + 60 * NS}-BUY", f"both-{SBIN}-{T0915 + 60 * NS}-BUY-2"]


def test_the_closes_a_token_needs_warm_are_the_most_any_strategy_trading_it_needs():
    engine = engine_with(MomentumRsi("short", MomentumRsiParams(rsi_period=14, ema_period=9), frozenset({SBIN})),
                         MomentumRsi("long", MomentumRsiParams(rsi_period=3, ema_period=50), frozenset({SBIN, TCS})),
                         BuyEveryTick("every", NoParams()))

    needs = engine.closes_needed()

    assert (needs[SBIN], needs[TCS]) == (50, 50)
    assert len(needs) == len(nse_instruments())  # "every" has no symbols: every instrument is traded, needing 0
    assert BuyEveryTick("every", NoParams()).closes_needed() == 0


class ChangeOnCandle(Strategy):
    """A test plugin: on each candle, returns the OrderChange a test set (OrderChange: see plugins.py)."""

    kind = "CHANGE_ON_CANDLE"
    Params = NoParams

    def reset(self) -> None:
        self.change: OrderChange | None = None

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[Decision]:
        return [] if self.change is None else [self.change]


class Changer:
    def __init__(self):
        self.strategy = ChangeOnCandle("chg", NoParams(), frozenset({SBIN}))
        self.engine = engine_with(self.strategy)
        self.minute = 0

    def working(self, status=trading_pb2.ORDER_STATUS_OPEN, quantity=10, price=100_00, trigger=0, filled=0,
                changes_sent=0, changed_by_hand=False):
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            internal_id="i-1", client_order_id="c-1", status=status, filled_quantity=filled,
            changes_sent=changes_sent, changed_by_hand=changed_by_hand,
            request=trading_pb2.OrderRequest(client_order_id="c-1", token=SBIN, side=trading_pb2.SIDE_BUY,
                                             quantity=quantity, order_type=trading_pb2.ORDER_TYPE_STOP_LIMIT,
                                             price_paise=price, trigger_price_paise=trigger, strategy_tag="chg")))

    def ask(self, **change) -> list:
        self.strategy.change = OrderChange(SBIN, **change)
        self.minute += 1
        self.engine.on_closed([(market_pb2.Candle(token=SBIN, start_ns=T0915 + self.minute * 60 * NS), 0)])
        return [(c.strategy, c.reason, c.request) for c in self.engine.orders.take_changes()]


def test_a_change_goes_out_as_the_oms_modify_order_of_the_working_order_with_only_the_terms_that_differ():
    c = Changer()
    c.working(quantity=10, price=100_00, trigger=99_00)
    assert c.ask(limit_price_paise=101_00, quantity=10, trigger_price_paise=99_50, reason="trail") == [
        ("chg", "trail", oms_pb2.ModifyOrderRequest(order_id="c-1", price_paise=101_00, trigger_price_paise=99_50,
                                                    strategy_tag="chg"))]
    assert c.strategy.working_order(SBIN).changes == 1


def test_nothing_goes_without_a_working_order_or_with_nothing_to_change():
    c = Changer()
    assert c.ask(limit_price_paise=101_00) == []
    c.working(price=100_00, quantity=10)
    assert c.ask(limit_price_paise=100_00, quantity=10) == []
    c.working(status=trading_pb2.ORDER_STATUS_TRADED, filled=10)
    assert c.strategy.working_order(SBIN) is None
    assert c.ask(limit_price_paise=101_00) == []


def test_one_change_of_an_order_at_a_time():
    c = Changer()
    c.working()
    assert len(c.ask(limit_price_paise=101_00)) == 1
    assert c.ask(limit_price_paise=102_00) == []  # the first is being sent
    c.engine.orders.change_sent("c-1")
    c.working(status=trading_pb2.ORDER_STATUS_MODIFY_PENDING, price=101_00)
    assert c.ask(limit_price_paise=102_00) == []  # pending at the broker
    c.working(price=101_00)
    assert [r.price_paise for _, _, r in c.ask(limit_price_paise=102_00)] == [102_00]
    assert c.strategy.working_order(SBIN).changes == 2  # counted across its updates


def test_a_paused_strategy_changes_nothing():
    c = Changer()
    c.working()
    c.strategy.paused = True
    assert c.ask(limit_price_paise=101_00) == []
    assert c.strategy.working_order(SBIN).changes == 0


def test_the_count_goes_on_from_the_omss_after_a_restart_and_the_strategys_own_while_the_oms_answers():
    c = Changer()
    c.working(changes_sent=3)  # the order as ListOrders gives it back after a restart: changed 3 times before
    assert c.strategy.working_order(SBIN).changes == 3
    assert len(c.ask(limit_price_paise=101_00)) == 1
    assert c.strategy.working_order(SBIN).changes == 4  # asked; the OMS's count follows with its update
    c.engine.orders.change_sent("c-1")
    c.working(price=101_00, changes_sent=4)
    assert c.strategy.working_order(SBIN).changes == 4


def test_an_order_changed_by_hand_is_left_to_the_trader():
    c = Changer()
    c.working()
    c.working(price=99_00, changes_sent=1, changed_by_hand=True)  # a trader's /modify, or Kotak's app
    assert c.strategy.working_order(SBIN).changed_by_hand
    assert c.ask(limit_price_paise=101_00) == []
    c.working(price=99_00, changes_sent=1)  # an update that does not say it again (sticky in the OMS too)
    assert c.ask(limit_price_paise=101_00) == []
