"""An accepted order carries its token's symbol and segment from the instrument master, whatever the client sent:
every check judged the token's instrument, and the broker places by symbol and segment."""

from __future__ import annotations

from shared.contracts import trading_pb2
from tests.risk.factories import NIFTY_FUT, order


def test_an_accepted_order_names_the_instrument_its_token_is_whatever_symbol_and_segment_it_came_with(engine):
    decision = engine.decide(order(symbol="TCS-EQ", exchange_segment="bse_cm"))

    assert decision.accepted and (decision.order.symbol, decision.order.exchange_segment) == ("RELIANCE-EQ", "nse_cm")


def test_an_accepted_order_with_no_segment_gets_its_contracts_segment(engine):
    engine.last_prices[NIFTY_FUT] = 10_000_00  # 75 units within max_order_value

    decision = engine.decide(order(token=NIFTY_FUT, symbol="", exchange_segment="", quantity=75,
                                   order_type=trading_pb2.ORDER_TYPE_MARKET, price_paise=0,
                                   product=trading_pb2.PRODUCT_NRML))

    assert decision.accepted and (decision.order.symbol, decision.order.exchange_segment) == ("NIFTY26JANFUT",
                                                                                              "nse_fo")


def test_an_accepted_order_counts_as_open_on_its_instruments_segment_not_the_one_it_came_with(engine):
    """Square-off time and market hours of a working order go by its segment."""
    accepted = engine.decide(order(exchange_segment="mcx_fo"))

    assert accepted.accepted and engine.open_orders[accepted.order.client_order_id].segment == "nse_cm"
