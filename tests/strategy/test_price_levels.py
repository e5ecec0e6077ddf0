"""Stop loss and target on every tick (Strategy.price_levels): MOMENTUM_RSI's exits go at the tick that reaches one,
not at the minute's close, once per reach, and the engine watches only the tokens a strategy holds."""

from datetime import date

import pytest

from services.strategy.engine import NOT_RESTORED, StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, oms_pb2, strategy_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from shared.positions import SQUAREOFF_TAG

T0930 = ist_ns(date(2026, 1, 20), 9, 30)
SBIN = 3045
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MARKET, LIMIT = trading_pb2.ORDER_TYPE_MARKET, trading_pb2.ORDER_TYPE_LIMIT


class Desk:
    """One engine with MOMENTUM_RSI on SBIN (its indicators cold: only the levels can exit), fed ticks a second
    apart from 09:30 IST, and order updates stamped in sequence."""

    def __init__(self, **params):
        self.strategy = MomentumRsi("mom", MomentumRsiParams(**params), frozenset({SBIN}))
        self.engine = StrategyEngine([self.strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])),
                                     ManualClock(T0930))
        self.second = self.sequence = 0

    def ticks(self, *prices):
        out = []
        for price in prices:
            self.second += 1
            out.append(market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0930 + self.second * NS,
                                       ltp_paise=price, ltq=1, recv_ns=self.second))
        return self.engine.on_ticks(out)[1]

    def at(self, *ticks):
        """Ticks at (seconds after 09:30, price); the next of `ticks` goes on from the last whole second."""
        out = [market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0930 + round(at * NS), ltp_paise=price,
                               ltq=1, recv_ns=1) for at, price in ticks]
        self.second = int(ticks[-1][0])
        return self.engine.on_ticks(out)[1]

    def reject(self, signal, code="MAX_ORDERS_PER_SECOND"):
        self.engine.on_decision(trading_pb2.RiskDecision(
            accepted=False, reason_code=code, strategy="mom", signal_id=signal.signal_id,
            order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="mom")))

    def update(self, coid, side, status, fill=0, price=100_00, quantity=10, order_type=LIMIT, limit=100_00,
               tag="mom"):
        self.sequence += 1
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            internal_id=f"i-{coid}", client_order_id=coid, status=status, sequence=self.sequence,
            last_fill_quantity=fill, last_fill_price_paise=price, filled_quantity=fill,
            request=trading_pb2.OrderRequest(client_order_id=coid, token=SBIN, side=side, quantity=quantity,
                                             order_type=order_type, price_paise=limit, strategy_tag=tag,
                                             product=trading_pb2.PRODUCT_MIS)))

    def hold(self, side=BUY, quantity=10, price=100_00):
        self.update("entry", side, trading_pb2.ORDER_STATUS_TRADED, fill=quantity, price=price, quantity=quantity)


def described(signals):
    return [(s.side, s.quantity, s.order_type, s.limit_price_paise, s.reason) for s in signals]


def test_a_tick_at_the_stop_loss_exits_the_long_at_the_market_then_and_once():
    desk = Desk(stop_loss_pct=1)
    desk.hold()

    assert desk.ticks(99_50, 99_01) == []
    signals = desk.ticks(99_00, 98_50, 97_00)

    assert described(signals) == [(SELL, 10, MARKET, 0, "stop loss 1%: tick ₹99.00, 1.00% under the entry ₹100.00")]
    # By the tick: its id carries the tick's time (not a minute's), its latency runs from that tick's arrival.
    assert (signals[0].signal_id, signals[0].tick_recv_ns) == (f"mom-{SBIN}-{T0930 + 3 * NS}-SELL", 3)


def test_a_tick_at_the_target_takes_the_profit_as_the_strategys_orders_go():
    desk = Desk(target_pct=2, stop_loss_pct=1)
    desk.hold()

    assert desk.ticks(101_99) == []
    assert described(desk.ticks(102_05)) == [
        (SELL, 10, LIMIT, 102_00, "target 2%: tick ₹102.05, 2.05% over the entry ₹100.00")]  # 0.05% under the tick

    market = Desk(target_pct=2, order_type="MARKET")
    market.hold()
    assert [(s.order_type, s.limit_price_paise) for s in market.ticks(102_00)] == [(MARKET, 0)]


