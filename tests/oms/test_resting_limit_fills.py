"""A resting limit trades at its own price when the market comes to it, as at the exchange: the first tick that
reaches it fills it there, and a later candle fills it at its limit, never at a better open it could not have had
(only the session's first candle's open, the opening auction's price, is one it gets). The rules are in
services/oms/fill_rules.py's docstring."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker, VirtualOrder
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from tests.oms.helpers import MINUTE, TOKEN, candle, order, tick

CHARGES = ChargeModel.default()
DAY = date(2026, 3, 10)  # a Tuesday: NSE trades 09:15-15:30 IST


def at(hour: int, minute: int, second: int = 0) -> int:
    return ist_ns(DAY, hour, minute, second)


async def resting(clock: ManualClock, vb: VirtualBroker, **terms) -> VirtualOrder:
    """An order placed now at `terms` against the last tick, not marketable there: it rests."""
    ack = await vb.place_order(order(**terms))
    await asyncio.sleep(0)  # a loop turn, as any caller gives
    vo = vb.book[ack.exchange_order_id]
    assert vo.status == t.ORDER_STATUS_OPEN
    return vo


def sized(ts_ns: int, ltp: int, ltq: int = 0, bid: int = 0, ask: int = 0, bid_qty: int = 0, ask_qty: int = 0,
          asks: tuple[tuple[int, int], ...] = ()) -> market_pb2.TickBatch:
    """A tick that says how much traded (ltq) and is quoted (quantities, depth levels: price, quantity)."""
    return market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=TOKEN, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=ltq, bid_paise=bid, ask_paise=ask,
        bid_qty=bid_qty, ask_qty=ask_qty, asks=[market_pb2.DepthLevel(price_paise=p, quantity=q) for p, q in asks])])


async def broker_at(ts_ns: int, ltp: int = 99_00, bid: int = 98_95, ask: int = 99_05):
    """A broker whose clock reads `ts_ns`, with a tick of the token at that time."""
    clock = ManualClock(ts_ns)
    vb = VirtualBroker(None, CHARGES, clock)
    await vb.on_ticks(tick(ltp=ltp, bid=bid, ask=ask, ts_ns=ts_ns))
    return vb, clock


async def test_a_resting_sell_limit_fills_at_its_limit_at_the_first_tick_that_trades_through_it():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, side=t.SIDE_SELL, price=100_00)
    clock.set(at(10, 0, 50))

    await vb.on_ticks(tick(ltp=100_50, bid=100_45, ask=100_55, ts_ns=at(10, 0, 50)))

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 10, 100_00)


async def test_a_resting_buy_limit_fills_at_its_limit_when_the_ask_comes_down_to_it():
    """No trade at the limit yet, but a seller's offer at it: that seller would have met this bid first."""
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(tick(ltp=98_80, bid=98_40, ask=98_45, ts_ns=at(10, 0, 40)))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 98_50)


async def test_a_tick_short_of_a_resting_limit_does_not_fill_it():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(tick(ltp=98_55, bid=98_45, ask=98_60, ts_ns=at(10, 0, 40)))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)


async def test_a_tick_stamped_a_second_before_the_order_was_accepted_does_not_fill_it():
    """A (re)subscribe snapshot carries the last trade, from before the order was there."""
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, side=t.SIDE_SELL, price=100_00)

    await vb.on_ticks(tick(ltp=100_50, ts_ns=at(10, 0, 29)))

    assert vo.filled == 0


async def test_a_resting_limit_is_filled_by_a_later_candle_at_its_limit_not_at_its_better_open():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, side=t.SIDE_SELL, price=100_00)
    clock.set(at(10, 2))

    await vb.on_candle(candle(open_=101_00, high=101_50, low=100_80, close=101_20, start_ns=at(10, 1)))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 100_00)


async def test_a_limit_resting_before_the_open_gets_the_opening_auction_price_of_the_sessions_first_candle():
    """Placed at 09:10 (the segment closed: it works through the day), it is in the book at the open."""
    clock = ManualClock(at(9, 10))
    vb = VirtualBroker(None, CHARGES, clock)
    vo = await resting(clock, vb, price=100_00)
    clock.set(at(9, 16))

    await vb.on_candle(candle(open_=98_00, high=99_00, low=97_50, close=98_50, start_ns=at(9, 15)))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 98_00)


