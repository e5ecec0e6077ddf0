"""The simulator fills no more than the market shows, as Kotak's exchanges do: partial fills reach NeoPulse through
the real SDK (order book, trade book, order feed) the way Kotak reports them (ordSt "open" with fldQty < qty).

Each test arranges the touch or depth with sim.push_ticks, places through KotakBroker, and checks values.
"""

from __future__ import annotations

from shared.bus import Topic
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as T
from tests.helpers import eventually
from tests.kotak.conftest import RunningOms, tick
from tests.kotak.test_broker import limit_buy, market_buy


def deep_asks(*rows: tuple[int, int]) -> market_pb2.Tick:
    t = tick()
    t.asks.extend(market_pb2.DepthLevel(price_paise=price, quantity=qty, orders=1) for price, qty in rows)
    t.ask_paise, t.ask_qty = rows[0]
    return t


async def test_a_market_buy_larger_than_the_ask_fills_the_ask_and_rests_the_rest_as_a_limit_at_that_price(sim, broker):
    """NSE: the part of a market order the book cannot fill becomes a limit order at the last traded price."""
    await broker.place_order(market_buy("coid-big", qty=100))  # the ask shows 60 at 1290.05

    order = await broker.find_by_tag("coid-big")

    assert (order.status, order.filled_quantity, order.average_price_paise) == (
        T.ORDER_STATUS_PARTIALLY_FILLED, 60, 129_005)
    assert (order.raw["ordSt"], order.raw["prcTp"], order.raw["prc"], order.raw["unFldSz"]) == (
        "open", "L", "1290.05", 40)


async def test_a_market_buy_walks_the_depth_each_row_at_its_own_price(sim, broker):
    await sim.push_ticks([deep_asks((129_005, 10), (129_010, 20), (129_015, 30))])

    await broker.place_order(market_buy("coid-walk", qty=40))

    order = await broker.find_by_tag("coid-walk")
    assert (order.status, order.filled_quantity, order.average_price_paise) == (T.ORDER_STATUS_TRADED, 40, 129_010)
    assert [(t["fldQty"], t["avgPrc"]) for t in await broker.trades()] == [
        (10, "1290.05"), (20, "1290.10"), (10, "1290.15")]


async def test_two_orders_cannot_both_take_the_quantity_the_ask_shows_once(sim, broker):
    await broker.place_order(market_buy("coid-first", qty=50))
    await broker.place_order(limit_buy("coid-second", 129_005, qty=50))

    first, second = await broker.find_by_tag("coid-first"), await broker.find_by_tag("coid-second")

    assert (first.status, first.filled_quantity) == (T.ORDER_STATUS_TRADED, 50)
    assert (second.status, second.filled_quantity) == (T.ORDER_STATUS_PARTIALLY_FILLED, 10)


async def test_the_oms_sees_a_partial_fill_then_the_rest_filled_by_the_next_tick(sim):
    async with RunningOms(sim) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=limit_buy("coid-part", 129_005,
                                                                                                qty=100),
                                                               signal_id="coid-part"))
        await eventually(lambda: (u := running.latest("coid-part")) is not None
                         and u.status == T.ORDER_STATUS_PARTIALLY_FILLED)
        partial = running.latest("coid-part")

        await sim.push_ticks([tick()])  # the ask shows 60 again

        await eventually(lambda: running.latest("coid-part").status == T.ORDER_STATUS_TRADED)
    assert (partial.filled_quantity, partial.last_fill_quantity) == (60, 60)
    assert [u.last_fill_quantity for u in running.updates if u.last_fill_quantity] == [60, 40]
