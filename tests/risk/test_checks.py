"""Every pre-trade check of the RiskEngine: one order accepted, one denied with a reason naming the limit."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.risk.config import RiskSettings
from services.risk.engine import MAX_TEXT_CHARS, RiskEngine
from shared.clock import ist_ns
from shared.config import load
from shared.contracts import market_pb2, trading_pb2
from shared.errors import ConfigError
from tests.risk.factories import DAY, NIFTY_FUT, RELIANCE, fill, holding, instruments, limits, order, square_off

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MARKET, LIMIT = trading_pb2.ORDER_TYPE_MARKET, trading_pb2.ORDER_TYPE_LIMIT
STOP_MARKET = trading_pb2.ORDER_TYPE_STOP_MARKET
STOP_LIMIT = trading_pb2.ORDER_TYPE_STOP_LIMIT


def test_a_plain_limit_order_inside_every_limit_is_accepted(engine):
    decision = engine.decide(order(client_order_id="ok-1"))

    assert decision.accepted and decision.reason_code == "" and decision.order.client_order_id == "ok-1"


def test_a_decision_carries_the_wall_clock_time_it_was_made(engine):
    """The OMS's age limit for an order with no tick behind it (a manual one) runs from here, on the wall clock
    whatever clock the session runs on (the engine's is a simulated 10:00 IST)."""
    import time

    before = time.time_ns()
    decision = engine.decide(order())

    assert before <= decision.decided_wall_ns <= time.time_ns()


def test_an_accepted_order_counts_as_open(engine):
    engine.decide(order(client_order_id="ok-1"))

    assert list(engine.open_orders) == ["ok-1"]


def test_quantity_above_max_order_quantity_is_denied_naming_the_limit(engine):
    decision = engine.decide(order(quantity=5000, order_type=MARKET, price_paise=0))

    assert (decision.accepted, decision.reason_code) == (False, "MAX_ORDER_QUANTITY")
    assert decision.reason == "quantity 5000 exceeds max_order_quantity 1000"


def test_quantity_at_max_order_quantity_is_accepted(clock):
    engine = RiskEngine(limits(max_order_value_paise=10**12), clock, instruments())

    assert engine.decide(order(quantity=1000)).accepted


def test_zero_quantity_is_denied(engine):
    assert engine.decide(order(quantity=0)).reason_code == "INVALID_QUANTITY"


def test_quantity_off_the_lot_size_is_denied(engine):
    decision = engine.decide(order(token=NIFTY_FUT, quantity=100, price_paise=23500_00))

    assert decision.reason_code == "LOT_SIZE"
    assert decision.reason == "quantity 100 is not a multiple of lot_size 75 of NIFTY26JANFUT"


def test_quantity_in_whole_lots_is_accepted(clock):
    engine = RiskEngine(limits(max_order_value_paise=10**12, max_order_quantity=5000), clock, instruments())

    assert engine.decide(order(token=NIFTY_FUT, quantity=150, price_paise=23500_00)).accepted


def test_quantity_above_the_exchange_freeze_quantity_is_denied(clock):
    engine = RiskEngine(limits(max_order_value_paise=10**13, max_order_quantity=10_000,
                               max_position_quantity=10_000), clock, instruments())

    decision = engine.decide(order(token=NIFTY_FUT, quantity=1875, price_paise=23500_00))

    assert decision.reason_code == "FREEZE_QUANTITY"


def test_unknown_token_is_denied(engine):
    assert engine.decide(order(token=999_999)).reason_code == "UNKNOWN_INSTRUMENT"


def test_unspecified_side_is_denied(engine):
    assert engine.decide(order(side=trading_pb2.SIDE_UNSPECIFIED)).reason == "side is unspecified; use BUY or SELL"


def test_limit_price_off_the_tick_size_is_denied_not_snapped(engine):
    decision = engine.decide(order(price_paise=1290_03))

    assert decision.reason_code == "TICK_SIZE"
    assert decision.reason == "price_paise 129003 is not a multiple of tick_size_paise 5 of RELIANCE-EQ"


def test_limit_order_without_a_price_is_denied(engine):
    assert engine.decide(order(price_paise=0)).reason_code == "INVALID_PRICE"


def test_stop_order_without_a_trigger_is_denied(engine):
    decision = engine.decide(order(order_type=STOP_MARKET, price_paise=0, trigger_price_paise=0))

    assert (decision.reason_code, decision.reason) == (
        "INVALID_PRICE", "trigger_price_paise 0 must be positive for a STOP_MARKET order")


def test_market_order_ignores_tick_size_and_is_accepted(engine):
    assert engine.decide(order(order_type=MARKET, price_paise=0)).accepted


def test_limit_price_outside_the_band_around_the_last_price_is_denied(engine):
    decision = engine.decide(order(price_paise=1360_00))  # 5.4% above 1290.00, band 500 bps

    assert decision.reason_code == "PRICE_BAND"
    assert decision.reason == ("price_paise 136000 is 542 bps from the last price 129000; "
                               "price_band_bps 500 allows no more")


def test_a_protective_stop_beyond_the_band_is_accepted_it_waits(clock):
    """A sell stop 7% under a long (a 20-30% one under an option) is the trader's risk to take, not a fat finger."""
    engine = holding(clock, fill(BUY, 100, 1290_00))

    stop = order(side=SELL, quantity=100, order_type=STOP_MARKET, price_paise=0, trigger_price_paise=1200_00)

    assert engine.decide(stop).accepted


def test_a_stop_that_would_trigger_at_once_is_banded_like_a_market_order_price(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00))

    stop = order(side=SELL, quantity=100, order_type=STOP_MARKET, price_paise=0, trigger_price_paise=1400_00)

    assert engine.decide(stop).reason_code == "PRICE_BAND"


