"""The VirtualBroker behaves as Kotak and NSE do where a paper strategy would otherwise look better than live: stops on
the wrong side of the market are refused, a stalled feed's last prices are no prices, a large order walks the depth a
tick shows, and the session's close ends the day's orders (services/oms/fill_rules.py's docstring)."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker, VirtualOrder
from shared.clock import NS, ManualClock, SimClock, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected
from tests.oms.helpers import T0, TOKEN, candle, order, tick

CHARGES = ChargeModel.default()
DAY = date(2026, 3, 10)  # a Tuesday: NSE trades 09:15-15:30 IST
ASKS = ((100_00, 75), (100_50, 75), (101_00, 150), (102_00, 150), (103_00, 300))  # 750 units
BIDS = ((99_95, 75), (99_90, 75), (99_50, 150), (99_00, 150), (98_00, 300))


def at(hour: int, minute: int, second: int = 0) -> int:
    return ist_ns(DAY, hour, minute, second)


def in_session(hour: int, minute: int) -> tuple[VirtualBroker, ManualClock]:
    """A broker whose clock reads `hour:minute` IST of DAY, and that clock."""
    clock = ManualClock(at(hour, minute))
    return VirtualBroker(None, CHARGES, clock), clock


def with_depth(ts_ns: int = T0, asks=ASKS, bids=BIDS, ltp: int = 100_00) -> market_pb2.TickBatch:
    """A tick of Kotak's depth feed: the touch, and five levels a side (best first)."""
    tk = market_pb2.Tick(token=TOKEN, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp,
                         bid_paise=bids[0][0], bid_qty=bids[0][1], ask_paise=asks[0][0], ask_qty=asks[0][1])
    for price, quantity in asks:
        tk.asks.add(price_paise=price, quantity=quantity)
    for price, quantity in bids:
        tk.bids.add(price_paise=price, quantity=quantity)
    return market_pb2.TickBatch(ticks=[tk])


async def place(vb: VirtualBroker, request: t.OrderRequest) -> VirtualOrder:
    ack = await vb.place_order(request)
    await asyncio.sleep(0)  # a loop turn, as any caller gives: a fill decided on arrival is booked after it
    return vb.book[ack.exchange_order_id]


def fills(vb: VirtualBroker) -> list[tuple[int, int]]:
    """(quantity, price) of each fill event reported so far."""
    out = []
    while not vb._events.empty():
        raw = vb._events.get_nowait().raw
        if raw["last_fill_quantity"]:
            out.append((raw["last_fill_quantity"], raw["last_fill_price_paise"]))
    return out


# -- 1. stops on the wrong side of the market ---------------------------------------------------------------
async def test_a_sell_stop_whose_trigger_the_last_price_already_reached_is_refused_in_kotaks_words():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    with pytest.raises(BrokerRejected) as refused:
        await vb.place_order(order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00))

    assert str(refused.value) == (
        "order c-1: Trigger has to be lower than the last traded price of ₹100.00 (trigger ₹101.00): set the trigger "
        "below ₹100.00, or send a MARKET or LIMIT order to sell now")


async def test_a_buy_stop_limit_whose_limit_is_under_its_trigger_is_refused():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))

    with pytest.raises(BrokerRejected, match="Price limit has to be higher than the trigger"):
        await vb.place_order(order(kind=t.ORDER_TYPE_STOP_LIMIT, price=104_00, trigger=105_00))


async def test_a_change_moving_a_sell_stops_trigger_through_the_market_is_refused_and_the_stop_keeps_its_trigger():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))

    with pytest.raises(BrokerRejected, match="Trigger has to be lower than the last traded price"):
        await vb.modify_order(vo.id, trigger_price_paise=100_50)  # a trailing stop moved past the price

    assert (vo.status, vo.request.trigger_price_paise) == (t.ORDER_STATUS_TRIGGER_PENDING, 99_00)


async def test_a_buy_stop_is_judged_by_todays_last_price_only():
    vb, _ = in_session(9, 15)
    await vb.on_ticks(tick(ltp=100_00, ts_ns=ist_ns(date(2026, 3, 9), 15, 29)))  # yesterday's close

    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))

    assert vo.status == t.ORDER_STATUS_TRIGGER_PENDING


# -- 2. a stalled feed ---------------------------------------------------------------------------------------
async def test_a_square_off_placed_during_a_feed_stall_fills_at_the_first_tick_after_it_not_before():
    vb, clock = in_session(14, 50)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=at(14, 50)))
    clock.set(at(15, 15))  # no tick of any token since 14:50
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0))

    clock.set(at(15, 15, 5))
    await vb.on_ticks(tick(ltp=97_00, bid=96_95, ask=97_05, ts_ns=at(15, 15, 5)))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 96_95)


