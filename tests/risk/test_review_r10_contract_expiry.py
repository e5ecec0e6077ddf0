"""A derivative trades until its segment's close on its expiry day (Instrument.expiry_ns); after that risk refuses
orders that would open or grow a position in it (CONTRACT_EXPIRED), and leaves exits to the exchange."""

from __future__ import annotations

from datetime import date

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from tests.risk.factories import limits, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
EXPIRY = date(2026, 1, 20)  # a Tuesday: NIFTY's weekly expiry
OPTION = 40001
CRUDE = 451669
CONTRACTS = {
    OPTION: market_pb2.Instrument(token=OPTION, symbol="NIFTY2612024000CE", exchange_segment="nse_fo",
                                  tick_size_paise=5, lot_size=65, freeze_quantity=1801,
                                  expiry_ns=ist_ns(EXPIRY, 0, 0)),
    CRUDE: market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo",
                                 tick_size_paise=100, lot_size=1, price_factor=market_pb2.PriceFactor(numerator=100),
                                 expiry_ns=ist_ns(EXPIRY, 0, 0)),
}


def engine_on(clock: ManualClock) -> RiskEngine:
    engine = RiskEngine(limits(max_order_value_paise=10**12), clock, InstrumentBook(list(CONTRACTS.values())))
    engine.last_prices.update({OPTION: 12_00, CRUDE: 6000_00})
    return engine


def buy(token: int, **fields) -> trading_pb2.OrderRequest:
    inst = CONTRACTS[token]
    return order(**{"token": token, "symbol": inst.symbol, "exchange_segment": inst.exchange_segment, "side": BUY,
                    "quantity": inst.lot_size, "order_type": trading_pb2.ORDER_TYPE_MARKET, "price_paise": 0,
                    "product": trading_pb2.PRODUCT_NRML, **fields})


@pytest.mark.parametrize(("token", "at", "accepted"), [
    (OPTION, ist_ns(EXPIRY, 15, 29), True),  # NSE F&O trades until 15:30 on its expiry day
    (OPTION, ist_ns(date(2026, 1, 21), 10, 0), False),
    (CRUDE, ist_ns(EXPIRY, 23, 50), True),  # MCX until its evening close (23:55 while New York keeps winter time)
    (CRUDE, ist_ns(date(2026, 1, 21), 10, 0), False),
])
def test_an_entry_is_refused_once_its_contracts_expiry_day_has_closed(token, at, accepted):
    decision = engine_on(ManualClock(at)).decide(buy(token))

    assert (decision.accepted, decision.reason_code) == (accepted, "" if accepted else "CONTRACT_EXPIRED")


def test_the_refusal_names_the_expiry_and_says_to_roll():
    decision = engine_on(ManualClock(ist_ns(date(2026, 1, 21), 10, 0))).decide(buy(OPTION))

    assert decision.reason == ("nse_fo:NIFTY2612024000CE (token 40001) expired on 2026-01-20: it traded until 15:30 "
                               "IST that day, and only orders that reduce a position in it pass; roll to a live "
                               "contract in symbols (the exchange settles what is still held)")


def test_an_exit_of_a_position_in_an_expired_contract_is_not_refused_for_its_expiry():
    clock = ManualClock(ist_ns(EXPIRY, 10, 0))
    engine = engine_on(clock)
    entry = buy(OPTION)
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id=entry.client_order_id, status=trading_pb2.ORDER_STATUS_TRADED, request=entry,
        filled_quantity=65, average_price_paise=12_00, last_fill_quantity=65, last_fill_price_paise=12_00))
    clock.set(ist_ns(date(2026, 1, 21), 10, 0))

    decision = engine.decide(buy(OPTION, side=SELL))

    assert (decision.accepted, decision.reason_code) == (True, "")
