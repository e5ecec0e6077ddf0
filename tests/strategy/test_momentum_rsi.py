"""MOMENTUM_RSI on crafted candle series: entries on RSI crosses with the EMA, exits, no pyramiding."""

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.strategy.engine import StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams, _TokenState
from services.strategy.plugins import PENDING_EXPIRY_NS, StrategyContext, limit_through
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.errors import InvalidInput
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from shared.positions import SQUAREOFF_TAG

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN = 3045
# Period 3 for both. Closes 100, 99, 98, 97, 96 (rupees): RSI seeds at 0 (only losses), EMA seeds at
# 99 then 98, 97. Close 100: gain avg 4/3, loss avg 2/3 -> RSI 66.7, crossing 60; EMA 98.5 < 100.
FALLING_THEN_JUMP = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]
# Mirror image for a short: RSI 100 then 33.3 (crossing 40), EMA 101.5 > 100.
RISING_THEN_DROP = [100_00, 101_00, 102_00, 103_00, 104_00, 100_00]


def make(**params):
    base = {"rsi_period": 3, "ema_period": 3}
    return MomentumRsi("mom", MomentumRsiParams(**{**base, **params}))


def feed(strategy, closes, start_minute=0, token=SBIN):
    ctx = StrategyContext(InstrumentBook(nse_instruments(["SBIN-EQ"])))
    out = []
    for i, close in enumerate(closes):
        start = T0915 + (start_minute + i) * 60 * NS
        ctx.now_ns = start + 60 * NS
        candle = market_pb2.Candle(token=token, start_ns=start, open_paise=close, high_paise=close,
                                   low_paise=close, close_paise=close)
        intents = strategy.on_candle(candle, ctx)
        for intent in intents:
            strategy.mark_sent(intent, ctx.now_ns)
        out.append(intents)
    return out


def fill(strategy, side, quantity, status=trading_pb2.ORDER_STATUS_TRADED, tag="mom"):
    strategy.on_order_update(trading_pb2.OrderUpdate(
        status=status, last_fill_quantity=quantity, last_fill_price_paise=100_00,
        request=trading_pb2.OrderRequest(token=SBIN, side=side, strategy_tag=tag)))


def test_buys_when_rsi_crosses_above_the_entry_level_with_the_close_above_the_ema():
    strategy = make()
    out = feed(strategy, FALLING_THEN_JUMP)
    assert out[:5] == [[]] * 5
    (intent,) = out[5]
    assert (intent.side, intent.quantity, intent.order_type, intent.limit_price_paise, intent.product) == (
        trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_LIMIT, 100_05, trading_pb2.PRODUCT_MIS)  # 0.05% over the close
    assert "crossed above 60" in intent.reason


@pytest.mark.parametrize(("pct", "buy", "sell"), [
    (0, 100_00, 100_00),  # at the close: an entry that fills only if the market comes back to it
    (0.05, 100_05, 99_95),  # the default: one tick of Rs 0.05 either way of Rs 100
    (0.12, 100_10, 99_90),  # Rs 0.12 worse: the last tick within it, never past it
    (1, 101_00, 99_00),
])
def test_a_limit_order_is_priced_limit_slippage_pct_through_the_close_to_the_tick_within_it(pct, buy, sell):
    (long,) = feed(make(limit_slippage_pct=pct), FALLING_THEN_JUMP)[5]
    (short,) = feed(make(limit_slippage_pct=pct), RISING_THEN_DROP)[5]
    assert (long.side, long.limit_price_paise, short.side, short.limit_price_paise) == (
        trading_pb2.SIDE_BUY, buy, trading_pb2.SIDE_SELL, sell)
    (market,) = feed(make(limit_slippage_pct=pct, order_type="MARKET"), FALLING_THEN_JUMP)[5]
    assert (market.order_type, market.limit_price_paise) == (trading_pb2.ORDER_TYPE_MARKET, 0)