def test_a_shorts_stop_loss_is_a_tick_above_its_entry_and_its_target_one_below():
    stopped = Desk(stop_loss_pct=1, target_pct=2)
    stopped.hold(SELL)
    assert stopped.ticks(100_99, 99_00) == []
    assert described(stopped.ticks(101_00)) == [
        (BUY, 10, MARKET, 0, "stop loss 1%: tick ₹101.00, 1.00% over the entry ₹100.00")]

    taken = Desk(stop_loss_pct=1, target_pct=2)
    taken.hold(SELL)
    assert described(taken.ticks(98_00)) == [
        (BUY, 10, LIMIT, 98_00, "target 2%: tick ₹98.00, 2.00% under the entry ₹100.00")]


def test_the_levels_are_exact_to_the_paisa():
    """0.1% under 123.45 is 123.32655: 123.32 is past it, 123.33 (0.097% under) is not (the levels are whole paise,
    compared with a tick's price as integers)."""
    desk = Desk(stop_loss_pct=0.1)
    desk.hold(price=123_45)

    assert desk.ticks(123_33) == []
    assert [s.quantity for s in desk.ticks(123_32)] == [10]


def test_an_exit_that_ends_without_closing_the_position_lets_the_stop_fire_again_and_a_fill_moves_it():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    (first,) = desk.ticks(98_90)
    desk.update("stop-1", SELL, trading_pb2.ORDER_STATUS_OPEN, order_type=MARKET, limit=0)
    assert desk.ticks(98_80) == []  # its exit works: nothing more

    desk.update("stop-1", SELL, trading_pb2.ORDER_STATUS_CANCELLED, fill=4, price=98_80, order_type=MARKET, limit=0)
    (again,) = desk.ticks(98_70)

    assert (first.quantity, again.quantity) == (10, 6)


@pytest.mark.parametrize(("slippage", "moved"), [(0.05, 98_95), (0, 98_95), (0.5, 98_50)])
def test_a_stop_reached_while_a_limit_exit_works_moves_that_exit_to_the_tick(slippage, moved):
    """To the tick, through it as a new LIMIT would be priced (limit_slippage_pct: 0.05% of 98.95 is under a tick;
    0.5% under it is 98.4553, the tick within that 98.50): an exit at the tick itself could rest above the bid."""
    desk = Desk(stop_loss_pct=1, limit_slippage_pct=slippage)
    desk.hold()
    desk.update("exit-1", SELL, trading_pb2.ORDER_STATUS_OPEN, limit=100_50)  # the indicators' exit, resting above

    assert desk.ticks(98_95) == []
    (change,) = desk.engine.orders.take_changes()

    assert (change.request.order_id, change.request.price_paise, change.reason) == (
        "exit-1", moved,
        "stop loss 1%: tick ₹98.95, 1.05% under the entry ₹100.00; the working exit moved to it")


def test_a_refused_stop_exit_goes_again_a_second_later_whatever_the_price_then_and_twice_as_late_each_time():
    """Risk refused the stop's exit (its orders-per-second limit at a busy close): the position is still to close.
    The exit goes again at the first tick a second after the last one, even at a price back above the stop; each
    refusal in a row doubles the wait (a refusal that holds, the kill switch, costs one a minute, not one a
    tick); a fill starts it again at a second."""
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    (first,) = desk.at((1, 98_90))
    desk.reject(first)

    assert desk.at((1.5, 98_80), (1.99, 98_70)) == []
    (second,) = desk.at((2, 99_50))
    assert described([second]) == [(SELL, 10, MARKET, 0, "stop loss 1%: tick ₹98.90, 1.10% under the entry ₹100.00")]
    assert second.signal_id != first.signal_id
    desk.reject(second)
    assert desk.at((3, 98_00), (3.99, 98_00)) == []
    (third,) = desk.at((4, 98_00))
    desk.reject(third)
    assert desk.at((7.99, 98_00)) == []
    (fourth,) = desk.at((8, 98_00))

    # Accepted, part of it filled, the rest cancelled by the broker: the rest goes, and a refusal of it waits 1 s.
    desk.engine.on_decision(trading_pb2.RiskDecision(
        accepted=True, strategy="mom", signal_id=fourth.signal_id,
        order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="mom")))
    desk.update("stop-4", SELL, trading_pb2.ORDER_STATUS_CANCELLED, fill=4, price=98_00, order_type=MARKET, limit=0)
    (rest,) = desk.at((9, 98_10))
    assert rest.quantity == 6
    desk.reject(rest)
    assert len(desk.at((10, 98_10))) == 1