def test_a_waiting_stop_limits_price_is_banded_from_its_trigger(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00))
    near = order(side=SELL, quantity=50, order_type=STOP_LIMIT, price_paise=1195_00, trigger_price_paise=1200_00)
    far = order(side=SELL, quantity=50, order_type=STOP_LIMIT, price_paise=1100_00, trigger_price_paise=1200_00)

    assert engine.decide(near).accepted
    denied = engine.decide(far)
    assert (denied.reason_code, denied.reason) == ("PRICE_BAND", "price_paise 110000 is 833 bps from its trigger "
                                                                 "120000; price_band_bps 500 allows no more")


def test_limit_price_inside_the_band_is_accepted(engine):
    assert engine.decide(order(price_paise=1350_00)).accepted


def test_order_value_above_max_order_value_is_denied(clock):
    engine = RiskEngine(limits(max_order_value_paise=100_000_00), clock, instruments())

    decision = engine.decide(order(quantity=100))  # 100 x ₹1,290 = ₹1,29,000

    assert decision.reason_code == "MAX_ORDER_VALUE"
    assert decision.reason == "order value ₹1,29,000.00 exceeds max_order_value ₹1,00,000.00"


def test_market_order_is_valued_at_the_last_price(clock):
    engine = RiskEngine(limits(max_order_value_paise=100_000_00), clock, instruments())
    engine.last_prices[RELIANCE] = 1290_00

    assert engine.decide(order(quantity=100, order_type=MARKET, price_paise=0)).reason_code == "MAX_ORDER_VALUE"


def test_a_sell_limit_under_the_market_is_valued_at_the_market_it_fills_at(clock):
    """A sell at ₹1,000 with the market at ₹1,290 fills near ₹1,290: 100 are ₹1,29,000, over ₹1,00,000 as the
    same MARKET order is. A buy limit fills at its price or under: valued at it."""
    engine = RiskEngine(limits(max_order_value_paise=100_000_00, price_band_bps=0), clock, instruments())
    engine.last_prices[RELIANCE] = 1290_00

    assert engine.decide(order(side=SELL, quantity=100, price_paise=1000_00)).reason_code == "MAX_ORDER_VALUE"
    assert engine.decide(order(side=SELL, quantity=70, price_paise=1300_00)).accepted  # ₹91,000 at its limit
    assert engine.decide(order(side=BUY, quantity=100, price_paise=1000_00)).accepted  # ₹1,00,000 at most


def test_market_order_without_any_price_is_denied(clock):
    engine = RiskEngine(limits(), clock, instruments())

    assert engine.decide(order(order_type=MARKET, price_paise=0)).reason_code == "NO_PRICE"


def test_resulting_position_above_max_position_quantity_is_denied(clock):
    engine = RiskEngine(limits(max_position_quantity=100), clock, instruments())
    engine.on_order_update(fill(BUY, 80, 1290_00))

    decision = engine.decide(order(quantity=30))

    assert decision.reason_code == "MAX_POSITION_QUANTITY"
    assert "resulting position 110" in decision.reason and "max_position_quantity 100" in decision.reason


def test_open_orders_count_toward_the_position_limit(clock):
    engine = RiskEngine(limits(max_position_quantity=100), clock, instruments())
    engine.decide(order(quantity=60))

    assert engine.decide(order(quantity=60)).reason_code == "MAX_POSITION_QUANTITY"


