"""Closing a position held in a token the instrument book does not list (a symbol dropped from [app] symbols and
NeoPulse restarted mid-day, a carried position in a contract never configured): risk judges the exit against the
position (its segment, symbol and price factor), and still refuses anything that would open or grow one."""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from shared import rpc
from shared.bus import Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.helpers import eventually as wait_for
from tests.risk.factories import DAY, limits, order, square_off
from tests.risk.test_module import risk as risk  # the fixture: RiskModule on a real Bus

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
NIFTY_FUT = 35001  # NIFTY26JANFUT, lot 65: held, no longer listed
CRUDE = 451669  # CRUDEOIL26FEBFUT on MCX, factor 100: carried NRML, never configured


def bought(token: int, symbol: str, segment: str, quantity: int, product: int = trading_pb2.PRODUCT_MIS,
           factor: int = 1) -> trading_pb2.OrderUpdate:
    """A filled buy as the OMS reports it: the order risk accepted, stamped with its instrument."""
    req = trading_pb2.OrderRequest(client_order_id=f"entry-{token}", token=token, symbol=symbol,
                                   exchange_segment=segment, side=BUY, quantity=quantity,
                                   order_type=trading_pb2.ORDER_TYPE_MARKET, product=product)
    if factor != 1:
        req.price_factor.CopyFrom(market_pb2.PriceFactor(numerator=factor))
    return trading_pb2.OrderUpdate(client_order_id=req.client_order_id, status=trading_pb2.ORDER_STATUS_TRADED,
                                   request=req, filled_quantity=quantity, average_price_paise=100_00,
                                   last_fill_quantity=quantity, last_fill_price_paise=100_00)


def engine_holding(clock: ManualClock, *fills: trading_pb2.OrderUpdate) -> RiskEngine:
    engine = RiskEngine(limits(), clock, InstrumentBook(nse_instruments(["RELIANCE-EQ"])))
    for update in fills:
        engine.on_order_update(update)
    return engine


def test_the_square_off_at_its_time_closes_an_mis_position_in_a_token_the_book_does_not_list():
    clock = ManualClock(ist_ns(DAY, 10, 0))
    engine = engine_holding(clock, bought(NIFTY_FUT, "NIFTY26JANFUT", "nse_fo", 130))
    clock.set(ist_ns(DAY, 15, 16))

    decisions = [engine.decide(o) for o in engine.square_off_due()]

    assert [(d.accepted, d.reason_code, d.order.symbol, d.order.exchange_segment, d.order.side, d.order.quantity)
            for d in decisions] == [(True, "", "NIFTY26JANFUT", "nse_fo", SELL, 130)]


def test_a_squareoff_of_a_carried_position_in_an_unlisted_contract_goes_out_as_the_position_names_it():
    clock = ManualClock(ist_ns(DAY, 10, 0))
    engine = engine_holding(clock, bought(CRUDE, "CRUDEOIL26FEBFUT", "mcx_fo", 2, trading_pb2.PRODUCT_NRML, 100))

    decision = engine.decide(square_off(token=CRUDE, symbol="", exchange_segment="", side=SELL, quantity=2,
                                        product=trading_pb2.PRODUCT_NRML))

    assert (decision.accepted, decision.order.symbol, decision.order.exchange_segment,
            decision.order.price_factor.numerator) == (True, "CRUDEOIL26FEBFUT", "mcx_fo", 100)


def test_an_order_that_would_grow_a_position_in_an_unlisted_token_is_still_refused():
    clock = ManualClock(ist_ns(DAY, 10, 0))
    engine = engine_holding(clock, bought(NIFTY_FUT, "NIFTY26JANFUT", "nse_fo", 65))

    decision = engine.decide(order(token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo", side=BUY,
                                   quantity=65, order_type=trading_pb2.ORDER_TYPE_MARKET, price_paise=0))

    assert (decision.accepted, decision.reason_code) == (False, "UNKNOWN_INSTRUMENT")


async def test_the_operators_squareoff_through_submit_order_closes_a_position_in_an_unlisted_token(risk):
    await risk.bus.publish(Topic.ORDER_UPDATES, bought(NIFTY_FUT, "NIFTY26JANFUT", "nse_fo", 65))
    await wait_for(lambda: risk.module.engine.positions.net_quantity(NIFTY_FUT) == 65)

    # As the OMS's SquareOff builds it: the position's token, symbol and segment, at market.
    reply = await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=square_off(
        client_order_id="SQUAREOFF-35001-a", token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo",
        side=SELL, quantity=65)))

    assert (reply.decision.accepted, reply.decision.order.symbol) == (True, "NIFTY26JANFUT")


async def test_a_manual_entry_in_an_unlisted_token_is_invalid_input_naming_the_token(risk):
    with pytest.raises(InvalidInput) as err:
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(
            token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo", quantity=65)))

    assert err.value.field == "order.token"
