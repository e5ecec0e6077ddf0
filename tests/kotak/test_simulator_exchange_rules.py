"""Orders the exchange would not take, at the simulator through the real SDK: refused or rejected as Kotak does,
never filled (tick size, price band, lot size, freeze quantity; a modify that breaks one of them).

Each test places or modifies once through KotakBroker and checks how the order ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.simulator.server import Simulator
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected
from shared.marketdata import nse_instruments
from tests.kotak.conftest import tick
from tests.kotak.test_broker import limit_buy, market_buy

NIFTY = 52_000
NIFTY_FUT = market_pb2.Instrument(token=NIFTY, symbol="NIFTY25NOVFUT", exchange_segment="nse_fo", tick_size_paise=10,
                                  lot_size=75, freeze_quantity=1800, name="NIFTY", price_band_bps=1000)


def nifty_buy(coid: str, qty: int) -> T.OrderRequest:
    return T.OrderRequest(client_order_id=coid, token=NIFTY, exchange_segment="nse_fo", symbol="NIFTY25NOVFUT",
                          side=T.SIDE_BUY, quantity=qty, order_type=T.ORDER_TYPE_MARKET, product=T.PRODUCT_NRML,
                          validity=T.VALIDITY_DAY)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The conftest's simulator, with one index future: 75 a lot, at most 1800 an order."""
    simulator = Simulator(tick_interval=None, instruments=[*nse_instruments(), NIFTY_FUT])
    await simulator.start()
    future = tick(NIFTY, 26_000_00, bid=25_999_90, ask=26_000_10)
    future.exchange_segment, future.ask_qty = "nse_fo", 5000
    await simulator.push_ticks([tick(), future])
    yield simulator
    await simulator.stop()


async def test_a_limit_price_off_the_tick_size_is_rejected_not_left_open(sim, broker):
    await broker.place_order(limit_buy("coid-tick", 128_003))

    order = await broker.find_by_tag("coid-tick")

    assert (order.status, order.reason) == (T.ORDER_STATUS_REJECTED,
                                            "price 1280.03 is not a multiple of the tick size 0.05")


async def test_a_buy_limit_above_the_days_band_is_rejected_not_filled_at_the_ask(sim, broker):
    await broker.place_order(limit_buy("coid-band", 300_000))  # previous close 1285.00, band 20 %

    order = await broker.find_by_tag("coid-band")

    assert (order.status, order.filled_quantity, order.reason) == (
        T.ORDER_STATUS_REJECTED, 0, "price 3000.00 is outside the price band 1028.00-1542.00")


async def test_a_quantity_that_is_not_whole_lots_is_refused_as_kotak_refuses_it(sim, broker):
    with pytest.raises(BrokerRejected, match="please provide valid quantity"):
        await broker.place_order(nifty_buy("coid-lot", 100))

    assert sim.exchange.orders == {}


async def test_a_quantity_above_the_freeze_quantity_is_rejected(sim, broker):
    await broker.place_order(nifty_buy("coid-freeze", 1875))

    order = await broker.find_by_tag("coid-freeze")

    assert (order.status, order.filled_quantity, order.reason) == (
        T.ORDER_STATUS_REJECTED, 0, "quantity 1875 exceeds the freeze quantity 1800")


async def test_a_modify_to_a_price_off_the_tick_size_is_refused_and_the_order_stays_as_it_was(sim, broker):
    ack = await broker.place_order(limit_buy("coid-mod", 128_000))

    with pytest.raises(BrokerRejected, match="not a multiple of the tick size"):
        await broker.modify_order(ack.exchange_order_id, price_paise=128_001)

    order = await broker.find_by_tag("coid-mod")
    assert (order.status, order.raw["prc"]) == (T.ORDER_STATUS_OPEN, "1280.00")


async def test_an_order_within_every_rule_still_fills(sim, broker):
    await broker.place_order(nifty_buy("coid-ok", 150))
    await broker.place_order(market_buy("coid-eq"))

    assert [(o.status, o.filled_quantity) for o in await broker.order_book()] == [
        (T.ORDER_STATUS_TRADED, 150), (T.ORDER_STATUS_TRADED, 3)]
