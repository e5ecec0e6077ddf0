"""A DAY order still working at its day's close is settled as the next day starts; it is no trade of that next day,
nor listed by /orders today, also when orders placed after it on its own day filled that day (the usual case)."""
from __future__ import annotations

from services.notifier.control import Control
from services.oms.ledger import MemoryLedger
from shared.bus import Topic
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from tests.helpers import eventually
from tests.oms.conftest import accepted, running_on_new_day_book
from tests.oms.helpers import MINUTE, T0, candle
from tests.oms.helpers import order as request


async def _day_one_then_roll(bus, clock, module):
    placed = request(client_order_id="c-yesterday", price=100_00, quantity=10)
    placed.product = t.PRODUCT_CNC
    await bus.publish(Topic.ORDERS, accepted(placed))
    await eventually(lambda: (u := module.engine.lookup("c-yesterday")) is not None
                     and u.status == t.ORDER_STATUS_OPEN)
    await bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(100_00, 100_50, 99_50, 100_00, volume=4)]))
    await eventually(lambda: module.engine.lookup("c-yesterday").filled_quantity == 4)
    clock.advance(60)
    # placed after it, and filled, the same day
    later = request(client_order_id="c-later", side=t.SIDE_SELL, price=100_50, quantity=1)
    later.product = t.PRODUCT_CNC
    await bus.publish(Topic.ORDERS, accepted(later))
    await eventually(lambda: (u := module.engine.lookup("c-later")) is not None and u.status == t.ORDER_STATUS_OPEN)
    await bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[
        candle(100_60, 101_00, 100_50, 100_80, volume=1, start_ns=T0 + 2 * MINUTE)]))
    await eventually(lambda: module.engine.lookup("c-later").status == t.ORDER_STATUS_TRADED)
    assert module.engine.lookup("c-yesterday").status == t.ORDER_STATUS_PARTIALLY_FILLED
    clock.advance(24 * 3600)
    await eventually(lambda: module.engine.lookup("c-yesterday").status == t.ORDER_STATUS_CANCELLED)


async def test_yesterdays_settled_order_is_no_trade_today_when_a_later_order_of_yesterday_filled_yesterday():
    async with running_on_new_day_book(MemoryLedger()) as (bus, clock, module, _):
        await _day_one_then_roll(bus, clock, module)
        summary = await Control(bus, clock, "paper").daily_summary()
    assert summary.trades == 0


async def test_orders_today_does_not_list_yesterdays_settled_order():
    async with running_on_new_day_book(MemoryLedger()) as (bus, clock, module, _):
        await _day_one_then_roll(bus, clock, module)
        listed = await Control(bus, clock, "paper").orders("today")
    assert [o.client_order_id for o in listed] == []
