"""The value caps: rupees at stake in one instrument (max_position_value) and in all of them (max_gross_exposure).

A position is valued at the order's own price or the last price, the higher, for its instrument and at the last
price risk knows for the others (its average price when none is known), times the instrument's price factor;
working orders count as they do for max_position_quantity. Orders that shrink a position, and square-off orders,
always pass.
"""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock
from shared.contracts import market_pb2, trading_pb2
from tests.risk.factories import RELIANCE, fill, instruments, limits, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MARKET = trading_pb2.ORDER_TYPE_MARKET
MIS, NRML = trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_NRML
SBIN = 3045
CRUDE = 451669
HUNDRED = market_pb2.PriceFactor(numerator=100)
LAKH = 1_00_000_00  # Rs 1,00,000 in paise


def engine_with(clock: ManualClock, *fills: trading_pb2.OrderUpdate, **overrides: int) -> RiskEngine:
    """An engine (CRUDE has a price factor of 100) that has seen these fills, RELIANCE and SBIN last traded at
    Rs 1,290 and Rs 800."""
    book = instruments()
    book.add(market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26OCTFUT", exchange_segment="mcx_fo",
                                   tick_size_paise=100, lot_size=1, price_factor=HUNDRED))
    engine = RiskEngine(limits(**overrides), clock, book)
    engine.last_prices.update({RELIANCE: 1290_00, SBIN: 800_00})
    for update in fills:
        engine.on_order_update(update)
    return engine


def sbin(**fields) -> trading_pb2.OrderRequest:
    return order(**{"token": SBIN, "symbol": "SBIN-EQ", "price_paise": 800_00, **fields})


def crude_order(**fields) -> trading_pb2.OrderRequest:
    base = dict(token=CRUDE, exchange_segment="mcx_fo", symbol="CRUDEOIL26OCTFUT", quantity=1, price_paise=6000_00,
                product=NRML)
    return order(**{**base, **fields})


def crude_fill(side: int, quantity: int, price_paise: int) -> trading_pb2.OrderUpdate:
    update = fill(side, quantity, price_paise, token=CRUDE, product=NRML)
    update.request.price_factor.CopyFrom(HUNDRED)  # as risk stamped it on the order
    return update


# -- max_position_value ---------------------------------------------------------------------------------------------
def test_a_position_worth_more_than_max_position_value_is_denied_naming_the_rupees(clock):
    engine = engine_with(clock, fill(BUY, 50, 1290_00), max_position_value_paise=LAKH)

    decision = engine.decide(order(quantity=30))  # 80 x Rs 1,290 = Rs 1,03,200

    assert (decision.reason_code, decision.reason) == (
        "MAX_POSITION_VALUE", "resulting position 80 in RELIANCE-EQ (with open orders) is worth ₹1,03,200.00 at "
        "₹1,290.00, over max_position_value ₹1,00,000.00")


def test_a_buy_limit_far_below_the_market_is_valued_at_the_market_price(clock):
    engine = engine_with(clock, fill(BUY, 70, 1290_00), max_position_value_paise=LAKH, price_band_bps=0)

    decision = engine.decide(order(quantity=10, price_paise=1000_00))  # 80 x Rs 1,290, not 80 x Rs 1,000

    assert decision.reason_code == "MAX_POSITION_VALUE"


def test_a_position_worth_exactly_max_position_value_is_accepted(clock):
    engine = engine_with(clock, fill(BUY, 50, 1290_00), max_position_value_paise=80 * 1290_00)

    assert engine.decide(order(quantity=30)).accepted


def test_working_orders_on_the_same_side_count_toward_the_position_value(clock):
    engine = engine_with(clock, max_position_value_paise=LAKH)
    engine.decide(order(quantity=50))

    assert engine.decide(order(quantity=30)).reason_code == "MAX_POSITION_VALUE"


def test_a_short_position_is_valued_by_its_size(clock):
    engine = engine_with(clock, fill(SELL, 50, 1290_00), max_position_value_paise=LAKH)

    assert engine.decide(order(side=SELL, quantity=30)).reason_code == "MAX_POSITION_VALUE"


def test_a_market_order_values_the_position_at_the_last_price(clock):
    engine = engine_with(clock, max_position_value_paise=LAKH)

    assert engine.decide(order(quantity=80, order_type=MARKET, price_paise=0)).reason_code == "MAX_POSITION_VALUE"


def test_an_order_shrinking_a_position_over_max_position_value_is_accepted(clock):
    engine = engine_with(clock, fill(BUY, 200, 1290_00), max_position_value_paise=LAKH)

    assert engine.decide(order(side=SELL, quantity=100)).accepted  # still Rs 1,29,000 after it


def test_flipping_a_position_past_max_position_value_to_the_other_side_is_denied(clock):
    engine = engine_with(clock, fill(BUY, 50, 1290_00), max_position_value_paise=LAKH)

    assert engine.decide(order(side=SELL, quantity=150)).reason_code == "MAX_POSITION_VALUE"  # long 50 -> short 100


