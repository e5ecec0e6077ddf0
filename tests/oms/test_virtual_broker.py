"""The VirtualBroker's fill rules, one per test, and its proxy behaviour."""

import asyncio
from datetime import timedelta

import pytest

from services.oms.charges import ChargeModel
from services.oms.ledger import MemoryLedger
from services.oms.states import ReasonCode
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import NS, ManualClock, day_of, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotFound
from tests.oms.helpers import MINUTE, T0, TOKEN, candle, order, tick

CHARGES = ChargeModel.default()
ONE_DAY = 24 * 60 * MINUTE


@pytest.fixture
def vb():
    return VirtualBroker(None, CHARGES, ManualClock(T0 + 1))


async def next_event(vb):
    return await asyncio.wait_for(anext(vb.events()), 1.0)


async def place(vb, req):
    ack = await vb.place_order(req)
    await asyncio.sleep(0)  # a loop turn, as any caller gives: a fill decided on arrival is booked after it
    return vb.book[ack.exchange_order_id]


async def test_place_order_returns_a_virtual_id_and_books_the_order_open(vb):
    ack = await vb.place_order(order())

    assert ack.exchange_order_id.startswith("VB-")
    assert ack.status == t.ORDER_STATUS_OPEN
    assert (await vb.find_by_tag("c-1")).exchange_order_id == ack.exchange_order_id


async def test_buy_limit_fills_when_candle_low_crosses_below(vb):
    vo = await place(vb, order(price=100_00))

    await vb.on_candle(candle(open_=101_00, high=102_00, low=99_95, close=100_50))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 100_00  # its limit


async def test_buy_limit_does_not_fill_when_low_only_touches_the_limit(vb):
    vo = await place(vb, order(price=100_00))

    await vb.on_candle(candle(open_=101_00, high=102_00, low=100_00, close=100_50))

    assert vo.status == t.ORDER_STATUS_OPEN
    assert vo.filled == 0


async def test_a_resting_buy_limit_fills_at_its_limit_when_a_later_candle_gaps_below(vb):
    """It rested in the book while the market came down to it: it trades at its own price, not the lower open."""
    vo = await place(vb, order(price=100_00))

    await vb.on_candle(candle(open_=98_00, high=99_00, low=97_00, close=98_50))

    assert vo.average_price_paise == 100_00


async def test_sell_limit_fills_at_its_limit_when_candle_high_crosses_above(vb):
    vo = await place(vb, order(side=t.SIDE_SELL, price=100_00))

    await vb.on_candle(candle(open_=99_00, high=100_05, low=98_00, close=99_50))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 100_00