def test_a_stop_is_due_no_more_once_flat_the_next_position_has_its_own():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    assert len(desk.ticks(98_90)) == 1
    desk.update("stop", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=10, price=98_90, order_type=MARKET, limit=0)
    desk.update("again", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10, price=98_00)

    assert desk.ticks(97_50, 98_50) == []  # inside the new position's levels: 1% under 98.00 is 97.02
    assert [s.reason for s in desk.ticks(97_00)] == ["stop loss 1%: tick ₹97.00, 1.02% under the entry ₹98.00"]

    squared = Desk(stop_loss_pct=1)
    entry_part_filled(squared)
    squared.ticks(98_90)
    squared.update("entry", BUY, trading_pb2.ORDER_STATUS_CANCELLED, price=0)
    squared.update("sq", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=4, price=98_90, tag=SQUAREOFF_TAG)
    squared.update("again", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10, price=98_00)
    assert squared.ticks(98_50) == []


def test_the_wait_after_refused_stop_exits_tops_out_at_a_minute():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    at, sent = 1.0, []
    (signal,) = desk.at((at, 98_00))
    for _ in range(9):
        desk.reject(signal, "TRADING_HALTED")
        while not (signals := desk.at((at := at + 0.5, 98_00))):
            pass
        sent.append(at)
        (signal,) = signals
    assert [b - a for a, b in zip([1.0, *sent], sent, strict=False)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.parametrize("refused_by", ["risk", "broker"])
def test_a_refused_target_leaves_its_stop_watched_and_is_not_sent_again_before_the_close(refused_by):
    """A refused target waits for the token's next close (sent at every tick past it, it would be refused at every
    tick); its position's stop is watched meanwhile, not left for the close."""
    desk = Desk(target_pct=2, stop_loss_pct=1)
    desk.hold()
    (target,) = desk.ticks(102_05)
    if refused_by == "risk":
        desk.reject(target)
    else:
        desk.sequence += 1
        desk.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id=target.signal_id, status=trading_pb2.ORDER_STATUS_REJECTED, sequence=desk.sequence,
            request=trading_pb2.OrderRequest(client_order_id=target.signal_id, signal_id=target.signal_id,
                                             token=SBIN, side=SELL, quantity=10, strategy_tag="mom",
                                             product=trading_pb2.PRODUCT_MIS)))

    assert desk.ticks(102_10, 102_20) == []
    assert described(desk.ticks(98_95)) == [
        (SELL, 10, MARKET, 0, "stop loss 1%: tick ₹98.95, 1.05% under the entry ₹100.00")]


def test_a_refused_target_is_not_sent_again_before_the_tokens_next_close():
    desk = Desk(target_pct=1)
    desk.hold()
    (signal,) = desk.ticks(101_00)
    desk.reject(signal, "PRICE_BAND")

    assert desk.ticks(*[101_10] * 5) == []
    desk.engine.close_due(T0930 + 60 * NS)  # 09:30's candle closes (the indicators are cold: no exit from it)
    desk.second = 60
    assert len(desk.ticks(101_20)) == 1


def entry_part_filled(desk, side=BUY, price=100_00):
    """A LIMIT entry of 10 at `price`, 4 of it filled there, the rest working."""
    desk.update("entry", side, trading_pb2.ORDER_STATUS_OPEN, limit=price)
    desk.update("entry", side, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, fill=4, price=price, limit=price)


def test_a_stop_reached_while_a_limit_entry_works_part_filled_cancels_the_rest_then_exits_what_filled():
    """A long of 4 of a LIMIT entry of 10, the rest still working: before, nothing watched its stop until the
    entry ended (filled, or cancelled as stale after cancel_working_after_s), however far the price fell."""
    desk = Desk(stop_loss_pct=1)
    entry_part_filled(desk)

    assert desk.ticks(99_50, 99_01) == []
    assert desk.ticks(98_90) == []  # no new order while the entry works: its rest is cancelled first
    (cancel,) = desk.engine.orders.take_changes()
    assert (cancel.request, cancel.token, cancel.reason) == (
        oms_pb2.CancelOrderRequest(order_id="entry"), SBIN,
        "stop loss 1%: tick ₹98.90, 1.10% under the entry ₹100.00; the rest of the entry cancelled, then the "
        "position exits")
    assert desk.ticks(98_50, 98_40) == []
    assert desk.engine.orders.take_changes() == []  # asked once

    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_CANCELLED, price=0)
    # The first tick after: the stop is due, whatever the price does meanwhile (here back above it).
    assert described(desk.ticks(99_60)) == [
        (SELL, 4, MARKET, 0, "stop loss 1%: tick ₹98.90, 1.10% under the entry ₹100.00")]