@pytest.mark.parametrize("cap", ["max_position_value_paise", "max_gross_exposure_paise"])
def test_a_square_off_order_is_exempt_from_the_value_caps(clock, cap):
    """Closing the MIS short buys, and takes the token's net (NRML long 100) further over the cap."""
    engine = engine_with(clock, fill(BUY, 100, 1290_00, product=NRML), fill(SELL, 20, 1290_00), **{cap: LAKH})

    decision = engine.decide(order(quantity=20, order_type=MARKET, price_paise=0, strategy_tag="SQUAREOFF"))

    assert (decision.accepted, decision.reason_code) == (True, "")


def test_the_position_value_counts_the_price_factor(clock):
    """2 lots at Rs 6,000 a barrel, 100 barrels a lot: Rs 12,00,000, not Rs 12,000."""
    engine = engine_with(clock, crude_fill(BUY, 1, 6000_00), max_position_value_paise=10 * LAKH,
                         max_order_value_paise=10 * LAKH)

    assert engine.decide(crude_order()).reason_code == "MAX_POSITION_VALUE"


def test_zero_max_position_value_is_no_limit(clock):
    engine = engine_with(clock, fill(BUY, 4000, 1290_00), max_position_value_paise=0)

    assert engine.decide(order(quantity=500)).accepted


# -- max_gross_exposure ---------------------------------------------------------------------------------------------
def test_gross_exposure_over_max_gross_exposure_is_denied_naming_the_rupees(clock):
    engine = engine_with(clock, fill(BUY, 100, 1290_00), max_gross_exposure_paise=2 * LAKH)

    decision = engine.decide(sbin(quantity=100))  # Rs 1,29,000 held + Rs 80,000

    assert (decision.reason_code, decision.reason) == (
        "MAX_GROSS_EXPOSURE", "gross exposure ₹2,09,000.00 with this order (every position and working order) "
        "exceeds max_gross_exposure ₹2,00,000.00")


def test_gross_exposure_exactly_at_max_gross_exposure_is_accepted(clock):
    engine = engine_with(clock, fill(BUY, 100, 1290_00), max_gross_exposure_paise=2_09_000_00)

    assert engine.decide(sbin(quantity=100)).accepted


def test_short_positions_count_toward_gross_exposure_by_their_size(clock):
    engine = engine_with(clock, fill(SELL, 100, 1290_00), max_gross_exposure_paise=2 * LAKH)

    assert engine.decide(sbin(quantity=100)).reason_code == "MAX_GROSS_EXPOSURE"


def test_working_orders_in_other_instruments_count_toward_gross_exposure(clock):
    engine = engine_with(clock, max_gross_exposure_paise=2 * LAKH)
    engine.decide(order(quantity=100))

    assert engine.decide(sbin(quantity=100)).reason_code == "MAX_GROSS_EXPOSURE"


def test_other_positions_are_valued_at_their_last_price(clock):
    engine = engine_with(clock, fill(BUY, 100, 1290_00), max_gross_exposure_paise=2 * LAKH)
    engine.on_ticks([market_pb2.Tick(token=RELIANCE, ltp_paise=1190_00)])

    assert engine.decide(sbin(quantity=100)).accepted  # Rs 1,19,000 + Rs 80,000


def test_a_position_without_a_known_price_is_valued_at_its_average_price(clock):
    engine = engine_with(clock, max_gross_exposure_paise=2_08_999_00)
    engine.last_prices.pop(SBIN)
    engine.restore_positions([trading_pb2.Position(token=SBIN, product=MIS, net_quantity=100,
                                                   average_price_paise=800_00)])

    decision = engine.decide(order(quantity=100))

    assert decision.reason_code == "MAX_GROSS_EXPOSURE" and "₹2,09,000.00" in decision.reason


def test_an_order_shrinking_a_position_is_accepted_over_max_gross_exposure(clock):
    engine = engine_with(clock, fill(BUY, 100, 1290_00), fill(BUY, 100, 800_00, token=SBIN),
                         max_gross_exposure_paise=LAKH)

    assert engine.decide(order(side=SELL, quantity=50)).accepted


def test_gross_exposure_counts_the_price_factor(clock):
    """1 lot of CRUDE at Rs 6,000 with factor 100 is Rs 6,00,000 at stake, not Rs 6,000."""
    engine = engine_with(clock, crude_fill(BUY, 1, 6000_00), max_gross_exposure_paise=6_10_000_00)
    engine.on_ticks([market_pb2.Tick(token=CRUDE, ltp_paise=6000_00)])

    assert engine.decide(order(quantity=10)).reason_code == "MAX_GROSS_EXPOSURE"  # + Rs 12,900


def test_zero_max_gross_exposure_is_no_limit(clock):
    engine = engine_with(clock, fill(BUY, 4000, 1290_00), max_gross_exposure_paise=0)

    assert engine.decide(sbin(quantity=900)).accepted