async def test_marketable_buy_limit_fills_on_arrival_at_the_ask(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    vo = await place(vb, order(price=101_00))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 100_05


async def test_a_burst_goes_out_before_its_arrival_fills_are_booked_at_the_prices_of_arrival(vb):
    """The OMS places a burst of orders without yielding: their fills (charges, events) are worked out after it,
    at the prices each order arrived at, and nothing that reads or changes the book sees them unfilled."""
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    first = await vb.place_order(order(kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="c-1"))
    arrived_ns = vb.clock.now_ns()
    vb.clock.advance(0.001)
    await vb.on_ticks(tick(ltp=101_00, bid=100_95, ask=101_05))
    second = await vb.place_order(order(kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="c-2"))
    vb.clock.advance(0.001)
    await vb.on_ticks(tick(ltp=102_00, bid=101_95, ask=102_05))
    assert vb._events.empty()  # no fill worked out inside the burst

    with pytest.raises(BrokerRejected, match="TRADED"):  # a cancel after it arrived is too late, as at an exchange
        await vb.cancel_order(first.exchange_order_id)

    events = [await next_event(vb), await next_event(vb)]
    assert [(e.exchange_order_id, e.status, e.average_price_paise) for e in events] == [
        (first.exchange_order_id, t.ORDER_STATUS_TRADED, 100_05),
        (second.exchange_order_id, t.ORDER_STATUS_TRADED, 101_05)]
    assert all(e.charges_paise > 0 for e in events)
    assert [e.ts_ns for e in events] == [arrived_ns, arrived_ns + 1_000_000]


async def test_arrival_fills_are_booked_on_the_next_loop_turn_without_any_reader(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    ack = await vb.place_order(order(kind=t.ORDER_TYPE_MARKET, price=0))

    await asyncio.sleep(0)

    assert vb._events.qsize() == 1
    assert vb.book[ack.exchange_order_id].status == t.ORDER_STATUS_TRADED


async def test_marketable_sell_limit_fills_on_arrival_at_the_bid(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    vo = await place(vb, order(side=t.SIDE_SELL, price=99_00))

    assert vo.average_price_paise == 99_95


async def test_market_buy_fills_on_arrival_at_the_ask(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 100_05


async def test_market_sell_fills_at_the_ltp_when_the_tick_has_no_bid(vb):
    await vb.on_ticks(tick(ltp=100_00))

    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0))

    assert vo.average_price_paise == 100_00


async def test_market_order_without_a_tick_fills_at_the_next_candle_open(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0))
    assert vo.status == t.ORDER_STATUS_OPEN

    await vb.on_candle(candle(open_=100_10, high=101_00, low=99_00, close=100_00))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 100_10


async def test_market_order_without_a_tick_fills_at_the_next_tick_of_its_token(vb):
    """Filling only at the next candle, a market order placed before the OMS had a tick waited up to a minute, and
    forever where no candles reach the OMS (split mode without a strategy process)."""
    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=10))
    await vb.on_ticks(tick(ltp=101_00, bid=100_95, ask=101_05, token=999))  # another instrument's
    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)

    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    await vb.on_candle(candle(open_=90_00, high=110_00, low=80_00, close=95_00, start_ns=T0 + MINUTE))

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 10, 100_05)
    assert [e.filled_quantity for e in [await next_event(vb) for _ in range(1)]] == [10]
    assert vb._events.empty()  # filled once: the candle after it found it traded


def made_at(request, recv_ns):
    """The order as risk passes a strategy's on: with the arrival time of the tick that made its signal."""
    request.tick_recv_ns = recv_ns
    return request


def ticks_received(recv_ns, *prices):
    """One batch as ingestion passes it on: the ticks (ltp, bid, ask) of one receipt."""
    return market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=TOKEN, exchange_segment="nse_cm", ts_ns=T0, ltp_paise=ltp, bid_paise=bid, ask_paise=ask,
        recv_ns=recv_ns) for ltp, bid, ask in prices])


async def test_an_order_made_from_a_tick_the_broker_has_not_taken_fills_at_that_batchs_last_tick_not_before():
    """The paper broker takes ticks on a stream of its own; a strategy's order made from a tick can reach it first
    (signals go ahead of market data). It used to fill at the tick before: a stop loss's exit at 98.90 filled at
    the 99.20 the market had left. Now it waits for the batch that carried its tick and fills at the token's last
    tick in it; an order from a tick the broker has (or without one: manual) fills on arrival as ever."""
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    await vb.on_ticks(ticks_received(1_000, (99_20, 99_15, 99_25)))
    sell = await place(vb, made_at(order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="s"),
                                   2_000))
    marketable = await place(vb, made_at(order(side=t.SIDE_SELL, price=98_50, client_order_id="l"), 2_000))
    resting = await place(vb, made_at(order(side=t.SIDE_SELL, price=99_50, client_order_id="r", quantity=1), 2_000))
    ioc = await place(vb, made_at(order(side=t.SIDE_SELL, price=99_50, client_order_id="i",
                                        validity=t.VALIDITY_IOC), 2_000))
    manual = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="m"))
    assert [vo.filled for vo in (sell, marketable, resting, ioc)] == [0, 0, 0, 0]
    assert (manual.filled, manual.average_price_paise) == (10, 99_15)  # no tick of its own: as ever
    await vb.on_ticks(ticks_received(1_500, (99_10, 99_05, 99_15)))  # a batch from before its tick
    assert [vo.filled for vo in (sell, marketable, resting, ioc)] == [0, 0, 0, 0]

    await vb.on_ticks(ticks_received(2_000, (99_00, 98_95, 99_05), (98_90, 98_85, 98_95)))
    await asyncio.sleep(0)

    assert [(vo.status, vo.average_price_paise) for vo in (sell, marketable, resting, ioc)] == [
        (t.ORDER_STATUS_TRADED, 98_85), (t.ORDER_STATUS_TRADED, 98_85), (t.ORDER_STATUS_OPEN, 0),
        (t.ORDER_STATUS_CANCELLED, 0)]
    assert ioc.reason == "IOC order not filled on arrival"

    taken = await place(vb, made_at(order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="t"),
                                    2_000))
    assert (taken.filled, taken.average_price_paise) == (10, 98_85)  # its tick already taken: on arrival