def test_an_order_shrinking_an_oversized_position_passes_the_position_limit(clock):
    engine = RiskEngine(limits(max_position_quantity=100), clock, instruments())
    engine.on_order_update(fill(BUY, 200, 1290_00))
    engine.set_limits(limits(max_position_quantity=50))

    assert engine.decide(order(side=SELL, quantity=100)).accepted


def test_an_oversized_position_may_not_be_flipped_past_the_limit_to_the_other_side(clock):
    engine = RiskEngine(limits(max_position_quantity=100), clock, instruments())
    engine.on_order_update(fill(SELL, 200, 1290_00))
    engine.set_limits(limits(max_position_quantity=50))

    decision = engine.decide(order(side=BUY, quantity=400))  # short 200 -> long 200

    assert decision.reason_code == "MAX_POSITION_QUANTITY"


def test_max_open_orders_reached_denies_the_next_order(clock):
    engine = RiskEngine(limits(max_open_orders=2), clock, instruments())
    engine.decide(order())
    engine.decide(order())

    decision = engine.decide(order())

    assert (decision.reason_code, decision.reason) == ("MAX_OPEN_ORDERS", "open orders 2 reached max_open_orders 2")


def test_an_exit_that_only_shrinks_a_position_is_not_held_back_by_resting_orders_at_max_open_orders(clock):
    """A grid of resting entries at the cap must not refuse a held position's stop exit: it adds no exposure."""
    engine = holding(clock, fill(BUY, 10, 1290_00))
    engine.set_limits(limits(max_open_orders=2))
    for price in (1280_00, 1270_00):
        engine.decide(order(token=RELIANCE, quantity=1, price_paise=price))

    decision = engine.decide(order(side=SELL, quantity=10, order_type=MARKET, price_paise=0))

    assert decision.accepted, decision.reason