def test_limit_through_keeps_a_sell_at_a_tick_and_a_price_off_the_grid_on_it():
    tick5 = market_pb2.Instrument(tick_size_paise=5)
    assert limit_through(10, trading_pb2.SIDE_SELL, 5, tick5) == 10  # 9.5 paise: the tick at or over it
    assert limit_through(5, trading_pb2.SIDE_SELL, 5, tick5) == 5  # never below one tick
    assert limit_through(100_02, trading_pb2.SIDE_BUY, 0, tick5) == 100_00  # the nearest tick, as without one
    # Rs 100.03 is off the grid: its nearest tick (100.05), where no tick within 0.01% is further out for either side.
    assert limit_through(100_03, trading_pb2.SIDE_BUY, 0.01, tick5) == 100_05
    assert limit_through(100_03, trading_pb2.SIDE_SELL, 0.01, tick5) == 100_05
    assert limit_through(100_00, trading_pb2.SIDE_BUY, 0.05, None) == 100_05  # no instrument: whole paise


def test_a_resting_entry_follows_the_close_priced_as_a_new_order_would_be():
    r = Reprices(max_reprices=2, limit_slippage_pct=0.05)
    for close in FALLING_THEN_JUMP:
        signals, _ = r.candle(close)
    assert [s.limit_price_paise for s in signals] == [100_05]
    r.order(trading_pb2.SIDE_BUY, price=100_05)
    assert r.candle(101_00) == ([], [101_05])
    assert r.candle(101_00) == ([], [])  # already where a new order would be


def test_sells_short_when_rsi_crosses_below_the_entry_level_with_the_close_below_the_ema():
    (intent,) = feed(make(), RISING_THEN_DROP)[5]
    assert (intent.side, intent.quantity) == (trading_pb2.SIDE_SELL, 1)


def test_no_short_entry_when_shorts_are_not_allowed():
    assert feed(make(allow_short=False), RISING_THEN_DROP)[5] == []


def test_market_orders_carry_no_price():
    (intent,) = feed(make(order_type="MARKET"), FALLING_THEN_JUMP)[5]
    assert (intent.order_type, intent.limit_price_paise) == (trading_pb2.ORDER_TYPE_MARKET, 0)


def test_quantity_is_rounded_down_to_whole_lots():
    strategy = make(quantity=7)
    ctx = StrategyContext(InstrumentBook([market_pb2.Instrument(token=SBIN, lot_size=5, tick_size_paise=5)]))
    assert strategy.entry_quantity(SBIN, ctx, 100_00, 7, Decimal(0)) == 5


def test_an_order_value_buys_as_many_whole_lots_as_it_can_at_the_close_whatever_the_quantity():
    (intent,) = feed(make(order_value=1_050, quantity=3), FALLING_THEN_JUMP)[5]  # Rs 1,050 at Rs 100: 10 shares
    assert (intent.side, intent.quantity) == (trading_pb2.SIDE_BUY, 10)
    (short,) = feed(make(order_value=1_000), RISING_THEN_DROP)[5]  # exactly 10
    assert short.quantity == 10

    lots = StrategyContext(InstrumentBook([market_pb2.Instrument(token=SBIN, lot_size=75, tick_size_paise=5)]))
    assert make().entry_quantity(SBIN, lots, 100_00, 1, Decimal(20_000)) == 150  # 2 lots of Rs 7,500; not 3


def test_risk_per_trade_sizes_the_entry_to_lose_that_much_at_its_stop_capped_by_the_order_value():
    """A LIMIT at the close of 100.00 and a 1% stop: 1.00 a share at risk; Rs 500 buys 500 shares' worth of risk. A
    0.5% trailing stop is the tighter: 0.50 a share, 1,000 shares. Rs 20,000 of order_value buys 200 of them."""
    at_close = {"risk_per_trade": 500, "stop_loss_pct": 1, "limit_slippage_pct": 0}
    (intent,) = feed(make(**at_close, quantity=3), FALLING_THEN_JUMP)[5]
    assert (intent.side, intent.quantity) == (trading_pb2.SIDE_BUY, 500)
    assert intent.reason.endswith("; sized to risk ₹500.00 to the stop ₹99.00")
    (short,) = feed(make(**at_close, trailing_stop_pct=0.5), RISING_THEN_DROP)[5]
    assert (short.side, short.quantity) == (trading_pb2.SIDE_SELL, 1000)
    (capped,) = feed(make(**at_close, order_value=20_000), FALLING_THEN_JUMP)[5]
    assert capped.quantity == 200
    # A LIMIT 0.05% through the close (the default) may fill at 100.05: sized there, to the stop 1% under it (99.04),
    # 1.01 a share: 495 shares; and a MARKET order at the close, its fill not known.
    (through,) = feed(make(risk_per_trade=500, stop_loss_pct=1), FALLING_THEN_JUMP)[5]
    assert (through.limit_price_paise, through.quantity) == (100_05, 495)
    assert through.reason.endswith("; sized to risk ₹500.00 to the stop ₹99.04")
    (market,) = feed(make(risk_per_trade=500, stop_loss_pct=1, order_type="MARKET"), FALLING_THEN_JUMP)[5]
    assert market.quantity == 500

    lots = StrategyContext(InstrumentBook([market_pb2.Instrument(token=SBIN, lot_size=75, tick_size_paise=5)]))
    assert make().entry_quantity(SBIN, lots, 100_00, 1, Decimal(0), Decimal(200), 99_00) == 150  # 75 risk Rs 75


