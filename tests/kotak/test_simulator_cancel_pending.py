"""The simulator's pending cancel (cancel_pending_s), through the real SDK: Kotak takes a cancel at once and the
exchange does it later; meanwhile the order fills, a second cancel or a change is refused, and an untriggered stop
does not trigger."""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RELIANCE, tick
from tests.kotak.test_broker import limit_buy


async def test_a_pending_cancel_lets_the_order_fill_then_cancels_the_rest(sim, broker):
    sim.cancel_pending_s = 0.3
    ack = await broker.place_order(limit_buy("c-1", 128_000, qty=3))
    answer = await broker.cancel_order(ack.exchange_order_id)
    pending = (await broker.find_by_tag("c-1")).status
    one = tick(RELIANCE, 128_000, ts_ns=NOW_NS + 10**9, bid=127_995, ask=128_000)
    one.ask_qty = 1
    await sim.push_ticks([one])

    with pytest.raises(BrokerRejected, match="already cancel pending"):
        await broker.cancel_order(ack.exchange_order_id)
    with pytest.raises(BrokerRejected, match="cancel pending"):
        await broker.modify_order(ack.exchange_order_id, price_paise=127_500)
    await eventually(lambda: sim.exchange.orders[ack.exchange_order_id].status == "cancelled")
    final = await broker.find_by_tag("c-1")

    assert (answer.status, pending) == (T.ORDER_STATUS_CANCEL_PENDING, T.ORDER_STATUS_CANCEL_PENDING)
    assert (final.status, final.filled_quantity) == (T.ORDER_STATUS_CANCELLED, 1)


async def test_a_stop_whose_cancel_is_pending_does_not_trigger_meanwhile(sim, broker):
    sim.cancel_pending_s = 0.3
    stop = limit_buy("s-1", 0)
    stop.order_type, stop.trigger_price_paise = T.ORDER_TYPE_STOP_MARKET, 129_500
    ack = await broker.place_order(stop)
    await broker.cancel_order(ack.exchange_order_id)

    await sim.push_ticks([tick(RELIANCE, 129_600, ts_ns=NOW_NS + 10**9, bid=129_595, ask=129_600)])
    await asyncio.sleep(0.4)

    order = sim.exchange.orders[ack.exchange_order_id]
    assert (order.status, order.filled) == ("cancelled", 0)
