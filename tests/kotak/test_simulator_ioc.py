"""IOC orders at the simulator, through the real SDK: matched once on entering the book, the rest cancelled, as the
exchange does (the SDK offers validity IOC for every segment but MCX: settings.validity_allowed_by_segment)."""

from __future__ import annotations

from shared.contracts import trading_pb2 as T
from tests.kotak.test_broker import limit_buy, market_buy


def ioc(order: T.OrderRequest) -> T.OrderRequest:
    order.validity = T.VALIDITY_IOC
    return order


async def test_an_ioc_limit_that_does_not_cross_is_cancelled_at_once_not_left_open(sim, broker):
    await broker.place_order(ioc(limit_buy("coid-ioc", 128_000)))  # the ask is 1290.05

    order = await broker.find_by_tag("coid-ioc")

    assert (order.status, order.filled_quantity, order.raw["cnlQty"]) == (T.ORDER_STATUS_CANCELLED, 0, 2)


async def test_an_ioc_market_order_larger_than_the_ask_fills_the_ask_and_cancels_the_rest(sim, broker):
    await broker.place_order(ioc(market_buy("coid-ioc-mkt", qty=100)))  # the ask shows 60

    order = await broker.find_by_tag("coid-ioc-mkt")

    assert (order.status, order.filled_quantity, order.average_price_paise, order.raw["cnlQty"]) == (
        T.ORDER_STATUS_CANCELLED, 60, 129_005, 40)