def test_an_entry_one_lot_of_which_loses_more_than_risk_per_trade_is_left_out_and_a_stop_is_needed(caplog):
    strategy = make(risk_per_trade="0.99", stop_loss_pct=1)
    assert feed(strategy, FALLING_THEN_JUMP)[5] == []
    said = [r for r in caplog.records
            if r.getMessage() == "an entry left out: one lot loses more than risk_per_trade at its stop"]
    # 1.01 from the LIMIT at 100.05 (0.05% over the close) to the stop 1% under it.
    assert len(said) == 1 and (said[0].lot_risk, said[0].risk_per_trade) == ("₹1.01", "0.99")

    with pytest.raises(ValidationError, match="risk_per_trade sizes an entry by its stop"):
        make(risk_per_trade=500)


AT_1459 = (14 * 60 + 59) - (9 * 60 + 15)  # feed's start_minute of the 14:59 candle (it closes at 15:00)


def test_from_exit_at_ist_a_position_exits_at_the_market_at_its_tokens_first_close_and_nothing_enters():
    strategy = make(exit_at_ist="15:00")
    fill(strategy, trading_pb2.SIDE_BUY, 5)

    assert feed(strategy, [101_00], start_minute=AT_1459 - 1) == [[]]  # closes 14:59: not yet
    (out,) = feed(strategy, [101_50], start_minute=AT_1459)
    assert [(i.side, i.quantity, i.order_type, i.reason) for i in out] == [
        (trading_pb2.SIDE_SELL, 5, trading_pb2.ORDER_TYPE_MARKET, "time exit at 15:00 IST")]

    late = make(exit_at_ist="15:00")
    assert feed(late, FALLING_THEN_JUMP, start_minute=AT_1459)[5] == []  # the cross, after 15:00: no entry
    with pytest.raises(ValidationError, match="HH:MM"):
        make(exit_at_ist="3pm")


def test_at_exit_at_ist_an_entry_still_working_is_cancelled():
    strategy = make(exit_at_ist="15:00")
    strategy.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="e", status=trading_pb2.ORDER_STATUS_OPEN, request=trading_pb2.OrderRequest(
            client_order_id="e", token=SBIN, side=trading_pb2.SIDE_BUY, quantity=5, strategy_tag="mom",
            order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=100_00)))

    (out,) = feed(strategy, [101_00], start_minute=AT_1459)

    assert [(type(d).__name__, d.token, d.reason) for d in out] == [
        ("OrderCancel", SBIN, "time exit at 15:00 IST: the entry cancelled")]


def test_an_order_value_counts_a_contracts_price_factor():
    barrels = market_pb2.Instrument(token=SBIN, lot_size=1, tick_size_paise=100)
    barrels.price_factor.numerator = 100  # quoted per barrel, traded in lots of 100 barrels
    ctx = StrategyContext(InstrumentBook([barrels]))
    assert make().entry_quantity(SBIN, ctx, 5_000_00, 1, Decimal(1_500_000)) == 3  # Rs 5,00,000 a contract


def test_an_instrument_one_lot_of_which_costs_more_than_the_order_value_is_not_entered_and_the_log_says_so(caplog):
    strategy = make(order_value="99.99")

    out = feed(strategy, FALLING_THEN_JUMP)
    feed(strategy, RISING_THEN_DROP, start_minute=6)

    assert out[5] == []
    said = [r for r in caplog.records if r.getMessage() == "an entry left out: one lot costs more than order_value"]
    # At the LIMIT's price, 0.05% over the close of 100.00: what the entry may cost.
    assert len(said) == 1 and (said[0].token, said[0].lot_cost, said[0].order_value) == (SBIN, "₹100.05", "99.99")


