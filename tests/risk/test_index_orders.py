"""Risk refuses any order for an index (Instrument.is_index): from a signal, a manual order or a change."""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from services.risk.orders import manual_order
from shared.bus import Sequencer
from shared.contracts import market_pb2, trading_pb2
from shared.errors import InvalidInput
from tests.risk.factories import instruments, limits, order

NIFTY = 26000


def with_index():
    book = instruments()
    book.add(market_pb2.Instrument(token=NIFTY, symbol="Nifty 50", exchange_segment="nse_cm", tick_size_paise=1,
                                   lot_size=1, is_index=True))
    return book


def index_order(**fields):
    return order(**{"token": NIFTY, "symbol": "Nifty 50", "price_paise": 24_000_00, "quantity": 1, **fields})


def test_an_order_for_an_index_is_denied_as_not_tradable(clock):
    engine = RiskEngine(limits(max_order_value_paise=10**12), clock, with_index())

    decision = engine.decide(index_order())

    assert (decision.accepted, decision.reason_code) == (False, "NOT_TRADABLE")
    assert "nse_cm:Nifty 50 (token 26000) is an index" in decision.reason
    assert not engine.open_orders


def test_a_manual_order_for_an_index_is_invalid_input_naming_the_token():
    with pytest.raises(InvalidInput) as err:
        manual_order(index_order(), with_index(), Sequencer())

    assert err.value.field == "order.token" and "is an index" in str(err.value)


def test_an_order_for_an_instrument_that_trades_is_still_accepted(clock):
    engine = RiskEngine(limits(max_order_value_paise=10**12), clock, with_index())

    assert engine.decide(order(side=trading_pb2.SIDE_BUY)).accepted
