"""Reduce-only and working quantities per (token, product): a CNC leg never blocks the MIS square-off.

Pure RiskEngine on a ManualClock; fills come in as OMS order updates.
"""

from __future__ import annotations

from shared.clock import ist_ns
from shared.contracts import trading_pb2
from tests.risk.factories import DAY, fill, holding, order, square_off

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MIS, CNC = trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_CNC


def test_the_mis_square_off_closes_mis_long_despite_an_offsetting_cnc_short(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00, product=MIS), fill(SELL, 100, 1290_00, product=CNC))
    clock.set(ist_ns(DAY, 15, 20))

    orders = engine.square_off_due()
    decisions = [engine.decide(o) for o in orders]

    assert [(o.side, o.quantity, o.product) for o in orders] == [(SELL, 100, MIS)]
    assert [(d.accepted, d.reason_code) for d in decisions] == [(True, "")]


def test_the_mis_square_off_closes_mis_long_despite_an_offsetting_cnc_short_when_halted(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00, product=MIS), fill(SELL, 100, 1290_00, product=CNC))
    engine.set_kill_switch(True, "stop")
    clock.set(ist_ns(DAY, 15, 20))

    decisions = [engine.decide(o) for o in engine.square_off_due()]

    assert [(d.accepted, d.reason_code) for d in decisions] == [(True, "")]


def test_an_open_cnc_sell_does_not_shrink_the_mis_square_off(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00, product=MIS), fill(BUY, 100, 1290_00, product=CNC))
    engine.decide(order(side=SELL, quantity=100, product=CNC))  # working, closes the CNC leg
    clock.set(ist_ns(DAY, 15, 20))

    orders = engine.square_off_due()

    assert [(o.side, o.quantity, o.product) for o in orders] == [(SELL, 100, MIS)]
    assert all(engine.decide(o).accepted for o in orders)


def test_an_unspecified_product_counts_as_mis_for_reduce_only(clock):
    engine = holding(clock, fill(BUY, 100, 1290_00, product=MIS), fill(SELL, 100, 1290_00, product=CNC))
    engine.set_kill_switch(True, "stop")

    decision = engine.decide(square_off(side=SELL, quantity=100,
                                   product=trading_pb2.PRODUCT_UNSPECIFIED))

    assert decision.accepted