async def test_a_cancelled_market_order_is_not_filled_by_the_next_tick(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0))
    await vb.cancel_order(vo.id)

    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)


async def yesterdays_close_then_the_next_morning(vb) -> int:
    """The last tick of a day (15:29:59 IST), then the clock at 09:15:00.5 the next morning; returns that time."""
    close_ns = ist_ns(day_of(T0), 15, 29, 59)
    vb.clock.set(close_ns)
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=close_ns))
    morning_ns = ist_ns(day_of(T0) + timedelta(days=1), 9, 15) + 500_000_000
    vb.clock.set(morning_ns)
    return morning_ns


async def test_market_order_ignores_yesterdays_last_tick_and_fills_at_the_next_candle_open(vb):
    morning_ns = await yesterdays_close_then_the_next_morning(vb)

    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0))
    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)
    await vb.on_candle(candle(open_=103_00, high=104_00, low=102_00, close=103_50,
                              start_ns=morning_ns - 500_000_000 + MINUTE))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 103_00)


async def test_a_market_order_waiting_for_the_morning_fills_at_its_first_tick_not_a_late_one_of_yesterday(vb):
    morning_ns = await yesterdays_close_then_the_next_morning(vb)
    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0))

    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=morning_ns - 12 * 3600 * 10**9))  # yesterday's
    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)
    await vb.on_ticks(tick(ltp=102_00, bid=101_95, ask=102_05, ts_ns=morning_ns + 1))

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 102_05)


async def test_a_limit_marketable_only_against_yesterdays_last_tick_rests(vb):
    await yesterdays_close_then_the_next_morning(vb)

    vo = await place(vb, order(price=100_10))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_OPEN, 0)


async def test_market_order_filled_on_arrival_is_not_filled_again_by_the_next_candle(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))
    vo = await place(vb, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=10))
    first = await next_event(vb)

    await vb.on_candle(candle(open_=90_00, high=110_00, low=80_00, close=95_00))
    await vb.on_candle(candle(open_=90_00, high=110_00, low=80_00, close=95_00, start_ns=T0 + 2 * MINUTE))

    assert first.filled_quantity == 10
    assert vo.filled == 10
    assert vo.average_price_paise == 100_05
    assert vb._events.empty()  # no second fill event was ever emitted


async def test_buy_stop_market_triggers_when_high_reaches_trigger_and_fills_at_the_trigger(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00))
    assert vo.status == t.ORDER_STATUS_TRIGGER_PENDING

    await vb.on_candle(candle(open_=100_00, high=101_00, low=99_00, close=100_50))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 101_00  # max(trigger, open)


async def test_buy_stop_market_fills_at_the_open_when_the_candle_gaps_over_the_trigger(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00))

    await vb.on_candle(candle(open_=103_00, high=104_00, low=102_00, close=103_50))

    assert vo.average_price_paise == 103_00


async def test_sell_stop_market_triggers_when_low_reaches_trigger_at_min_of_trigger_and_open(vb):
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))

    await vb.on_candle(candle(open_=100_00, high=100_50, low=98_50, close=99_00))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 99_00


async def test_stop_market_does_not_trigger_when_the_candle_stays_away(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00))

    await vb.on_candle(candle(open_=100_00, high=100_95, low=99_00, close=100_50))

    assert vo.status == t.ORDER_STATUS_TRIGGER_PENDING


async def test_stop_limit_triggers_and_fills_in_the_same_candle_when_it_crosses_the_limit(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_LIMIT, price=101_50, trigger=101_00))

    await vb.on_candle(candle(open_=100_00, high=102_00, low=99_00, close=101_00))

    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 101_00  # min(limit, max(trigger, open))