def test_an_order_value_is_set_at_run_time_in_rupees_and_a_malformed_one_changes_nothing():
    strategy = make()
    engine = StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0915))

    engine.set_params("mom", {"order_value": "25000.50"})
    with pytest.raises(InvalidInput, match="order_value"):
        engine.set_params("mom", {"order_value": "lots"})

    assert strategy.params.order_value == Decimal("25000.50")
    assert engine.set_params("mom", {"order_value": "0"})[0].params.order_value == 0  # back to quantity


def test_an_order_value_with_fractions_of_a_paisa_is_refused():
    with pytest.raises(ValidationError, match="order_value"):
        make(order_value="100.005")


def test_a_limit_price_is_snapped_to_the_tick_size():
    strategy = make()
    closes = [*FALLING_THEN_JUMP[:-1], 100_03]
    (intent,) = feed(strategy, closes)[5]
    assert intent.limit_price_paise == 100_05


def test_no_second_entry_while_the_first_order_is_in_flight():
    strategy = make()
    feed(strategy, FALLING_THEN_JUMP)
    # A dip and a jump that cross 60 again (RSI 53.3 -> 78.8, close above the EMA).
    assert feed(strategy, [99_00, 103_00], start_minute=6) == [[], []]


def test_no_second_entry_while_the_position_is_open():
    strategy = make()
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)
    assert strategy.position(SBIN) == 1
    assert feed(strategy, [99_00, 103_00], start_minute=6) == [[], []]


def test_a_close_past_the_stop_loss_exits_at_the_market_before_the_indicators_would():
    """Without a stop the close of 99 keeps the long (test_no_second_entry_while_the_position_is_open)."""
    strategy = make(stop_loss_pct=0.5)
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)

    (intent,), = feed(strategy, [99_00], start_minute=6)

    assert (intent.side, intent.quantity, intent.order_type, intent.limit_price_paise) == (
        trading_pb2.SIDE_SELL, 1, trading_pb2.ORDER_TYPE_MARKET, 0)
    assert intent.reason == "stop loss 0.5%: close ₹99.00, 1.00% under the entry ₹100.00"


def test_a_close_short_of_the_stop_loss_does_not_exit():
    strategy = make(stop_loss_pct=1.5)
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)

    assert feed(strategy, [99_00], start_minute=6) == [[]]


def test_a_stop_reached_at_a_close_stays_due_until_flat_as_one_a_tick_reached():
    strategy = make(stop_loss_pct=1)
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)
    (stop,), = feed(strategy, [98_50], start_minute=6)  # e.g. a stop set at run time below where the market is
    reason = "stop loss 1%: close ₹98.50, 1.50% under the entry ₹100.00"
    assert (stop.order_type, stop.reason, strategy.due_stop(SBIN)) == (trading_pb2.ORDER_TYPE_MARKET, reason, reason)

    strategy.on_rejected(SBIN)  # risk refused it
    (again,), = feed(strategy, [100_50], start_minute=7)  # back over the stop: the stop goes again all the same
    assert (again.side, again.order_type, again.reason) == (
        trading_pb2.SIDE_SELL, trading_pb2.ORDER_TYPE_MARKET, reason)


def test_a_close_at_the_target_takes_the_profit_as_the_strategys_orders_go():
    strategy = make(target_pct=2)
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)

    assert feed(strategy, [101_90], start_minute=6) == [[]]  # still rising: the indicators hold it
    (intent,), = feed(strategy, [102_00], start_minute=7)

    assert (intent.side, intent.order_type, intent.limit_price_paise) == (
        trading_pb2.SIDE_SELL, trading_pb2.ORDER_TYPE_LIMIT, 101_95)  # 101.949 (0.05% under): the tick within it
    assert intent.reason == "target 2%: close ₹102.00, 2.00% over the entry ₹100.00"


def test_a_shorts_stop_loss_is_a_close_above_its_entry():
    strategy = make(stop_loss_pct=1)
    feed(strategy, RISING_THEN_DROP)
    fill(strategy, trading_pb2.SIDE_SELL, 1)

    (intent,), = feed(strategy, [101_50], start_minute=6)

    assert (intent.side, intent.quantity, intent.order_type) == (trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)
    assert intent.reason == "stop loss 1%: close ₹101.50, 1.50% over the entry ₹100.00"


