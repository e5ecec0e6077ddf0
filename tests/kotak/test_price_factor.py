"""A contract with a price factor through the real SDK against the simulator: the scrip master's factor reaches the
Instrument, and a position Kotak holds keeps it in the OMS's book, so later prices are valued by it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.simulator.server import Simulator
from shared import rpc
from shared.bus import Topic
from shared.contracts import market_pb2, oms_pb2
from shared.contracts import trading_pb2 as T
from shared.marketdata import nse_instruments
from shared.price_factor import factor_of
from tests.helpers import eventually
from tests.kotak.conftest import RunningOms, tick
from tests.kotak.test_review_carried_positions import outside

CRUDE = 451669
CRUDE_FUT = market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26OCTFUT", exchange_segment="mcx_fo",
                                  tick_size_paise=100, lot_size=1, name="CRUDEOIL",
                                  price_factor=market_pb2.PriceFactor(numerator=100))


def crude_tick(ltp: int) -> market_pb2.Tick:
    out = tick(CRUDE, ltp, bid=ltp - 100, ask=ltp + 100)
    out.exchange_segment = "mcx_fo"
    return out


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The conftest's simulator, with one MCX contract quoted per barrel, 100 barrels a lot."""
    simulator = Simulator(tick_interval=None, instruments=[*nse_instruments(), CRUDE_FUT])
    await simulator.start()
    await simulator.push_ticks([tick(), crude_tick(6000_00)])
    yield simulator
    await simulator.stop()


async def test_the_scrip_masters_price_factor_reaches_the_instrument(broker):
    instruments = {i.symbol: i for i in await broker.scrip_master(("nse_cm", "mcx_fo"))}

    assert factor_of(instruments["CRUDEOIL26OCTFUT"].price_factor) == 100
    assert not instruments["RELIANCE-EQ"].HasField("price_factor")


async def test_kotaks_position_of_a_contract_with_a_factor_maps_to_a_price_and_the_factor(sim, broker):
    buy = T.OrderRequest(client_order_id="crude-1", token=CRUDE, exchange_segment="mcx_fo",
                         symbol="CRUDEOIL26OCTFUT", side=T.SIDE_BUY, quantity=2, order_type=T.ORDER_TYPE_MARKET,
                         product=T.PRODUCT_NRML, validity=T.VALIDITY_DAY)
    await broker.place_order(buy)  # filled at the ask, Rs 6,001
    await sim.push_ticks([crude_tick(6005_00)])

    (position,) = await broker.positions()

    assert (position.average_price_paise, factor_of(position.price_factor)) == (6001_00, 100)
    assert position.unrealised_pnl_paise == 2 * 4_00 * 100


async def test_a_carried_position_taken_into_the_oms_book_is_valued_by_its_factor(sim):
    await outside(sim, T.OrderRequest(client_order_id="carried", token=CRUDE, exchange_segment="mcx_fo",
                                      symbol="CRUDEOIL26OCTFUT", side=T.SIDE_BUY, quantity=1,
                                      order_type=T.ORDER_TYPE_MARKET, product=T.PRODUCT_NRML,
                                      validity=T.VALIDITY_DAY))

    async with RunningOms(sim) as running:  # carried at Kotak's last price, Rs 6,000
        await running.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[crude_tick(5990_00)]))

        async def marked() -> bool:
            listed = await running.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
            return [p.last_price_paise for p in listed.positions] == [5990_00]

        await eventually(marked)
        listed = await running.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())

    (position,) = listed.positions
    assert (position.unrealised_pnl_paise, listed.unrealised_pnl_paise) == (-10_00 * 100, -10_00 * 100)


async def test_the_simulators_margin_values_a_lot_by_its_factor(sim, broker):
    """2 lots at Rs 6,000 a barrel, 100 barrels a lot: Rs 12 lakh of contract value, a fifth of it as margin (the
    simulator's flat rate), both in the margin check before the order and in the limits after its fill."""
    margin = await broker.session.call("margin_required", exchange_segment="mcx_fo", price="6000.00",
                                       order_type="L", product="NRML", quantity="2", instrument_token=str(CRUDE),
                                       transaction_type="B")
    buy = T.OrderRequest(client_order_id="crude-m", token=CRUDE, exchange_segment="mcx_fo",
                         symbol="CRUDEOIL26OCTFUT", side=T.SIDE_BUY, quantity=2, order_type=T.ORDER_TYPE_MARKET,
                         product=T.PRODUCT_NRML, validity=T.VALIDITY_DAY)
    await broker.place_order(buy)  # filled at the ask, Rs 6,001
    limits = await broker.limits()

    assert margin["data"]["reqdMrgn"] == "240000.00"
    assert limits["margin_used_paise"] == 2 * 6001_00 * 100 // 5