async def test_a_market_order_within_the_stall_threshold_fills_at_the_last_tick():
    vb, clock = in_session(14, 50)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=at(14, 50)))
    clock.advance(10)  # a quiet book, not a dead feed

    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 99_95)


async def test_the_stall_threshold_is_the_brokers_setting():
    clock = ManualClock(at(14, 50))
    vb = VirtualBroker(None, CHARGES, clock, stall_s=5)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=at(14, 50)))
    clock.advance(10)

    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)


# -- 3. depth ------------------------------------------------------------------------------------------------
async def test_a_market_buy_larger_than_the_depth_walks_every_ask_and_fills_the_rest_at_the_last_one():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(with_depth())

    await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=1_500))

    assert fills(vb) == [(75, 100_00), (75, 100_50), (150, 101_00), (150, 102_00), (1_050, 103_00)]


async def test_a_marketable_buy_limit_fills_through_the_asks_at_its_limit_and_rests_the_rest():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(with_depth())

    vo = await place(vb, order(price=100_50, quantity=200))

    assert (vo.status, vo.filled, vo.cost_paise) == (t.ORDER_STATUS_PARTIALLY_FILLED, 150, 75 * 100_00 + 75 * 100_50)


async def test_orders_at_the_same_tick_take_its_depth_in_turn():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(with_depth())
    await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=100, client_order_id="c-1"))

    second = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=100, client_order_id="c-2"))

    assert second.cost_paise == 50 * 100_50 + 50 * 101_00


async def test_an_ioc_sell_limit_takes_the_bids_down_to_its_limit_and_cancels_the_rest():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(with_depth())

    vo = await place(vb, order(side=t.SIDE_SELL, price=99_90, quantity=200, validity=t.VALIDITY_IOC))

    assert (vo.status, vo.filled, vo.cost_paise) == (t.ORDER_STATUS_CANCELLED, 150, 75 * 99_95 + 75 * 99_90)


async def test_a_sell_stop_market_triggered_by_a_tick_with_depth_walks_its_bids():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00, quantity=100))

    await vb.on_ticks(with_depth(ts_ns=T0 + 2 * NS, ltp=99_00, asks=((99_05, 50),), bids=((98_95, 60), (98_90, 500))))

    assert (vo.status, vo.cost_paise) == (t.ORDER_STATUS_TRADED, 60 * 98_95 + 40 * 98_90)


async def test_a_tick_whose_depth_levels_are_empty_fills_at_its_touch():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(with_depth(asks=((100_05, 75), (0, 0)), bids=((0, 0),) * 5))  # Kotak's empty levels: zeros

    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0, quantity=500))

    assert (vo.filled, vo.average_price_paise) == (500, 100_00)  # the bid is 0 too: the ltp


# -- 4. the session ------------------------------------------------------------------------------------------
async def test_a_day_stop_still_working_at_the_close_is_expired_by_the_first_tick_after_it_not_triggered():
    vb, clock = in_session(15, 0)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=at(15, 0)))
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    clock.set(at(15, 45))

    await vb.on_ticks(tick(ltp=98_80, ts_ns=at(15, 45)))  # the post-close session, at the closing price

    assert (vo.status, vo.filled, vo.reason) == (t.ORDER_STATUS_CANCELLED, 0, (
        "DAY order expired at the end of 2026-03-10: the exchange closed nse_cm at 15:30 IST"))


async def test_a_resting_limit_is_not_filled_by_a_candle_after_the_close():
    vb, clock = in_session(15, 0)
    vo = await place(vb, order(price=99_00))
    clock.set(at(15, 41))

    await vb.on_candle(candle(open_=98_80, high=98_80, low=98_80, close=98_80, start_ns=at(15, 40)))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)


async def test_a_stop_reached_by_a_tick_before_the_close_triggers_in_the_batch_that_also_brings_the_close():
    vb, _ = in_session(15, 0)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=at(15, 0)))
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    batch = tick(ltp=98_90, bid=98_85, ask=98_95, ts_ns=at(15, 29, 59))
    batch.ticks.extend(tick(ltp=500_00, token=TOKEN + 1, ts_ns=at(15, 30)).ticks)

    await vb.on_ticks(batch)

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 98_85)


async def test_restore_after_the_close_leaves_out_an_order_that_worked_in_that_session():
    vb, _ = in_session(16, 0)
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_OPEN, request=order(client_order_id="c-9"), ts_ns=at(11, 0))

    assert vb.restore([saved]) == 0


async def test_a_feed_ticking_every_50_ms_is_no_stall_on_a_fast_simulated_session():
    clock = SimClock(day=date(2026, 3, 10), speed=600)  # the watchdog's 15 s are real seconds: 9,000 of this clock's
    vb = VirtualBroker(None, CHARGES, clock)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=clock.now_ns()))
    await asyncio.sleep(0.05)  # 50 ms real (30 s of the session): the next tick is due just now

    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 99_95)
