"""VirtualBroker over a real KotakBroker (SDK -> simulator): reads reach the simulator, orders never do."""

from __future__ import annotations

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.virtual_broker import VirtualBroker
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as T
from shared.contracts.market_pb2 import TickBatch
from tests.kotak.conftest import NOW_NS, RELIANCE, tick
from tests.kotak.test_broker import market_buy


def virtual_over(broker) -> VirtualBroker:
    return VirtualBroker(broker, ChargeModel.from_settings(OmsSettings()), ManualClock(NOW_NS))


async def test_positions_and_limits_are_read_from_the_simulator(sim, broker):
    await broker.place_order(market_buy("coid-real", qty=2))
    virtual = virtual_over(broker)
    calls_before = (sim.calls["positions"], sim.calls["limits"])
    [pos] = await virtual.positions()
    limits = await virtual.limits()
    assert (sim.calls["positions"], sim.calls["limits"]) == (calls_before[0] + 1, calls_before[1] + 1)
    assert (pos.token, pos.net_quantity, pos.average_price_paise) == (RELIANCE, 2, 129_005)
    assert limits["margin_used_paise"] == 2 * 129_005 // 5


async def test_place_order_fills_virtually_and_never_reaches_the_simulator(sim, broker):
    virtual = virtual_over(broker)
    await virtual.on_ticks(TickBatch(ticks=[tick(RELIANCE)]))
    ack = await virtual.place_order(market_buy("coid-paper"))
    found = await virtual.find_by_tag("coid-paper")
    assert ack.exchange_order_id.startswith("VB-")
    assert (found.status, found.filled_quantity, found.average_price_paise) == (T.ORDER_STATUS_TRADED, 3, 129_005)
    assert sim.calls["place_order"] == 0
    assert sim.exchange.orders == {}
