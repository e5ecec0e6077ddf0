"""Which day an order's trades belong to (the daily summary, /orders today), and the day's second summary after its
last session's close (MCX's evening)."""

from __future__ import annotations

from datetime import date

import pytest

from services.notifier.control import Control
from services.notifier.module import NotifierModule
from services.notifier.summary import next_summary_due
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from tests.helpers import eventually
from tests.notifier.conftest import CHAT, order, settings_for, started
from tests.oms.conftest import accepted, running_on_new_day_book
from tests.oms.helpers import MINUTE, T0, candle
from tests.oms.helpers import order as request

DAY = date(2026, 11, 25)  # a Wednesday; New York keeps standard time: MCX closes at 23:55 IST


async def part_filled_then_settled_next_day(bus: Bus, clock: ManualClock, module: OmsModule,
                                            later_filled: bool = False) -> None:
    """A delivery buy of 10 placed and 4 filled on day 1, still working at the close; the next day's roll settles it
    (CANCELLED, NOT_IN_BROKER_BOOK, stamped with day 2's time). `later_filled`: a sell placed after it on day 1 and
    filled that day (the usual case: it lists ahead of it, last updated on day 1)."""
    placed = request(client_order_id="c-yesterday", price=100_00, quantity=10)
    placed.product = t.PRODUCT_CNC
    await bus.publish(Topic.ORDERS, accepted(placed))
    await eventually(lambda: (u := module.engine.lookup("c-yesterday")) is not None
                     and u.status == t.ORDER_STATUS_OPEN)
    await bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(100_00, 100_50, 99_50, 100_00, volume=4)]))
    await eventually(lambda: module.engine.lookup("c-yesterday").filled_quantity == 4)
    if later_filled:
        clock.advance(60)
        later = request(client_order_id="c-later", side=t.SIDE_SELL, price=100_50, quantity=1)
        later.product = t.PRODUCT_CNC
        await bus.publish(Topic.ORDERS, accepted(later))
        await eventually(lambda: (u := module.engine.lookup("c-later")) is not None
                         and u.status == t.ORDER_STATUS_OPEN)
        await bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[
            candle(100_60, 101_00, 100_50, 100_80, volume=1, start_ns=T0 + 2 * MINUTE)]))
        await eventually(lambda: module.engine.lookup("c-later").status == t.ORDER_STATUS_TRADED)
    clock.advance(24 * 3600)
    await eventually(lambda: module.engine.lookup("c-yesterday").status == t.ORDER_STATUS_CANCELLED)


@pytest.mark.parametrize("later_filled", [False, True])
async def test_a_delivery_order_of_yesterday_settled_at_the_day_roll_is_no_trade_of_todays_summary(later_filled):
    async with running_on_new_day_book(MemoryLedger()) as (bus, clock, module, _):
        await part_filled_then_settled_next_day(bus, clock, module, later_filled)

        summary = await Control(bus, clock, "paper").daily_summary()

    assert (summary.trades, {tag: line.trades for tag, line in summary.strategies.items()}) == (0, {"TEST": 0})


@pytest.mark.parametrize("later_filled", [False, True])
async def test_orders_today_lists_the_orders_placed_today_and_not_yesterdays_settled_at_the_day_roll(later_filled):
    async with running_on_new_day_book(MemoryLedger()) as (bus, clock, module, _):
        await part_filled_then_settled_next_day(bus, clock, module, later_filled)
        await bus.publish(Topic.ORDERS, accepted(request(client_order_id="c-today", price=99_00)))
        await eventually(lambda: (u := module.engine.lookup("c-today")) is not None and u.status == t.ORDER_STATUS_OPEN)

        listed = await Control(bus, clock, "paper").orders("today")

    assert [o.client_order_id for o in listed] == ["c-today"]


def test_the_days_second_summary_is_due_two_minutes_after_mcxs_evening_close():
    assert next_summary_due(ist_ns(DAY, 15, 45), "15:45") == (ist_ns(DAY, 23, 57), True)


async def test_a_day_that_traded_after_its_summary_has_a_second_of_the_whole_day_after_the_evening_close(
        bus, standins, fake_api, clock):
    standins.orders = [order("SBIN-EQ", ts_ns=ist_ns(DAY, 11, 0))]
    clock.set(ist_ns(DAY, 15, 44))
    async for _ in started(NotifierModule(bus, settings_for(fake_api, daily_summary_time_ist="15:45",
                                                            summary_check_seconds=0.01), clock)):
        clock.set(ist_ns(DAY, 15, 46))
        await fake_api.wait_sent(1, chat_id=CHAT)
        standins.orders.insert(0, order("CRUDEOIL", ts_ns=ist_ns(DAY, 20, 0), token=4321))  # MCX, in the evening
        clock.set(ist_ns(DAY, 23, 58))
        sent = await fake_api.wait_sent(2, chat_id=CHAT)

    assert sent[1]["text"].startswith("📊 <b>Daily summary 2026-11-25 (the whole day, after its last close)</b>\n"
                                      "Trades 2 ·")


async def test_a_day_that_traded_nothing_after_its_summary_has_no_second(bus, standins, fake_api, clock):
    standins.orders = [order("SBIN-EQ", ts_ns=ist_ns(DAY, 11, 0))]
    clock.set(ist_ns(DAY, 15, 44))
    async for _ in started(NotifierModule(bus, settings_for(fake_api, daily_summary_time_ist="15:45",
                                                            summary_check_seconds=0.01), clock)):
        clock.set(ist_ns(DAY, 15, 46))
        await fake_api.wait_sent(1, chat_id=CHAT)
        asked = len(standins.calls(rpc.LIST_ORDERS))
        clock.set(ist_ns(DAY, 23, 58))
        await eventually(lambda n=asked: len(standins.calls(rpc.LIST_ORDERS)) > n)  # looked again
        clock.set(ist_ns(date(2026, 11, 26), 15, 46))
        sent = await fake_api.wait_sent(2, chat_id=CHAT)

    assert sent[1]["text"].startswith("📊 <b>Daily summary 2026-11-26</b>")