async def test_stop_limit_that_triggers_without_crossing_its_limit_becomes_open_and_fills_later(vb):
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_LIMIT, price=101_00, trigger=101_00))

    await vb.on_candle(candle(open_=101_00, high=101_50, low=101_00, close=101_20))  # never under the limit
    triggered = vo.status
    await vb.on_candle(candle(open_=100_50, high=100_60, low=99_50, close=99_80, start_ns=T0 + 2 * MINUTE))

    assert triggered == t.ORDER_STATUS_OPEN
    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.average_price_paise == 101_00  # resting at its limit since the trigger: not the lower open


async def test_a_sell_stop_market_fills_at_the_bid_of_the_first_tick_at_its_trigger_not_at_the_minutes_candle(vb):
    """A trader's stop under a position used to trigger only when the minute's candle closed: a minute late, at a
    price worked out from the candle. A real exchange triggers it at the first trade at the trigger."""
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    await vb.on_ticks(tick(ltp=99_05, bid=99_00, ask=99_10))
    assert vo.status == t.ORDER_STATUS_TRIGGER_PENDING  # 99.05 is above it, though its bid is at it

    await vb.on_ticks(tick(ltp=98_95, bid=98_90, ask=99_00, ts_ns=T0 + 5 * NS))

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 10, 98_90)
    event = await next_event(vb)
    assert (event.status, event.ts_ns) == (t.ORDER_STATUS_TRADED, T0 + 5 * NS)
    await vb.on_candle(candle(open_=100_00, high=100_50, low=98_00, close=99_00))
    assert vb._events.empty() and vo.filled == 10  # the candle after it finds it traded


async def test_a_buy_stop_limit_triggered_by_a_tick_fills_there_when_marketable_or_rests_as_a_limit(vb):
    marketable = await place(vb, order(kind=t.ORDER_TYPE_STOP_LIMIT, price=101_50, trigger=101_00))
    resting = await place(vb, order(kind=t.ORDER_TYPE_STOP_LIMIT, price=101_00, trigger=101_00, client_order_id="c-2"))

    await vb.on_ticks(tick(ltp=101_00, bid=100_95, ask=101_05))

    assert (marketable.status, marketable.average_price_paise) == (t.ORDER_STATUS_TRADED, 101_05)
    assert (resting.status, resting.filled, resting.triggered) == (t.ORDER_STATUS_OPEN, 0, True)
    await vb.on_candle(candle(open_=101_20, high=101_40, low=100_90, close=101_00, start_ns=T0 + MINUTE))
    assert (resting.status, resting.average_price_paise) == (t.ORDER_STATUS_TRADED, 101_00)  # the limit rule


async def test_a_stop_is_not_triggered_by_a_tick_from_before_it_nor_once_cancelled_and_a_restored_one_is(vb):
    early = VirtualBroker(None, CHARGES, ManualClock(T0 + 10 * NS))
    vo = await place(early, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    await early.on_ticks(tick(ltp=98_00, ts_ns=T0 + 9 * NS))  # a second before it was accepted, delivered late
    assert vo.status == t.ORDER_STATUS_TRIGGER_PENDING

    cancelled = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    await vb.cancel_order(cancelled.id)
    assert vb._stops == {}  # on_ticks checks nothing more
    await vb.on_ticks(tick(ltp=98_00))
    assert (cancelled.status, cancelled.filled) == (t.ORDER_STATUS_CANCELLED, 0)

    restarted = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    restarted.restore([t.OrderUpdate(
        internal_id="i-1", client_order_id="c-r", exchange_order_id="VB-r", status=t.ORDER_STATUS_TRIGGER_PENDING,
        ts_ns=T0, request=order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00,
                                client_order_id="c-r"))])
    await restarted.on_ticks(tick(ltp=98_50, bid=98_45))
    (restored,) = restarted.book.values()
    assert (restored.status, restored.average_price_paise) == (t.ORDER_STATUS_TRADED, 98_45)


async def test_a_candle_that_started_before_the_order_was_accepted_does_not_fill_it(vb):
    vo = await place(vb, order(price=100_00))  # accepted at T0 + 1 ns

    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, start_ns=T0))

    assert vo.status == t.ORDER_STATUS_OPEN


async def test_fill_quantity_is_capped_by_candle_volume_and_the_rest_stays_open(vb):
    vo = await place(vb, order(price=100_00, quantity=50))

    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, volume=20))

    assert vo.status == t.ORDER_STATUS_PARTIALLY_FILLED
    assert vo.filled == 20
    assert vo.remaining == 30


