"""RiskEngine.decide_modify: a change of a working order checked as the order it leaves, its rest counted once.

Pure RiskEngine on a ManualClock; fills and the OMS's updates come in as order updates.
"""

from __future__ import annotations

from services.risk.engine import REDUCING
from shared.contracts import trading_pb2
from tests.risk.factories import RELIANCE, fill, holding, limits, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


def changed(accepted: trading_pb2.OrderRequest, **terms: int) -> trading_pb2.OrderRequest:
    out = trading_pb2.OrderRequest()
    out.CopyFrom(accepted)
    for field, value in terms.items():
        setattr(out, field, value)
    return out


def update_of(request: trading_pb2.OrderRequest, status: int, filled: int = 0) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(client_order_id=request.client_order_id, status=status, request=request,
                                   filled_quantity=filled)


def test_a_change_is_checked_against_the_limits_as_the_whole_order_it_leaves(clock):
    engine = holding(clock)
    engine.set_limits(limits(max_order_quantity=50))
    working = order(quantity=40)
    assert engine.decide(working).accepted

    assert engine.decide_modify(changed(working, quantity=50), 0).accepted
    refused = engine.decide_modify(changed(working, quantity=60), 0)

    assert (refused.accepted, refused.reason_code) == (False, "MAX_ORDER_QUANTITY")


def test_the_rest_of_a_partly_filled_order_is_what_counts_against_the_position_limit(clock):
    """Position 0 + 30 filled of a buy of 50; max_position_quantity 100. Growing the order to 130 leaves 100 to fill on
    top of the 30 held: 130, refused. To 100: 70 more, 100 in all, accepted. (The filled 30 counted again as working
    would refuse 100 too.)"""
    engine = holding(clock, fill(BUY, 30, 1290_00))
    engine.set_limits(limits(max_position_quantity=100, max_order_quantity=500))
    working = order(quantity=50)
    assert engine.decide(working).accepted
    engine.on_order_update(update_of(working, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, filled=30))

    too_much = engine.decide_modify(changed(working, quantity=130), 30)
    fits = engine.decide_modify(changed(working, quantity=100), 30)

    assert (too_much.accepted, too_much.reason_code) == (False, "MAX_POSITION_QUANTITY")
    assert fits.accepted


def test_a_change_adds_no_open_order(clock):
    engine = holding(clock)
    engine.set_limits(limits(max_open_orders=1))
    working = order()
    assert engine.decide(working).accepted

    assert engine.decide_modify(changed(working, price_paise=1289_00), 0).accepted
    assert len(engine.open_orders) == 1


def test_while_reducing_a_change_passes_only_if_the_order_still_only_shrinks_the_position(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00))
    exit_order = order(side=SELL, quantity=60, price_paise=1295_00)
    assert engine.decide(exit_order).accepted
    engine._move(REDUCING, "test")

    assert engine.decide_modify(changed(exit_order, quantity=100), 0).accepted
    flips = engine.decide_modify(changed(exit_order, quantity=120), 0)

    assert (flips.accepted, flips.reason_code) == (False, "REDUCING_ONLY")


def test_only_a_working_order_of_the_same_instrument_side_and_product_can_be_changed(clock):
    engine = holding(clock)
    working = order()
    assert engine.decide(working).accepted

    unknown = engine.decide_modify(order(client_order_id="never-placed"), 0)
    other_side = engine.decide_modify(changed(working, side=SELL), 0)
    other_product = engine.decide_modify(changed(working, product=trading_pb2.PRODUCT_CNC), 0)

    assert unknown.reason_code == "NOT_WORKING"
    assert other_side.reason_code == other_product.reason_code == "INVALID_ORDER"


def test_an_accepted_change_counts_at_the_larger_terms_until_the_oms_says_which_hold(clock):
    engine = holding(clock)
    working = order(quantity=40)
    assert engine.decide(working).accepted

    assert engine.decide_modify(changed(working, quantity=20), 0).accepted
    assert engine.open_orders[working.client_order_id].quantity == 40  # the old 40 may still be what works
    engine.on_order_update(update_of(changed(working, quantity=20), trading_pb2.ORDER_STATUS_OPEN))
    assert engine.open_orders[working.client_order_id].quantity == 20


def test_a_change_the_broker_has_not_answered_yet_counts_at_the_larger_terms_still(clock):
    """The OMS says MODIFY_PENDING with the terms asked for before the broker answers; the broker may refuse them and
    keep the old 40 working. max_position_quantity 50: a buy of 20 meanwhile would make 60 at the broker."""
    engine = holding(clock)
    engine.set_limits(limits(max_position_quantity=50))
    working = order(quantity=40)
    assert engine.decide(working).accepted
    assert engine.decide_modify(changed(working, quantity=10), 0).accepted

    engine.on_order_update(update_of(changed(working, quantity=10), trading_pb2.ORDER_STATUS_MODIFY_PENDING))

    assert engine.open_orders[working.client_order_id].quantity == 40
    assert engine.decide(order(quantity=20)).reason_code == "MAX_POSITION_QUANTITY"
    engine.on_order_update(update_of(changed(working, quantity=10), trading_pb2.ORDER_STATUS_OPEN))  # it holds
    assert engine.decide(order(quantity=20)).accepted


def test_a_change_counts_the_fills_risk_has_taken_not_those_the_oms_has_ahead_of_it(clock):
    """A buy of 50, max_position_quantity 50. The OMS has 40 filled, its update still on its way to risk (position 0
    here): a change to 90 checked as 50 more on top of 0 would pass, and end at 90 once the 40 arrive."""
    engine = holding(clock)
    engine.set_limits(limits(max_position_quantity=50, max_order_quantity=500))
    working = order(quantity=50)
    assert engine.decide(working).accepted

    refused = engine.decide_modify(changed(working, quantity=90), 40)

    assert (refused.accepted, refused.reason_code) == (False, "MAX_POSITION_QUANTITY")
    part = update_of(working, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, filled=40)
    part.last_fill_quantity, part.last_fill_price_paise = 40, 1290_00
    engine.on_order_update(part)  # the 40 reach risk: held now, 10 still to fill
    assert engine.positions.net_quantity(RELIANCE) == 40
    assert engine.decide_modify(changed(working, quantity=60), 40).reason_code == "MAX_POSITION_QUANTITY"
    assert engine.decide_modify(changed(working, quantity=50), 40).accepted


def test_a_change_off_the_tick_size_or_beyond_the_band_is_refused(clock):
    engine = holding(clock)
    working = order()
    assert engine.decide(working).accepted

    off_tick = engine.decide_modify(changed(working, price_paise=1290_01), 0)
    far = engine.decide_modify(changed(working, price_paise=1000_00), 0)

    assert off_tick.reason_code == "TICK_SIZE"
    assert far.reason_code == "PRICE_BAND"
    assert engine.last_prices[RELIANCE] == 1290_00