def test_the_entry_price_is_the_average_of_the_fills_that_built_the_position():
    strategy = make()

    def filled(side, quantity, price):
        strategy.on_order_update(trading_pb2.OrderUpdate(
            status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=quantity, last_fill_price_paise=price,
            request=trading_pb2.OrderRequest(token=SBIN, side=side, strategy_tag="mom")))
        return strategy.entry_price(SBIN)

    assert filled(trading_pb2.SIDE_BUY, 10, 100_00) == 100_00
    assert filled(trading_pb2.SIDE_BUY, 30, 104_00) == 103_00
    assert filled(trading_pb2.SIDE_SELL, 15, 90_00) == 103_00  # a reduction leaves it
    assert filled(trading_pb2.SIDE_SELL, 35, 95_00) == 95_00  # long 25 turned into short 10, at this fill
    assert filled(trading_pb2.SIDE_BUY, 10, 96_00) == 0  # flat


def test_a_restart_gives_the_entry_price_back_from_the_orders_average_fill_price():
    strategy = make()
    engine = StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0915))

    engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id="o-1", sequence=3, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=4,
        average_price_paise=101_25, last_fill_quantity=1, last_fill_price_paise=102_00,
        request=trading_pb2.OrderRequest(token=SBIN, side=trading_pb2.SIDE_BUY, quantity=4, strategy_tag="mom",
                                         product=trading_pb2.PRODUCT_MIS))])

    assert (strategy.position(SBIN), strategy.entry_price(SBIN)) == (4, 101_25)


def test_a_square_off_that_closes_the_position_forgets_its_entry_price():
    strategy = make(stop_loss_pct=0.5)
    engine = StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0915))
    fill(strategy, trading_pb2.SIDE_BUY, 2)

    engine.on_order_update(trading_pb2.OrderUpdate(
        status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=2, last_fill_price_paise=90_00,
        request=trading_pb2.OrderRequest(token=SBIN, side=trading_pb2.SIDE_SELL, strategy_tag=SQUAREOFF_TAG)))

    assert (strategy.position(SBIN), strategy.entry_price(SBIN)) == (0, 0)


@pytest.mark.parametrize(("window", "enters"), [
    ({"entry_from_ist": "09:21"}, True), ({"entry_from_ist": "09:22"}, False),
    ({"entry_until_ist": "09:22"}, True), ({"entry_until_ist": "09:21"}, False),
    ({"entry_from_ist": "09:15", "entry_until_ist": "15:00"}, True)])
def test_entries_go_only_on_closes_inside_the_entry_window(window, enters):
    """FALLING_THEN_JUMP's entry comes on the close of the 09:20 candle, at 09:21 IST."""
    assert bool(feed(make(**window), FALLING_THEN_JUMP)[5]) is enters


def test_an_exit_goes_whatever_the_entry_window_says():
    strategy = make(stop_loss_pct=0.5, entry_until_ist="09:22")
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 1)

    (exit_,), = feed(strategy, [99_00], start_minute=7)  # closes at 09:23

    assert exit_.side == trading_pb2.SIDE_SELL


@pytest.mark.parametrize(("window", "said"), [
    ({"entry_from_ist": "9.20"}, "expected HH:MM"), ({"entry_until_ist": "24:00"}, "expected HH:MM"),
    ({"entry_from_ist": "15:00", "entry_until_ist": "09:20"}, "must be before entry_until_ist")])
def test_a_malformed_or_empty_entry_window_is_refused(window, said):
    with pytest.raises(ValidationError, match=said):
        make(**window)


def test_no_entry_while_max_positions_tokens_hold_a_position_or_an_entry_on_its_way():
    strategy = make(max_positions=1)
    other = 2885

    (first,), = feed(strategy, FALLING_THEN_JUMP)[5:]
    assert feed(strategy, FALLING_THEN_JUMP, token=other)[5] == []  # SBIN's entry is on its way
    fill(strategy, trading_pb2.SIDE_BUY, 1)
    assert feed(strategy, FALLING_THEN_JUMP, start_minute=6, token=other)[5] == []  # SBIN is held
    fill(strategy, trading_pb2.SIDE_SELL, 1)  # out of SBIN

    (second,), = feed(strategy, FALLING_THEN_JUMP, start_minute=12, token=other)[5:]
    assert (first.token, second.token) == (SBIN, other)