async def test_a_stop_whose_trigger_the_candle_crossed_triggers_even_when_orders_ahead_used_up_its_volume(vb):
    big = await place(vb, order(price=100_00, quantity=1_000, client_order_id="c-big"))
    stop = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00, client_order_id="c-stop"))

    await vb.on_candle(candle(open_=100_00, high=101_50, low=99_00, close=101_00, volume=1_000))

    assert big.status == t.ORDER_STATUS_TRADED
    assert (stop.status, stop.filled) == (t.ORDER_STATUS_OPEN, 0)


async def test_a_stop_triggered_in_a_used_up_candle_fills_at_the_next_candle_open_below_its_trigger(vb):
    await place(vb, order(price=100_00, quantity=1_000, client_order_id="c-big"))
    stop = await place(vb, order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=101_00, client_order_id="c-stop"))
    await vb.on_candle(candle(open_=100_00, high=101_50, low=99_00, close=101_00, volume=1_000))

    await vb.on_candle(candle(open_=100_50, high=100_80, low=100_20, close=100_60, start_ns=T0 + 2 * MINUTE))

    assert stop.status == t.ORDER_STATUS_TRADED
    assert stop.average_price_paise == 100_50


async def test_ioc_order_not_filled_on_arrival_is_cancelled(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05))

    vo = await place(vb, order(price=99_00, validity=t.VALIDITY_IOC))

    assert vo.status == t.ORDER_STATUS_CANCELLED
    assert "IOC" in vo.reason


async def test_each_fill_event_carries_cumulative_fills_and_its_charges(vb):
    vo = await place(vb, order(price=100_00, quantity=50))
    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, volume=20))
    await vb.on_candle(candle(open_=98_00, high=99_50, low=97_00, close=99_00, start_ns=T0 + 2 * MINUTE))

    first, second = await next_event(vb), await next_event(vb)

    assert (first.filled_quantity, first.average_price_paise) == (20, 100_00)
    assert (second.filled_quantity, second.average_price_paise) == (50, 100_00)
    assert second.raw["last_fill_quantity"] == 30
    assert second.raw["last_fill_price_paise"] == 100_00
    expected = CHARGES.for_fill(vo.request, 20, 100_00).total
    assert first.charges_paise == expected == first.raw["last_fill_charges_paise"]
    assert second.charges_paise == vo.charges_paise > expected


async def test_a_paper_fill_of_a_contract_with_a_price_factor_charges_on_its_whole_turnover(vb):
    """1 lot at Rs 100 with factor 100 is Rs 10,000 of turnover, as 100 units at a factor of 1 would be."""
    req = order(price=100_00, quantity=1)
    req.price_factor.numerator = 100
    await place(vb, req)

    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00))

    event = await next_event(vb)
    assert (event.filled_quantity, event.average_price_paise) == (1, 100_00)  # a price, not a value
    assert event.charges_paise == CHARGES.for_fill(order(price=100_00, quantity=100), 100, 100_00).total


async def test_cancel_closes_a_working_order_and_refuses_a_terminal_one(vb):
    vo = await place(vb, order(price=100_00))

    ack = await vb.cancel_order(vo.id)

    assert ack.status == t.ORDER_STATUS_CANCELLED
    with pytest.raises(BrokerRejected):
        await vb.cancel_order(vo.id)
    with pytest.raises(NotFound):
        await vb.cancel_order("VB-unknown")


async def test_restore_reseeds_working_orders_from_the_ledger_and_they_fill_again():
    vb = VirtualBroker(None, CHARGES, ManualClock(ist_ns(day_of(T0), 11, 0)))  # in the session it was placed in
    earlier_today = ist_ns(day_of(T0), 9, 20)
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_PARTIALLY_FILLED, filled_quantity=4, average_price_paise=100_00,
                          request=order(price=100_00, quantity=10, client_order_id="c-9"), ts_ns=earlier_today)

    assert vb.restore([saved]) == 1
    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, start_ns=ist_ns(day_of(T0), 11, 1)))

    vo = vb.book["VB-abc"]
    assert vo.status == t.ORDER_STATUS_TRADED
    assert vo.filled == 10
    assert vo.average_price_paise == 100_00  # the 4 before the restart and the 6 after, all at its limit


