"""Intraday square-off at square_off_time_ist: market orders closing every MIS position, once a day."""

from __future__ import annotations

from datetime import timedelta

from services.risk.engine import RiskEngine
from shared.clock import ist_ns
from shared.contracts import market_pb2, trading_pb2
from tests.risk.factories import DAY, NIFTY_FUT, RELIANCE, fill, instruments, limits

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
CRUDE = 450_001  # an MCX crude oil future


def holding(clock, *fills: trading_pb2.OrderUpdate, **overrides) -> RiskEngine:
    engine = RiskEngine(limits(**overrides), clock, instruments())
    for update in fills:
        engine.on_order_update(update)
    return engine


def test_no_square_off_orders_before_square_off_time(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 14, 59))

    assert engine.square_off_due() == []


def test_at_square_off_time_a_long_mis_position_gets_a_market_sell(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))

    [sq] = engine.square_off_due()

    assert (sq.client_order_id, sq.side, sq.quantity, sq.order_type, sq.product, sq.strategy_tag) == (
        f"SQ-20260121-2885-1-0-{engine.run_tag}", SELL, 10, trading_pb2.ORDER_TYPE_MARKET, trading_pb2.PRODUCT_MIS,
        "SQUAREOFF")


def test_a_short_mis_position_gets_a_market_buy(clock):
    engine = holding(clock, fill(SELL, 25, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))

    assert [(o.side, o.quantity) for o in engine.square_off_due()] == [(BUY, 25)]


def test_delivery_positions_are_not_squared_off(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00, product=trading_pb2.PRODUCT_CNC))
    clock.set(ist_ns(DAY, 15, 15))

    assert engine.square_off_due() == []


def test_square_off_is_not_repeated_while_its_orders_still_work(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))
    [first] = engine.square_off_due()
    assert engine.decide(first).accepted
    clock.advance(60)

    assert engine.square_off_due() == []


def test_a_rejected_square_off_is_retried_with_a_new_order_after_the_retry_interval(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))
    [first] = engine.square_off_due()
    engine.decide(first)
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id=first.client_order_id, status=trading_pb2.ORDER_STATUS_REJECTED, request=first))
    clock.advance(10)
    assert engine.square_off_due() == []  # not before the retry interval

    clock.advance(25)
    [retry] = engine.square_off_due()

    assert (retry.client_order_id, retry.side, retry.quantity) == (f"SQ-20260121-2885-1-0-{engine.run_tag}-r1",
                                                                   SELL, 10)


def test_square_off_runs_again_the_next_day(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))
    engine.square_off_due()

    clock.set(ist_ns(DAY + timedelta(days=1), 15, 15))

    assert [o.client_order_id for o in engine.square_off_due()] == [f"SQ-20260122-2885-1-0-{engine.run_tag}"]