def test_exits_a_long_with_a_sell_of_the_whole_position_when_rsi_falls_below_the_exit_level():
    strategy = make(quantity=3)
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 3)
    (intent,) = feed(strategy, [95_00], start_minute=6)[0]
    assert (intent.side, intent.quantity) == (trading_pb2.SIDE_SELL, 3)
    assert intent.reason.startswith("exit long")


def test_exits_a_short_by_buying_it_back():
    strategy = make()
    feed(strategy, RISING_THEN_DROP)
    fill(strategy, trading_pb2.SIDE_SELL, 1)
    (intent,) = feed(strategy, [106_00], start_minute=6)[0]
    assert (intent.side, intent.quantity) == (trading_pb2.SIDE_BUY, 1)


def test_a_signal_whose_order_never_appears_stops_blocking_after_the_pending_expiry():
    strategy = make()
    feed(strategy, FALLING_THEN_JUMP)
    now = T0915 + 6 * 60 * NS
    assert strategy.is_pending(SBIN, now)
    assert not strategy.is_pending(SBIN, now + PENDING_EXPIRY_NS)


def test_an_order_seen_open_keeps_the_token_blocked_until_it_is_terminal():
    strategy = make()
    feed(strategy, FALLING_THEN_JUMP)
    fill(strategy, trading_pb2.SIDE_BUY, 0, status=trading_pb2.ORDER_STATUS_OPEN)
    far = T0915 + 6 * 60 * NS + 10 * PENDING_EXPIRY_NS
    assert strategy.is_pending(SBIN, far)
    fill(strategy, trading_pb2.SIDE_BUY, 0, status=trading_pb2.ORDER_STATUS_CANCELLED)
    assert not strategy.is_pending(SBIN, far)
    assert strategy.position(SBIN) == 0


def test_changing_a_threshold_keeps_the_indicators_and_changing_a_period_warms_them_up_again_from_the_closes():
    strategy = make()
    feed(strategy, FALLING_THEN_JUMP[:5])
    strategy.apply_params(MomentumRsiParams(rsi_period=3, ema_period=3, entry_long_rsi=65))
    assert feed(strategy, [100_00], start_minute=5)[0][0].side == trading_pb2.SIDE_BUY
    rewarmed, fresh = make(), make(rsi_period=4)
    feed(rewarmed, FALLING_THEN_JUMP[:5])
    feed(fresh, FALLING_THEN_JUMP[:5])
    rewarmed.apply_params(MomentumRsiParams(rsi_period=4, ema_period=3))
    assert rewarmed._state[SBIN].rsi.value == fresh._state[SBIN].rsi.value == 0.0  # RSI(4) of 5 falling closes


def test_exits_due_is_the_exit_of_an_open_position_at_the_latest_close_and_never_an_entry():
    long, flat = make(), make()
    for strategy in (long, flat):
        feed(strategy, [110_00, 108_00, 106_00, 104_00, 102_00, *FALLING_THEN_JUMP])  # a buy at the last one
        strategy.on_rejected(SBIN)
    fill(long, trading_pb2.SIDE_BUY, 2)
    ctx = StrategyContext(InstrumentBook(nse_instruments(["SBIN-EQ"])), now_ns=T0915 + 12 * 60 * NS)
    assert long.exits_due(ctx) == flat.exits_due(ctx) == []  # 100 is above EMA(3) 98.5
    for strategy in (long, flat):
        strategy.apply_params(MomentumRsiParams(rsi_period=3, ema_period=10))  # EMA(10) 101.6

    (intent,) = long.exits_due(ctx)

    assert (intent.side, intent.quantity, intent.limit_price_paise) == (trading_pb2.SIDE_SELL, 2, 99_95)
    assert flat.exits_due(ctx) == []


def test_exit_thresholds_must_sit_inside_the_entry_thresholds():
    with pytest.raises(ValidationError, match="exit_long_rsi must be below entry_long_rsi"):
        MomentumRsiParams(entry_long_rsi=55, exit_long_rsi=56)