async def test_a_market_order_restored_unfilled_fills_at_the_next_tick():
    vb = VirtualBroker(None, CHARGES, ManualClock(ist_ns(day_of(T0), 11, 0)))
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_OPEN, ts_ns=ist_ns(day_of(T0), 9, 20),
                          request=order(kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="c-9"))

    assert vb.restore([saved]) == 1
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=ist_ns(day_of(T0), 11, 0) + 2))

    assert (vb.book["VB-abc"].status, vb.book["VB-abc"].average_price_paise) == (t.ORDER_STATUS_TRADED, 100_05)


async def test_a_part_filled_order_restored_after_a_restart_pays_only_the_rest_of_its_brokerage():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    req = order(price=100_00, quantity=100, client_order_id="c-9")
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_PARTIALLY_FILLED, filled_quantity=10, average_price_paise=100_00,
                          request=req, ts_ns=T0)
    paid = CHARGES.for_fill(req, 10, 100_00).brokerage  # 0.03% of Rs 1,000: 30 paise, under the flat Rs 20

    vb.restore([saved])
    await vb.on_candle(candle(open_=100_00, high=101_00, low=99_00, close=100_00))

    rest = await next_event(vb)
    assert (rest.filled_quantity, rest.raw["last_fill_quantity"]) == (100, 90)
    assert rest.raw["last_fill_charges_paise"] == CHARGES.for_fill(req, 90, 100_00, paid).total
    assert vb.book["VB-abc"].brokerage_paise == CHARGES.for_fill(req, 100, 100_00).brokerage


async def test_a_part_filled_order_restored_after_a_restart_reports_its_charges_from_before_it_too():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    req = order(price=100_00, quantity=10, client_order_id="c-9")
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_PARTIALLY_FILLED, filled_quantity=4, average_price_paise=100_00,
                          request=req, ts_ns=T0)
    before = CHARGES.for_fill(req, 4, 100_00).total

    vb.restore([saved], charges={"i-1": before})
    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00))

    rest = await next_event(vb)
    assert rest.charges_paise == before + rest.raw["last_fill_charges_paise"]  # cumulative, as before the restart
    assert (await vb.find_by_tag("c-9")).charges_paise == before + rest.raw["last_fill_charges_paise"]


async def test_restore_leaves_out_a_day_order_placed_on_an_earlier_day():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_OPEN, request=order(client_order_id="c-9"), ts_ns=T0 - ONE_DAY)

    assert vb.restore([saved]) == 0
    assert vb.book == {}


async def test_restore_leaves_out_an_ioc_order_the_ledger_still_shows_open():
    vb = VirtualBroker(None, CHARGES, ManualClock(T0 + 1))
    saved = t.OrderUpdate(internal_id="i-1", client_order_id="c-9", exchange_order_id="VB-abc",
                          status=t.ORDER_STATUS_OPEN, request=order(client_order_id="c-9", validity=t.VALIDITY_IOC),
                          ts_ns=T0)

    assert vb.restore([saved]) == 0
    assert vb.book == {}


async def test_a_day_order_from_an_earlier_day_is_cancelled_at_restart_and_not_filled(start_oms):
    ledger = MemoryLedger()
    req = order(price=100_00, quantity=10)
    await ledger.insert_new(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=req,
                                          status=t.ORDER_STATUS_PENDING_NEW, ts_ns=T0 - ONE_DAY), {})
    for status in (t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_OPEN):
        await ledger.record(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=req, status=status,
                                          exchange_order_id="VB-1", ts_ns=T0 - ONE_DAY), {})
    oms = await start_oms(ledger=ledger)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.bus.drain()

    row = await ledger.get("c-1")
    assert (row.status, row.filled_quantity) == (t.ORDER_STATUS_CANCELLED, 0)
    assert row.reason_code == ReasonCode.NOT_IN_BROKER_BOOK
    assert oms.broker.book == {}
    assert oms.module.engine.positions.net_quantity(req.token) == 0


async def test_a_day_order_still_working_when_a_new_day_starts_is_cancelled_by_its_first_candle(vb):
    vo = await place(vb, order(price=100_00))
    next_morning = ist_ns(day_of(T0) + timedelta(days=1), 9, 15)

    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, start_ns=next_morning))

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)
    assert vo.reason == f"DAY order expired at the end of {day_of(T0).isoformat()}"