def test_an_order_larger_than_the_position_it_closes_still_waits_for_an_open_order_slot(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    engine.set_limits(limits(max_open_orders=1))
    engine.decide(order(quantity=1, price_paise=1280_00))

    decision = engine.decide(order(side=SELL, quantity=20, order_type=MARKET, price_paise=0))  # long 10 -> short 10

    assert decision.reason_code == "MAX_OPEN_ORDERS"


def test_a_terminal_order_update_frees_an_open_order_slot(clock):
    engine = RiskEngine(limits(max_open_orders=1), clock, instruments())
    engine.decide(order(client_order_id="a"))

    engine.on_order_update(trading_pb2.OrderUpdate(client_order_id="a", status=trading_pb2.ORDER_STATUS_CANCELLED))

    assert engine.decide(order()).accepted


def test_orders_faster_than_max_orders_per_second_are_denied(clock):
    engine = RiskEngine(limits(max_orders_per_second=2), clock, instruments())
    engine.decide(order())
    engine.decide(order())

    decision = engine.decide(order())

    assert decision.reason_code == "RATE_LIMIT" and "max_orders_per_second 2" in decision.reason


def test_the_submit_rate_refills_as_the_clock_moves(clock):
    engine = RiskEngine(limits(max_orders_per_second=2), clock, instruments())
    engine.decide(order())
    engine.decide(order())
    clock.advance(0.5)

    assert engine.decide(order()).accepted


def test_the_submit_rate_refills_after_the_clock_steps_back(clock):
    """A wall clock corrected backwards (NTP) by a minute must not refuse every order for that minute."""
    engine = RiskEngine(limits(max_orders_per_second=2), clock, instruments())
    engine.decide(order())
    engine.decide(order())
    clock.set(clock.now_ns() - 60 * 10**9)
    assert engine.decide(order()).reason_code == "RATE_LIMIT"  # no time has passed that the bucket can see
    clock.advance(0.5)

    assert engine.decide(order()).accepted  # not only 60 s later, once the clock is past where it was


def test_a_square_off_burst_leaves_the_submit_rate_empty_not_in_debt(clock):
    """Square-off orders pass the rate check but take its tokens: a burst of them used to drive the bucket far below
    zero, and every other order, a stop's exit among them, was refused RATE_LIMIT for seconds after it."""
    engine = holding(clock, fill(BUY, 100, 1290_00))
    engine.set_limits(limits(max_orders_per_second=2))
    for _ in range(6):
        assert engine.decide(square_off(side=SELL, quantity=10)).accepted
    clock.advance(0.5)  # one token back

    decision = engine.decide(order(side=SELL, quantity=10, order_type=MARKET, price_paise=0))

    assert decision.accepted, decision.reason


def test_an_exit_still_waits_for_the_submit_rate(clock):
    """The broker's own order rate is real: only square-off orders skip the check."""
    engine = holding(clock, fill(BUY, 100, 1290_00))
    engine.set_limits(limits(max_orders_per_second=1))
    engine.decide(order(side=SELL, quantity=10, order_type=MARKET, price_paise=0))

    decision = engine.decide(order(side=SELL, quantity=10, order_type=MARKET, price_paise=0))

    assert decision.reason_code == "RATE_LIMIT"


def test_a_denied_order_does_not_use_up_the_submit_rate(clock):
    engine = RiskEngine(limits(max_orders_per_second=1), clock, instruments())
    engine.decide(order(quantity=0))

    assert engine.decide(order()).accepted


def test_orders_outside_market_hours_are_denied(clock):
    clock.set(ist_ns(DAY, 9, 0))
    engine = RiskEngine(limits(), clock, instruments())

    decision = engine.decide(order())

    assert decision.reason_code == "MARKET_CLOSED" and "Wed 09:00 IST" in decision.reason


def test_orders_on_a_saturday_are_denied(clock):
    clock.set(ist_ns(DAY.replace(day=24), 11, 0))
    engine = RiskEngine(limits(), clock, instruments())

    assert engine.decide(order()).reason_code == "MARKET_CLOSED"


def test_market_hours_are_not_checked_when_enforcement_is_off(clock):
    clock.set(ist_ns(DAY, 20, 0))
    engine = RiskEngine(limits(enforce_market_hours=False), clock, instruments())

    assert engine.decide(order(product=trading_pb2.PRODUCT_CNC)).accepted


def test_mis_order_opening_a_position_after_square_off_time_is_denied(engine, clock):
    clock.set(ist_ns(DAY, 15, 16))

    decision = engine.decide(order())

    assert (decision.reason_code, decision.reason) == (
        "SQUARE_OFF_TIME", "after square_off_time_ist 15:15 no MIS order may increase a position")


def test_mis_order_closing_a_position_after_square_off_time_is_accepted(engine, clock):
    engine.on_order_update(fill(BUY, 10, 1290_00))
    clock.set(ist_ns(DAY, 15, 16))

    assert engine.decide(order(side=SELL, quantity=10)).accepted


def test_delivery_order_after_square_off_time_is_accepted(engine, clock):
    clock.set(ist_ns(DAY, 15, 16))

    assert engine.decide(order(product=trading_pb2.PRODUCT_CNC)).accepted


def test_a_replayed_client_order_id_is_denied_as_a_duplicate(engine):
    engine.decide(order(client_order_id="same"))

    assert engine.decide(order(client_order_id="same")).reason_code == "DUPLICATE_ORDER"


def test_a_client_order_id_accepted_yesterday_is_still_a_duplicate_after_midnight(engine, clock):
    """A signal replayed across midnight (a resumed stream): the OMS ignores an id it holds, so accepted again it
    would stay counted as an open order for good, taking a slot and holding up that token's square-off."""
    clock.set(ist_ns(DAY, 15, 0))
    assert engine.decide(order(client_order_id="late")).accepted
    clock.set(ist_ns(DAY + timedelta(days=1), 9, 15))

    assert engine.decide(order(client_order_id="late")).reason_code == "DUPLICATE_ORDER"


@pytest.mark.parametrize("field", ["client_order_id", "strategy_tag", "symbol", "signal_id"])
def test_an_order_with_an_overlong_text_field_is_refused_naming_it(engine, field):
    """Found by the gRPC request fuzz: a 400 kB strategy_tag was accepted, stored, and echoed in every stream
    and list; a broker tag or symbol is never that long."""
    refused = engine.decide(order(**{field: "x" * (MAX_TEXT_CHARS + 1)}))

    assert (refused.accepted, refused.reason_code) == (False, "INVALID_ORDER") and field in refused.reason


def test_orders_on_a_configured_exchange_holiday_are_denied_saying_so(clock, exchange_holidays):
    exchange_holidays(DAY)
    clock.set(ist_ns(DAY, 11, 0))
    engine = RiskEngine(limits(), clock, instruments())

    decision = engine.decide(order())

    assert decision.reason_code == "MARKET_CLOSED" and f"{DAY} is an exchange holiday" in decision.reason


def test_a_special_session_opens_a_weekend_evening_and_closes_outside_it(clock, special_sessions):
    """Diwali's Muhurat trading on a Sunday evening: closed all day by the weekday rule, open for its hour."""
    sunday = date(2026, 11, 8)
    special_sessions("2026-11-08 nse_cm 18:00-19:15")
    engine = RiskEngine(limits(), clock, instruments())
    engine.last_prices[RELIANCE] = 1290_00

    clock.set(ist_ns(sunday, 18, 30))
    assert engine.decide(order(client_order_id="in")).accepted
    clock.set(ist_ns(sunday, 19, 5))  # MIS squared off 15 minutes before its close, as on a regular day
    late = engine.decide(order(client_order_id="late"))
    clock.set(ist_ns(sunday, 11, 0))
    refused = engine.decide(order(client_order_id="morning"))

    assert (late.reason_code, "19:00" in late.reason) == ("SQUARE_OFF_TIME", True)
    assert refused.reason_code == "MARKET_CLOSED" and "special session for nse_cm, 18:00-19:15" in refused.reason


def test_mcx_evening_on_an_nse_holiday_trades_while_nse_stays_closed(clock, exchange_holidays, special_sessions):
    exchange_holidays(DAY)
    special_sessions(f"{DAY} mcx_fo 17:00-23:55")
    clock.set(ist_ns(DAY, 19, 0))
    engine = with_crude(clock)

    assert engine.decide(crude_order()).accepted
    assert "is an exchange holiday" in engine.decide(order()).reason


CRUDE = 450_001  # an MCX crude oil future: trades 09:00-23:30 IST


def with_crude(clock) -> RiskEngine:
    book = instruments()
    book.add(market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo",
                                   tick_size_paise=100, lot_size=1))
    return RiskEngine(limits(), clock, book)