@pytest.mark.parametrize(("rsi_period", "ema_period", "needed"), [(14, 9, 16), (3, 50, 50), (7, 9, 9)])
def test_the_closes_needed_are_those_after_which_a_cross_above_the_ema_can_be_told(rsi_period, ema_period, needed):
    assert make(rsi_period=rsi_period, ema_period=ema_period).closes_needed() == needed

    def decides_after(n):
        state = _TokenState(rsi_period, ema_period)
        prev = [state.update(100_00 + i * 7 % 300) for i in range(n)][-1]  # the RSI before the last close
        return prev is not None and state.ema.value is not None

    assert (decides_after(needed - 1), decides_after(needed)) == (False, True)


class Reprices:
    """MOMENTUM_RSI with max_reprices in a StrategyEngine (which counts the changes it sends), one candle a call."""

    def __init__(self, max_reprices=2, **params):
        self.strategy = make(max_reprices=max_reprices, **{"limit_slippage_pct": 0, **params})
        self.engine = StrategyEngine([self.strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])),
                                     ManualClock(T0915))
        self.minute = 0

    def candle(self, close):
        start = T0915 + self.minute * 60 * NS
        self.minute += 1
        candle = market_pb2.Candle(token=SBIN, start_ns=start, open_paise=close, high_paise=close, low_paise=close,
                                   close_paise=close)
        _, signals = self.engine.on_closed([(candle, 0)])
        changes = [c.request.price_paise for c in self.engine.orders.take_changes()]
        for change in changes:  # the OMS made it: the order's next update shows the new price
            self.engine.orders.change_sent("c-1")
            self.order(self.side, price=change, filled=self.filled)
        return signals, changes

    def order(self, side, price, status=trading_pb2.ORDER_STATUS_OPEN, filled=0, kind=trading_pb2.ORDER_TYPE_LIMIT):
        self.side, self.filled = side, filled
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id="c-1", status=status, filled_quantity=filled,
            request=trading_pb2.OrderRequest(client_order_id="c-1", token=SBIN, side=side, quantity=1,
                                             order_type=kind, price_paise=price, strategy_tag="mom")))


def test_a_resting_entry_follows_the_close_while_it_stays_above_the_ema_at_most_max_reprices_times():
    r = Reprices(max_reprices=2)
    for close in FALLING_THEN_JUMP:
        signals, _ = r.candle(close)
    assert [s.limit_price_paise for s in signals] == [100_00]
    r.order(trading_pb2.SIDE_BUY, price=100_00)
    assert r.candle(101_00) == ([], [101_00])  # EMA 99.75
    assert r.candle(101_00) == ([], [])  # the order is at the close already
    assert r.candle(102_00) == ([], [102_00])
    assert r.candle(103_00) == ([], [])  # two changes were all it may have
    assert r.strategy.working_order(SBIN).limit_price_paise == 102_00


def test_an_entry_is_not_chased_below_its_ema_and_a_market_order_never():
    r = Reprices()
    for close in FALLING_THEN_JUMP:
        r.candle(close)
    r.order(trading_pb2.SIDE_BUY, price=100_00)
    assert r.candle(97_00) == ([], [])  # EMA 97.75: the trend the entry was for is gone
    r.order(trading_pb2.SIDE_BUY, price=0, kind=trading_pb2.ORDER_TYPE_MARKET)
    assert r.candle(101_00) == ([], [])


def test_an_exit_follows_the_close_whatever_the_trend():
    r = Reprices(max_reprices=3)
    for close in FALLING_THEN_JUMP:
        r.candle(close)
    r.engine.on_order_update(trading_pb2.OrderUpdate(  # the entry filled
        client_order_id="entry", status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=1, last_fill_quantity=1,
        request=trading_pb2.OrderRequest(token=SBIN, side=trading_pb2.SIDE_BUY, strategy_tag="mom")))
    assert r.strategy.position(SBIN) == 1
    signals, _ = r.candle(97_00)  # below the EMA: exit the long
    assert [(s.side, s.limit_price_paise) for s in signals] == [(trading_pb2.SIDE_SELL, 97_00)]
    r.order(trading_pb2.SIDE_SELL, price=97_00)
    assert r.candle(95_00) == ([], [95_00])  # the market fell away from the exit: it follows
    assert r.candle(98_00) == ([], [98_00])  # and back up above the EMA (96.38): an exit still follows
