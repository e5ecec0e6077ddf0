"""MCX takes DAY orders only (the SDK's settings.validity_allowed_by_segment: mcx_fo ["DAY"]): risk refuses an IOC
order there, as the SDK would refuse it live, so that a flow proven on paper does not fail on Kotak."""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from tests.risk.factories import DAY, limits, order

CRUDE, NIFTY_FUT = 451669, 35001
CONTRACTS = [
    market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26FEBFUT", exchange_segment="mcx_fo", tick_size_paise=100,
                          lot_size=1, price_factor=market_pb2.PriceFactor(numerator=100)),
    market_pb2.Instrument(token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo", tick_size_paise=10,
                          lot_size=65, freeze_quantity=1801),
]
DAY_ONLY = ("INVALID_ORDER", "validity IOC: mcx_fo takes DAY orders only (Kotak refuses IOC there); send VALIDITY_DAY")


@pytest.mark.parametrize(("token", "lot", "price", "validity", "denial"), [
    (CRUDE, 1, 6000_00, trading_pb2.VALIDITY_IOC, DAY_ONLY),
    (CRUDE, 1, 6000_00, trading_pb2.VALIDITY_DAY, ("", "")),
    (NIFTY_FUT, 65, 24000_00, trading_pb2.VALIDITY_IOC, ("", "")),
])
def test_an_ioc_order_is_refused_on_mcx_only(token, lot, price, validity, denial):
    engine = RiskEngine(limits(max_order_value_paise=10**12), ManualClock(ist_ns(DAY, 10, 0)),
                        InstrumentBook(CONTRACTS))

    decision = engine.decide(order(token=token, symbol="", exchange_segment="", quantity=lot, price_paise=price,
                                   product=trading_pb2.PRODUCT_NRML, validity=validity))

    assert (decision.reason_code, decision.reason) == denial