def test_square_off_orders_pass_the_checks_even_when_halted(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    engine.set_kill_switch(True, "stop")
    clock.set(ist_ns(DAY, 15, 15))

    decisions = [engine.decide(o) for o in engine.square_off_due()]

    assert [d.accepted for d in decisions] == [True]


def test_a_position_above_the_freeze_quantity_is_closed_in_chunks(clock):
    engine = holding(clock, fill(BUY, 3600, 23500_00, token=NIFTY_FUT), max_order_quantity=10_000,
                     max_order_value_paise=10**13, max_position_quantity=10_000)
    clock.set(ist_ns(DAY, 15, 15))

    orders = engine.square_off_due()

    assert [o.quantity for o in orders] == [1800, 1800]
    assert all(engine.decide(o).accepted for o in orders)


def test_a_resting_exit_order_is_cancelled_at_square_off_time_then_the_whole_position_is_closed(clock):
    """A take-profit limit far from the price must not keep an intraday position open past square-off time: it is
    cancelled (as the broker's own square-off does), and the market order follows once the cancel is confirmed,
    never while the exit could still fill (the two together could close more than the position)."""
    engine = holding(clock, fill(BUY, 10, 1290_00))
    exit_order = trading_pb2.OrderRequest(client_order_id="exit", token=RELIANCE, side=SELL, quantity=10,
                                          order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=1350_00,
                                          product=trading_pb2.PRODUCT_MIS, strategy_tag="MOMENTUM_RSI")
    engine.on_order_update(trading_pb2.OrderUpdate(client_order_id="exit", status=trading_pb2.ORDER_STATUS_OPEN,
                                                   request=exit_order))
    clock.set(ist_ns(DAY, 15, 15))

    assert engine.square_off_cancels() == ["exit"]
    assert engine.square_off_due() == []  # the exit is still working
    assert engine.square_off_cancels() == []  # asked once per retry interval

    engine.on_order_update(trading_pb2.OrderUpdate(client_order_id="exit",
                                                   status=trading_pb2.ORDER_STATUS_CANCELLED, request=exit_order))
    clock.advance(1)

    assert [(o.side, o.quantity, o.strategy_tag) for o in engine.square_off_due()] == [(SELL, 10, "SQUAREOFF")]
    assert engine._cancel_asked == {}  # an ended order's retry time is not kept: a run of weeks holds no more


def test_orders_of_a_segment_not_yet_at_its_square_off_time_are_left_working(clock):
    engine = holding(clock)
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="cnc", status=trading_pb2.ORDER_STATUS_OPEN, request=trading_pb2.OrderRequest(
            client_order_id="cnc", token=RELIANCE, side=BUY, quantity=1, product=trading_pb2.PRODUCT_CNC)))
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="mis", status=trading_pb2.ORDER_STATUS_OPEN, request=trading_pb2.OrderRequest(
            client_order_id="mis", token=RELIANCE, side=BUY, quantity=1, product=trading_pb2.PRODUCT_MIS)))
    clock.set(ist_ns(DAY, 15, 14))
    assert engine.square_off_cancels() == []

    clock.set(ist_ns(DAY, 15, 15))

    assert engine.square_off_cancels() == ["mis"]  # delivery orders are not the square-off's business


def test_a_restarted_risk_module_squares_off_with_ids_the_oms_has_not_seen(clock):
    """The first run's order was rejected; the restarted run's first attempt must be a new order, not the old id
    (the OMS would ignore it as a duplicate and the position would stay open)."""
    first_run = holding(clock, fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 15))
    [before] = first_run.square_off_due()
    clock.advance(20)  # the restart

    restarted = holding(clock, fill(BUY, 10, 1290_00))
    [after] = restarted.square_off_due()

    assert after.client_order_id != before.client_order_id
    assert restarted.decide(after).accepted


def test_a_square_off_lot_worth_more_than_max_order_value_still_goes_out(clock):
    """One NIFTY lot rose above max_order_value while held: closing it must not be refused."""
    engine = holding(clock, fill(BUY, 75, 13_000_00, token=NIFTY_FUT), max_order_value_paise=10_00_000_00)
    engine.last_prices[NIFTY_FUT] = 14_000_00  # the lot is now worth ₹10.5 lakh
    clock.set(ist_ns(DAY, 15, 15))

    decisions = [engine.decide(o) for o in engine.square_off_due()]

    assert [(d.accepted, d.order.quantity) for d in decisions] == [(True, 75)]


def test_an_mcx_intraday_position_is_squared_off_at_its_segments_time_not_at_1515(clock):
    book = instruments()
    book.add(market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo",
                                   tick_size_paise=100, lot_size=1))
    engine = RiskEngine(limits(), clock, book, square_off_times={"mcx_fo": (23, 0)})
    engine.on_order_update(fill(BUY, 10, 1290_00))
    engine.on_order_update(fill(BUY, 5, 6_000_00, token=CRUDE))
    clock.set(ist_ns(DAY, 15, 15))

    at_1515 = [(d.order.token, d.order.quantity) for d in map(engine.decide, engine.square_off_due())]
    clock.set(ist_ns(DAY, 23, 0))
    at_2300 = [(d.order.token, d.order.quantity) for d in map(engine.decide, engine.square_off_due())]

    assert (at_1515, at_2300) == ([(RELIANCE, 10)], [(CRUDE, 5)])