def test_an_entry_that_fills_before_its_cancel_lands_exits_whole_and_a_shorts_works_the_same():
    desk = Desk(stop_loss_pct=1)
    entry_part_filled(desk, SELL)
    assert desk.ticks(101_00) == []
    (cancel,) = desk.engine.orders.take_changes()
    desk.engine.orders.change_sent(cancel.request.order_id)

    desk.update("entry", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=6, price=100_00)  # the cancel came too late

    assert described(desk.ticks(100_50)) == [
        (BUY, 10, MARKET, 0, "stop loss 1%: tick ₹101.00, 1.00% over the entry ₹100.00")]


def test_a_refused_cancel_of_the_entry_is_asked_again_a_second_later():
    desk = Desk(stop_loss_pct=1)
    entry_part_filled(desk)
    assert desk.at((1, 98_90)) == []
    (cancel,) = desk.engine.orders.take_changes()

    desk.engine.orders.change_sent(cancel.request.order_id)  # as the module does when the OMS refuses it
    desk.engine.level_refused("mom", SBIN)

    assert desk.at((1.5, 98_80)) == [] and desk.engine.orders.take_changes() == []
    assert desk.at((2, 98_80)) == []
    assert [c.request for c in desk.engine.orders.take_changes()] == [oms_pb2.CancelOrderRequest(order_id="entry")]


def test_an_entry_a_trader_changed_by_hand_is_not_cancelled_by_the_stop():
    desk = Desk(stop_loss_pct=1)
    entry_part_filled(desk)
    desk.engine.on_order_update(trading_pb2.OrderUpdate(
        internal_id="i-entry", client_order_id="entry", status=trading_pb2.ORDER_STATUS_PARTIALLY_FILLED,
        sequence=99, filled_quantity=4, changed_by_hand=True, request=trading_pb2.OrderRequest(
            client_order_id="entry", token=SBIN, side=BUY, quantity=10, order_type=LIMIT, price_paise=99_50,
            strategy_tag="mom", product=trading_pb2.PRODUCT_MIS)))

    assert desk.ticks(98_00) == []
    assert desk.engine.orders.take_changes() == []


def test_a_strategy_paused_to_send_nothing_sends_no_stop_exit_and_a_resumed_one_does_at_its_next_tick():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    desk.engine.set_paused("mom", True, f"{NOT_RESTORED}: ...", by=strategy_pb2.PAUSED_BY_NEOPULSE)
    assert desk.ticks(98_00) == []

    desk.engine.set_paused("mom", False)
    assert len(desk.ticks(98_10)) == 1


def test_a_restored_position_is_watched_from_its_average_fill_price():
    desk = Desk(stop_loss_pct=1)
    desk.engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id="o-1", sequence=3, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=4,
        average_price_paise=101_00, request=trading_pb2.OrderRequest(
            token=SBIN, side=BUY, quantity=4, strategy_tag="mom", product=trading_pb2.PRODUCT_MIS))])

    assert desk.ticks(100_00) == []
    assert described(desk.ticks(99_99)) == [
        (SELL, 4, MARKET, 0, "stop loss 1%: tick ₹99.99, 1.00% under the entry ₹101.00")]


def test_a_stop_set_at_run_time_watches_the_open_position_and_one_turned_off_stops_watching():
    desk = Desk()
    desk.hold()
    assert desk.ticks(95_00) == []  # no stop: the indicators (cold here) decide

    desk.engine.set_params("mom", {"stop_loss_pct": "6"})
    assert desk.ticks(94_50) == []
    desk.engine.set_params("mom", {"stop_loss_pct": "4"})
    assert [s.quantity for s in desk.ticks(95_90)] == [10]

    off = Desk(stop_loss_pct=1)
    off.hold()
    off.engine.set_params("mom", {"stop_loss_pct": "0"})
    assert off.ticks(90_00) == []


