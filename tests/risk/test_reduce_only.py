"""SQUAREOFF orders are reduce-only in every trading state, counting working orders on the same side.

Pure RiskEngine on a ManualClock; fills come in as OMS order updates.
"""

from __future__ import annotations

from shared.contracts import trading_pb2
from tests.risk.factories import fill, holding, order, square_off

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MIS, CNC = trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_CNC


def test_a_second_squareoff_while_the_first_still_works_is_denied_when_active(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00))
    first = engine.decide(square_off(side=SELL, quantity=100))

    second = engine.decide(square_off(side=SELL, quantity=100))

    assert first.accepted
    assert (second.accepted, second.reason_code) == (False, "REDUCE_ONLY")


def test_a_squareoff_with_no_position_is_denied_when_active(clock):
    engine = holding(clock)

    decision = engine.decide(square_off(side=SELL, quantity=10))

    assert (decision.accepted, decision.reason_code) == (False, "REDUCE_ONLY")


def test_a_squareoff_that_reduces_the_position_is_accepted_when_active(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00))

    assert engine.decide(square_off(side=SELL, quantity=100)).accepted


def test_the_squareoff_tag_on_a_limit_order_is_refused_so_it_cannot_stand_in_for_the_square_off(clock):
    """A resting SQUAREOFF limit far from the market would count as closing its position: square-off time would wait
    for it instead of closing, and the kill switch would leave it working."""
    engine = holding(clock, fill(BUY, 100, 1290_00))

    decision = engine.decide(order(side=SELL, quantity=100, strategy_tag="SQUAREOFF", price_paise=1350_00))

    assert (decision.accepted, decision.reason_code) == (False, "INVALID_ORDER")
    assert "close at market" in decision.reason and not engine.open_orders