def crude_order(**fields) -> trading_pb2.OrderRequest:
    return order(token=CRUDE, exchange_segment="mcx_fo", symbol="CRUDEOIL26JANFUT", price_paise=6_000_00,
                 product=trading_pb2.PRODUCT_NRML, **fields)


def test_an_mcx_order_in_the_evening_session_is_inside_market_hours(clock):
    clock.set(ist_ns(DAY, 19, 0))
    engine = with_crude(clock)

    assert engine.decide(crude_order()).accepted
    assert engine.decide(order()).reason_code == "MARKET_CLOSED"  # NSE closed at 15:30


def test_an_mcx_order_after_its_close_is_denied_naming_the_segment_session(clock):
    clock.set(ist_ns(DAY, 23, 56))
    engine = with_crude(clock)

    decision = engine.decide(crude_order())

    assert decision.reason_code == "MARKET_CLOSED" and "mcx_fo trades 09:00-23:55 IST" in decision.reason


@pytest.mark.parametrize(("day", "open_at_2345"), [
    (date(2026, 1, 21), True),  # US standard time: MCX non-agri trades to 23:55
    (date(2026, 3, 6), True),  # the Friday before the US clocks go forward (Sunday 8 March)
    (date(2026, 3, 9), False),  # the Monday after: to 23:30
    (date(2026, 7, 15), False),
    (date(2026, 10, 30), False),  # the Friday before they go back (Sunday 1 November)
    (date(2026, 11, 2), True),
])
def test_mcx_closes_at_2330_while_the_us_keeps_daylight_time_and_at_2355_otherwise(clock, day, open_at_2345):
    """MCX's circulars each March and November: its non-agri contracts follow the US markets' close."""
    clock.set(ist_ns(day, 23, 45))
    engine = with_crude(clock)

    decision = engine.decide(crude_order())

    assert decision.accepted == open_at_2345, decision.reason
    if not open_at_2345:
        assert "mcx_fo trades 09:00-23:30 IST" in decision.reason


def test_a_configured_session_replaces_the_built_in_one(clock):
    clock.set(ist_ns(DAY, 23, 45))
    settings = load(RiskSettings, {"risk": {"sessions": {"mcx_fo": "09:00-23:55"}}})
    engine = with_crude(clock)
    engine.sessions = settings.market_sessions()

    assert engine.decide(crude_order()).accepted


def test_a_malformed_session_is_a_config_error_naming_the_segment():
    with pytest.raises(ConfigError, match=r"sessions.*mcx_fo.*HH:MM-HH:MM"):
        load(RiskSettings, {"risk": {"sessions": {"mcx_fo": "9 to 23"}}})


@pytest.mark.parametrize("field", ["order_type", "product", "validity"])
def test_an_order_with_an_enum_number_the_contract_does_not_define_is_invalid(clock, field):
    """A proto3 enum field takes any number (a client's bug, or a newer contract): such an order is never placed."""
    engine = holding(clock)

    decision = engine.decide(order(**{field: 99}))

    assert (decision.accepted, decision.reason_code) == (False, "INVALID_ORDER")
    assert decision.reason.startswith(f"{field}: 99 is not one the contract defines")