def test_nothing_is_watched_once_flat_or_squared_off():
    desk = Desk(stop_loss_pct=1, target_pct=1)
    assert desk.engine._levels == {}  # flat: a tick costs one lookup
    desk.hold()
    assert SBIN in desk.engine._levels

    desk.update("sq", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=10, tag=SQUAREOFF_TAG)

    assert desk.engine._levels == {}
    assert desk.ticks(98_00, 102_00) == []


def test_the_candle_builder_picks_out_the_watched_ticks_whatever_made_the_tokens_candle():
    """A watch set before the token's candle is made by a tick, by a warm start's closed_before, or by its resume of
    the minute in progress, holds for it; another token's ticks, and ticks inside the levels, are not picked."""
    from services.strategy.candles import CandleBuilder

    minute = T0930 - T0930 % (60 * NS)
    for make in (lambda b: None, lambda b: b.closed_before(SBIN, "nse_cm", minute),
                 lambda b: b.resume(market_pb2.Candle(token=SBIN, exchange_segment="nse_cm", start_ns=minute,
                                                      open_paise=100_00, high_paise=100_00, low_paise=100_00,
                                                      close_paise=100_00, tick_count=1))):
        builder = CandleBuilder()
        builder.watch(SBIN, (99_00, 102_00))
        make(builder)
        prices = [(SBIN, 100_00), (11536, 90_00), (SBIN, 99_00), (SBIN, 101_95), (SBIN, 102_00)]
        builder.on_ticks([market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=minute + (i + 1) * NS,
                                          ltp_paise=price, ltq=1) for i, (token, price) in enumerate(prices)])

        assert [t.ltp_paise for t in builder.reached] == [99_00, 102_00]
        builder.reached.clear()
        builder.watch(SBIN, None)
        builder.on_ticks([market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=minute + 10 * NS,
                                          ltp_paise=50_00, ltq=1)])
        builder.closed_before(SBIN, "nse_cm", minute + 120 * NS)  # a candle made again: no watch comes back
        builder.on_ticks([market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=minute + 130 * NS,
                                          ltp_paise=50_00, ltq=1)])
        assert builder.reached == []


def test_a_trailing_stop_follows_the_best_price_since_the_entry_and_exits_a_tick_that_far_off_it():
    desk = Desk(trailing_stop_pct=1, stop_loss_pct=2)
    desk.hold()

    assert desk.ticks(100_50, 101_00, 102_00, 101_50, 101_00) == []  # 1% under 102.00 is 100.98
    assert described(desk.ticks(100_98)) == [(SELL, 10, MARKET, 0, "trailing stop 1%: tick ₹100.98, 1.00% under "
                                                                    "the best ₹102.00 since the entry ₹100.00")]

    short = Desk(trailing_stop_pct=1)
    short.hold(SELL)
    assert short.ticks(99_00, 98_00, 98_97) == []  # 1% over 98.00 is 98.98
    assert described(short.ticks(98_98)) == [(BUY, 10, MARKET, 0, "trailing stop 1%: tick ₹98.98, 1.00% over "
                                                                  "the best ₹98.00 since the entry ₹100.00")]


def test_a_new_best_and_the_fall_through_its_trailing_stop_in_one_batch_exit_as_in_two():
    """One feed frame (a replay's second) with a new best 110.00, moving the 5% trailing stop to 104.50, then 100.00:
    the ticks after the new best are checked against the moved stop, not the stop before the batch (95.00)."""
    one, two = Desk(trailing_stop_pct=5), Desk(trailing_stop_pct=5)
    one.hold()
    two.hold()

    batch = market_pb2.TickBatch(ticks=[  # as the strategy module hands them over: a protobuf batch's ticks
        market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0930 + (i + 1) * NS, ltp_paise=price, ltq=1,
                        recv_ns=i + 1) for i, price in enumerate((110_00, 100_00, 111_00))])
    in_one = one.engine.on_ticks(batch.ticks)[1]
    in_two = two.ticks(110_00) + two.ticks(100_00) + two.ticks(111_00)

    assert described(in_one) == described(in_two) == [
        (SELL, 10, MARKET, 0, "trailing stop 5%: tick ₹100.00, 9.09% under the best ₹110.00 since the entry ₹100.00")]