async def test_a_limit_a_candle_filled_in_part_rests_and_a_tick_fills_the_rest_at_its_limit():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=50)
    clock.set(at(10, 2))
    await vb.on_candle(candle(open_=98_60, high=98_70, low=98_40, close=98_45, volume=20, start_ns=at(10, 1)))
    clock.set(at(10, 2, 5))

    await vb.on_ticks(tick(ltp=98_30, bid=98_25, ask=98_35, ts_ns=at(10, 2, 5)))

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 50, 98_50)


async def test_a_stop_limit_a_tick_triggered_rests_and_the_next_tick_through_its_limit_fills_it_there():
    """Buy SL trigger 105.00 limit 105.50: the trigger tick's ask 106.00 is beyond the limit, so it rests."""
    vb, clock = await broker_at(at(10, 0, 30), ltp=104_00, bid=103_95, ask=104_05)
    ack = await vb.place_order(order(kind=t.ORDER_TYPE_STOP_LIMIT, price=105_50, trigger=105_00))
    vo = vb.book[ack.exchange_order_id]
    clock.set(at(10, 0, 40))
    await vb.on_ticks(tick(ltp=105_00, bid=104_90, ask=106_00, ts_ns=at(10, 0, 40)))
    clock.set(at(10, 0, 45))

    await vb.on_ticks(tick(ltp=104_80, bid=104_75, ask=104_85, ts_ns=at(10, 0, 45)))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 105_50)


async def test_a_limit_decided_at_a_batchs_tick_rests_and_is_not_filled_by_that_same_tick():
    """An order made from a tick the broker has not taken yet is decided at the batch that brings it: that tick's
    trade (ltp 98.40, under the 98.50 limit) came before the order; its ask (98.60) is beyond the limit."""
    vb, _ = await broker_at(at(10, 0, 30))
    req = order(price=98_50)
    req.tick_recv_ns = 5
    ack = await vb.place_order(req)
    vo = vb.book[ack.exchange_order_id]

    await vb.on_ticks(tick(ltp=98_40, bid=98_35, ask=98_60, ts_ns=at(10, 0, 30), recv_ns=5))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)


async def test_a_tick_after_the_session_closed_expires_a_resting_limit_and_does_not_fill_it():
    vb, clock = await broker_at(at(15, 29))
    vo = await resting(clock, vb, side=t.SIDE_SELL, price=100_00)
    clock.set(at(15, 30, 5))

    await vb.on_ticks(tick(ltp=100_50, bid=100_45, ask=100_55, ts_ns=at(15, 30, 5)))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)


async def test_the_next_days_first_tick_expires_a_resting_limit_before_it_could_fill_it():
    """Placed out of hours (it works to the end of its IST day), it is gone by the next day's first tick."""
    vb, clock = await broker_at(at(20, 0))
    vo = await resting(clock, vb, side=t.SIDE_SELL, price=100_00)
    morning = ist_ns(DAY + timedelta(days=1), 9, 15) + NS
    clock.set(morning)

    await vb.on_ticks(tick(ltp=101_00, bid=100_95, ask=101_05, ts_ns=morning))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)
    assert vo.reason.startswith("DAY order expired at the end of")


async def test_a_resting_limit_fill_is_reported_at_the_tick_that_made_it():
    vb, clock = await broker_at(at(10, 0, 30))
    await resting(clock, vb, side=t.SIDE_SELL, price=100_00)
    clock.set(at(10, 0, 50) + MINUTE)  # the batch is handled later than its trade

    await vb.on_ticks(tick(ltp=100_50, ts_ns=at(10, 0, 50)))

    event = await asyncio.wait_for(anext(vb.events()), 1.0)
    assert (event.status, event.ts_ns) == (t.ORDER_STATUS_TRADED, at(10, 0, 50))


async def test_a_one_unit_print_at_a_resting_limit_fills_one_unit_and_the_rest_keeps_resting():
    """The print is what traded there; the ask (98.55) is beyond the limit and offers nothing."""
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100_000)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(sized(at(10, 0, 40), ltp=98_50, ltq=1, bid=98_45, ask=98_55, bid_qty=3, ask_qty=2))

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_PARTIALLY_FILLED, 1, 98_50)