async def test_a_new_days_first_candle_drops_the_orders_of_earlier_days_that_ended_from_the_book(vb):
    """A paper account running for weeks kept every order it ever took, as no broker's book does."""
    filled = await place(vb, order(price=100_00, client_order_id="c-filled"))
    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00))
    expiring = await place(vb, order(price=90_00, client_order_id="c-expiring"))
    next_morning = ist_ns(day_of(T0) + timedelta(days=1), 9, 15)
    vb.clock.set(next_morning - 1)
    today = await place(vb, order(price=90_00, client_order_id="c-today"))

    await vb.on_candle(candle(open_=99_00, high=99_50, low=98_00, close=99_00, start_ns=next_morning))

    assert (filled.status, expiring.status) == (t.ORDER_STATUS_TRADED, t.ORDER_STATUS_CANCELLED)
    assert list(vb.book) == [today.id]
    assert await vb.find_by_tag("c-filled") is None and (await vb.find_by_tag("c-today")) is not None


class FakeRealBroker:
    """Stands in for the real account (a network broker cannot run here); only reads are used."""

    name = "fake-real"

    async def positions(self):
        return [t.Position(token=1, net_quantity=5)]

    async def limits(self):
        return {"cash": 100}

    async def quotes(self, tokens):
        return {tok: 1 for tok in tokens}

    async def place_order(self, order):  # pragma: no cover - must never be called
        raise AssertionError("a write reached the real broker")


async def test_reads_pass_through_to_the_inner_broker_and_writes_do_not():
    vb = VirtualBroker(FakeRealBroker(), CHARGES, ManualClock(T0 + 1))

    ack = await vb.place_order(order())

    assert ack.exchange_order_id.startswith("VB-")
    assert (await vb.positions())[0].net_quantity == 5
    assert await vb.limits() == {"cash": 100}
    assert await vb.quotes([7]) == {7: 1}


# -- found by review: the trigger minute, the new day's ticks, a change before its tick -------------------------------
async def test_a_stop_limit_a_tick_triggers_rests_as_a_limit_from_then_not_filled_at_its_minutes_earlier_open(vb):
    """Buy SL trigger 105.00 limit 105.50; a tick 30 s into the minute reaches 105 with the ask at 106 (not
    marketable). That minute's candle opened at 102, before the trigger: no price this limit could have had."""
    vo = await place(vb, order(kind=t.ORDER_TYPE_STOP_LIMIT, price=105_50, trigger=105_00))
    vb.clock.set(T0 + MINUTE + 30 * NS)
    await vb.on_ticks(tick(ltp=105_00, bid=104_90, ask=106_00, ts_ns=T0 + MINUTE + 30 * NS))
    assert (vo.status, vo.triggered) == (t.ORDER_STATUS_OPEN, True)

    await vb.on_candle(candle(open_=102_00, high=106_00, low=101_50, close=105_80, start_ns=T0 + MINUTE))
    assert vo.filled == 0
    await vb.on_candle(candle(open_=105_80, high=106_00, low=105_00, close=105_20, start_ns=T0 + 2 * MINUTE))
    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 105_50)  # its limit


@pytest.mark.parametrize("kind", [t.ORDER_TYPE_STOP_MARKET, t.ORDER_TYPE_MARKET])
async def test_yesterdays_day_orders_expire_at_todays_first_tick_not_filled_at_its_price(vb, kind):
    """The first candle of a day closes a minute after the open; its first ticks come before it."""
    vo = await place(vb, order(side=t.SIDE_SELL, kind=kind, price=0, trigger=99_00 if kind != t.ORDER_TYPE_MARKET
                               else 0))
    morning = ist_ns(day_of(T0) + timedelta(days=1), 9, 15) + NS
    vb.clock.set(morning)

    await vb.on_ticks(tick(ltp=95_00, bid=94_90, ask=95_10, ts_ns=morning))  # a gap down at the open

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_CANCELLED, 0)
    assert vo.reason.startswith("DAY order expired at the end of")