def test_until_a_tick_beats_the_entry_the_tighter_of_the_stop_loss_and_the_trailing_stop_holds():
    trailing = Desk(trailing_stop_pct=1, stop_loss_pct=2)
    trailing.hold()
    assert [s.reason for s in trailing.ticks(99_00)] == [
        "trailing stop 1%: tick ₹99.00, 1.00% under the best ₹100.00 since the entry ₹100.00"]

    fixed = Desk(trailing_stop_pct=3, stop_loss_pct=1)
    fixed.hold()
    assert [s.reason for s in fixed.ticks(101_00, 99_00)] == [
        "stop loss 1%: tick ₹99.00, 1.00% under the entry ₹100.00"]  # the trail is at 97.97


def test_a_new_position_trails_from_its_own_entry_not_the_best_of_the_last_one():
    desk = Desk(trailing_stop_pct=1)
    desk.hold()
    desk.ticks(105_00)
    desk.update("out", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=10, price=104_00)
    desk.update("in-again", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=10, price=100_00)  # the same entry price

    assert desk.ticks(103_95) == []  # 1% under the old best 105.00; under this entry's 100.00 it is 99.00
    assert len(desk.ticks(99_00)) == 1


def test_the_trailing_stop_is_moved_only_by_ticks_that_beat_the_best_not_every_tick():
    class Counting(MomentumRsi):
        calls = 0

        def on_price_level(self, tick, ctx):
            Counting.calls += 1
            return super().on_price_level(tick, ctx)

    desk = Desk(trailing_stop_pct=1)
    desk.strategy.__class__ = Counting
    desk.hold()

    assert desk.ticks(100_50, 100_20, 100_40, 100_50, 100_60, 100_10, 100_30) == []

    assert Counting.calls == 2  # 100.50 and 100.60


def test_a_trailing_stop_set_at_run_time_trails_from_the_entry():
    desk = Desk()
    desk.hold()
    desk.engine.set_params("mom", {"trailing_stop_pct": "0.5"})

    assert desk.ticks(101_00, 100_50) == []  # 0.5% under 101.00 is 100.49
    assert [s.reason for s in desk.ticks(100_49)] == [
        "trailing stop 0.5%: tick ₹100.49, 0.50% under the best ₹101.00 since the entry ₹100.00"]


def test_a_restored_short_trails_from_the_lowest_price_since_its_entry_and_says_when_it_entered():
    desk = Desk(trailing_stop_pct=1)
    desk.engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id="o-1", sequence=3, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=4,
        average_price_paise=100_00, ts_ns=T0930 - 600 * NS, request=trading_pb2.OrderRequest(
            token=SBIN, side=SELL, quantity=4, strategy_tag="mom", product=trading_pb2.PRODUCT_MIS))])
    assert desk.engine.since_entries() == {"mom": {SBIN: T0930 - 600 * NS}}

    desk.engine.restore_extremes("mom", SBIN, 101_00, 96_00)  # 1% over 96.00: 96.96

    assert desk.ticks(96_95) == []
    assert [s.reason for s in desk.ticks(96_96)] == [
        "trailing stop 1%: tick ₹96.96, 1.00% over the best ₹96.00 since the entry ₹100.00"]
    assert Desk(stop_loss_pct=1).engine.since_entries() == {}  # no trailing stop: nothing to read


def test_list_strategies_shows_each_position_with_its_stop_and_target_where_they_are_now():
    desk = Desk(stop_loss_pct=1, target_pct=2, trailing_stop_pct=1.5)
    desk.hold()
    desk.ticks(103_00)  # the best: the trail (101.45) is now above the fixed stop (99.00)

    (held,) = desk.engine.info(desk.strategy).positions
    assert (held.symbol, held.product, held.net_quantity, held.entry_price_paise, held.stop_paise, held.target_paise,
            held.stop_reached) == ("SBIN-EQ", trading_pb2.PRODUCT_MIS, 10, 100_00, 101_45, 102_00, False)

    short = Desk(stop_loss_pct=1)
    short.hold(SELL)
    short.ticks(101_00)  # reached: its exit under way
    (held,) = short.engine.info(short.strategy).positions
    assert (held.net_quantity, held.stop_paise, held.target_paise, held.stop_reached) == (-10, 101_00, 0, True)
    assert Desk(stop_loss_pct=1).engine.info(Desk().strategy).positions == []