async def test_an_offer_under_a_resting_buy_limit_fills_what_its_depth_shows_at_or_under_the_limit_at_the_limit():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100_000)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(sized(at(10, 0, 40), ltp=98_60, ltq=1, ask=98_40, ask_qty=10,
                            asks=((98_40, 10), (98_50, 5), (98_55, 400))))

    assert (vo.filled, vo.average_price_paise) == (15, 98_50)


async def test_an_ask_under_a_resting_buy_limit_without_depth_fills_the_ask_quantity():
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100_000)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(sized(at(10, 0, 40), ltp=98_60, ltq=7, bid=98_35, ask=98_40, bid_qty=50, ask_qty=25))

    assert vo.filled == 25


async def test_resting_limits_a_tick_reaches_share_what_it_shows_in_the_order_they_came_to_rest():
    vb, clock = await broker_at(at(10, 0, 30))
    first = await resting(clock, vb, price=98_50, quantity=30, client_order_id="c-1")
    second = await resting(clock, vb, price=98_50, quantity=30, client_order_id="c-2")
    clock.set(at(10, 0, 40))

    await vb.on_ticks(sized(at(10, 0, 40), ltp=98_50, ltq=40, bid=98_45, ask=98_55, bid_qty=9, ask_qty=9))

    assert (first.filled, second.filled) == (30, 10)


async def test_a_changed_resting_limit_takes_a_ticks_quantity_after_the_limits_resting_before_the_change():
    """At the exchange a modified order loses its time priority."""
    vb, clock = await broker_at(at(10, 0, 30))
    first = await resting(clock, vb, price=98_50, quantity=30, client_order_id="c-1")
    second = await resting(clock, vb, price=98_50, quantity=30, client_order_id="c-2")
    clock.set(at(10, 0, 35))
    await vb.modify_order(first.id, quantity=31)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(sized(at(10, 0, 40), ltp=98_50, ltq=40, bid=98_45, ask=98_55, bid_qty=9, ask_qty=9))

    assert (first.filled, second.filled) == (10, 30)


async def test_a_minutes_candle_shares_out_only_the_volume_its_ticks_did_not_fill_of_resting_limits():
    """30 of the minute's 50 units filled the order at a tick: the candle has 20 left for it, not 50 again."""
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100)
    clock.set(at(10, 1, 10))
    await vb.on_ticks(sized(at(10, 1, 10), ltp=98_50, ltq=30, bid=98_45, ask=98_55, bid_qty=9, ask_qty=9))
    clock.set(at(10, 2))

    await vb.on_candle(candle(open_=98_60, high=98_70, low=98_40, close=98_45, volume=50, start_ns=at(10, 1)))

    assert vo.filled == 50


async def test_a_tick_that_says_no_quantity_at_all_fills_all_of_a_resting_limit():
    """A synthetic or lite tick (no ltq, no quote quantity, no depth) says nothing of size: it is no cap."""
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100_000)
    clock.set(at(10, 0, 40))

    await vb.on_ticks(tick(ltp=98_50, bid=98_45, ask=98_55, ts_ns=at(10, 0, 40)))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_TRADED, 100_000)


async def test_a_candle_arriving_after_the_next_minutes_first_tick_still_takes_off_its_own_minutes_tick_fills():
    # The strategy closes minute M's candle on the first tick of M+1, which reaches the OMS first and may fill too.
    vb, clock = await broker_at(at(10, 0, 30))
    vo = await resting(clock, vb, price=98_50, quantity=100)
    clock.set(at(10, 1, 10))
    await vb.on_ticks(sized(at(10, 1, 10), ltp=98_50, ltq=30, bid=98_45, ask=98_55, bid_qty=9, ask_qty=9))
    clock.set(at(10, 2, 0))
    await vb.on_ticks(sized(at(10, 2, 0), ltp=98_50, ltq=5, bid=98_45, ask=98_55, bid_qty=9, ask_qty=9))

    await vb.on_candle(candle(open_=98_60, high=98_70, low=98_40, close=98_45, volume=50, start_ns=at(10, 1)))

    assert vo.filled == 30 + 5 + (50 - 30)  # 10:01 traded 50, its ticks had given this order 30 of them