async def test_a_change_of_an_order_still_waiting_for_its_tick_waits_for_it_too(vb):
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=T0 + NS, recv_ns=T0 + NS))
    made_later = order(price=103_10, quantity=10)
    made_later.tick_recv_ns = T0 + 2 * NS  # from a tick at 103 this broker has not taken yet
    vo = await place(vb, made_later)
    assert vo.filled == 0

    await vb.modify_order(vo.id, price_paise=103_20)
    await asyncio.sleep(0)
    assert vo.filled == 0  # not at the 100.05 the market had left
    await vb.on_ticks(tick(ltp=103_00, bid=102_95, ask=103_05, ts_ns=T0 + 2 * NS, recv_ns=T0 + 2 * NS))
    await asyncio.sleep(0)

    assert (vo.status, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 103_05)


# -- found by the paper-trading review: a stale snapshot tick ending the day's first batch, a chased stop ------------
@pytest.mark.parametrize("kind", [t.ORDER_TYPE_STOP_MARKET, t.ORDER_TYPE_MARKET])
async def test_yesterdays_day_orders_expire_at_a_first_batch_ending_with_a_stale_snapshot_tick_of_yesterday(vb, kind):
    """A (re)subscribe snapshot carries an instrument not traded yet today with yesterday's last trade time; the
    batch was dated by its last tick, so today's gap through the stop filled yesterday's orders."""
    vo = await place(vb, order(side=t.SIDE_SELL, kind=kind, price=0, trigger=99_00 if kind != t.ORDER_TYPE_MARKET
                               else 0))
    morning = ist_ns(day_of(T0) + timedelta(days=1), 9, 15) + NS
    vb.clock.set(morning)
    batch = tick(ltp=95_00, bid=94_90, ask=95_10, ts_ns=morning)  # a gap down at the open
    batch.ticks.extend(tick(ltp=50_00, token=9999, ts_ns=T0).ticks)  # not traded yet today: yesterday's ltt

    await vb.on_ticks(batch)

    assert (vo.status, vo.filled, vo.reason) == (
        t.ORDER_STATUS_CANCELLED, 0, f"DAY order expired at the end of {day_of(T0).isoformat()}")


async def test_a_triggered_stop_limit_changed_to_a_marketable_limit_trades_at_once_at_the_touch(vb):
    """A stop-loss whose limit the market ran through rests as a limit; chasing it with a limit through the bid
    trades at once at the exchange, as a new limit order there would."""
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_LIMIT, price=98_90, trigger=99_00))
    await vb.on_ticks(tick(ltp=98_50, bid=98_45, ask=98_55, ts_ns=T0 + 5 * NS))  # through the trigger and limit
    assert (vo.status, vo.triggered, vo.filled) == (t.ORDER_STATUS_OPEN, True, 0)
    vb.clock.advance(6)

    await vb.modify_order(vo.id, price_paise=98_00)
    await asyncio.sleep(0)

    assert (vo.status, vo.filled, vo.average_price_paise) == (t.ORDER_STATUS_TRADED, 10, 98_45)


async def test_a_triggered_stop_markets_remainder_changed_trades_at_once_as_a_market_order(vb):
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=99_00))
    await vb.on_candle(candle(open_=99_50, high=99_50, low=98_00, close=98_20, volume=4))  # 4 at 99.00, 6 left
    vb.clock.set(T0 + 2 * MINUTE)
    await vb.on_ticks(tick(ltp=98_20, bid=98_15, ask=98_25, ts_ns=T0 + 2 * MINUTE))

    await vb.modify_order(vo.id, quantity=8)
    await asyncio.sleep(0)

    assert (vo.status, vo.filled, vo.cost_paise) == (t.ORDER_STATUS_TRADED, 8, 4 * 99_00 + 4 * 98_15)  # the bid


async def test_a_stop_limit_not_triggered_yet_changed_to_a_limit_through_the_market_still_waits_for_its_trigger(vb):
    vo = await place(vb, order(side=t.SIDE_SELL, kind=t.ORDER_TYPE_STOP_LIMIT, price=98_90, trigger=99_00))
    await vb.on_ticks(tick(ltp=100_00, bid=99_95, ask=100_05, ts_ns=T0 + 5 * NS))
    vb.clock.advance(6)

    await vb.modify_order(vo.id, price_paise=99_00)  # below the bid, but the trigger has not traded
    await asyncio.sleep(0)

    assert (vo.status, vo.filled) == (t.ORDER_STATUS_TRIGGER_PENDING, 0)
