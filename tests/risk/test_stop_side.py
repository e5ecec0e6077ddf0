"""Stops on the wrong side of the market, refused by risk as Kotak/NSE refuse them: a stop-limit whose limit is short of
its trigger, and a stop whose trigger today's last price has already passed (new orders and changes alike).

Pure RiskEngine on a ManualClock (a Wednesday, 10:00 IST), but for how the refusals reach a SubmitOrder caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.risk.config import RiskSettings
from services.risk.engine import RiskEngine
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput, RiskRejected
from shared.marketdata import nse_instruments
from tests.risk.factories import RELIANCE, fill, holding, instruments, limits, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
STOP_MARKET, STOP_LIMIT = trading_pb2.ORDER_TYPE_STOP_MARKET, trading_pb2.ORDER_TYPE_STOP_LIMIT
DAY_NS = int(timedelta(days=1).total_seconds() * 1e9)


def traded(engine: RiskEngine, price_paise: int, ts_ns: int) -> RiskEngine:
    """The engine after RELIANCE traded at `price_paise` at `ts_ns` (the tick's exchange time)."""
    engine.on_ticks([market_pb2.Tick(token=RELIANCE, ltp_paise=price_paise, ts_ns=ts_ns)])
    return engine


def stop(side: int, trigger: int, limit: int = 0, quantity: int = 10) -> trading_pb2.OrderRequest:
    """A stop on RELIANCE: SL-M without `limit`, SL with it."""
    return order(side=side, quantity=quantity, order_type=STOP_LIMIT if limit else STOP_MARKET, price_paise=limit,
                 trigger_price_paise=trigger)


def test_a_sell_stop_triggering_above_todays_last_price_is_refused_saying_what_to_do(clock):
    engine = traded(holding(clock, fill(BUY, 10, 1290_00)), 1290_00, clock.now_ns())

    decision = engine.decide(stop(SELL, 1291_00))

    assert (decision.accepted, decision.reason_code, decision.reason) == (False, "INVALID_TRIGGER", (
        "trigger ₹1,291.00 is at or above the last price ₹1,290.00: a sell stop must trigger below the market (the "
        "exchange refuses it); to sell now send a MARKET or LIMIT order, or set the trigger below ₹1,290.00"))


def test_a_buy_stop_triggering_at_todays_last_price_is_refused(clock):
    engine = traded(holding(clock), 1290_00, clock.now_ns())

    decision = engine.decide(stop(BUY, 1290_00, 1291_00))

    assert (decision.reason_code, decision.reason) == ("INVALID_TRIGGER", (
        "trigger ₹1,290.00 is at or below the last price ₹1,290.00: a buy stop must trigger above the market (the "
        "exchange refuses it); to buy now send a MARKET or LIMIT order, or set the trigger above ₹1,290.00"))


@pytest.mark.parametrize(("side", "trigger", "limit"), [(BUY, 1300_00, 1299_95), (SELL, 1280_00, 1280_05)])
def test_a_stop_limit_whose_limit_is_short_of_its_trigger_is_refused_with_no_price_known(clock, side, trigger, limit):
    engine = RiskEngine(limits(), clock, instruments())  # no last price at all

    decision = engine.decide(stop(side, trigger, limit))

    assert decision.reason_code == "INVALID_PRICE"


def test_a_stop_limit_buy_under_its_trigger_says_which_way_the_limit_must_go(clock):
    engine = holding(clock)

    decision = engine.decide(stop(BUY, 1300_00, 1299_95))

    assert decision.reason == (
        "limit price ₹1,299.95 is below the trigger ₹1,300.00: a buy stop-limit (SL) needs its limit at or above its "
        "trigger, or once triggered it rests behind the market; set the limit at or above ₹1,300.00, or send a "
        "STOP_MARKET (SL-M) order")


def test_stops_waiting_on_the_far_side_of_todays_last_price_are_accepted(clock):
    engine = traded(holding(clock, fill(BUY, 10, 1290_00)), 1290_00, clock.now_ns())

    decisions = [engine.decide(stop(SELL, 1289_95, 1289_00)), engine.decide(stop(BUY, 1290_05, 1291_00))]

    assert [d.reason_code for d in decisions] == ["", ""]


def test_a_protective_stop_far_under_todays_last_price_still_passes_the_price_band(clock):
    """The side rule leaves the band's exception alone: a waiting stop's distance is the trader's risk to take."""
    engine = traded(holding(clock, fill(BUY, 100, 1290_00)), 1290_00, clock.now_ns())

    decision = engine.decide(stop(SELL, 1100_00, quantity=100))  # 15% under, band 500 bps

    assert decision.accepted


def test_yesterdays_last_price_does_not_judge_a_stops_trigger(clock):
    """Before today's first trade the feed's last price is yesterday's: the market may open anywhere after a gap."""
    engine = traded(holding(clock, fill(BUY, 10, 1290_00)), 1290_00, clock.now_ns() - DAY_NS)

    decision = engine.decide(stop(SELL, 1291_00))

    assert decision.accepted


def test_a_change_moving_a_stops_trigger_through_todays_last_price_is_refused(clock):
    engine = traded(holding(clock, fill(BUY, 10, 1290_00)), 1290_00, clock.now_ns())
    working = stop(SELL, 1280_00)
    assert engine.decide(working).accepted
    moved = trading_pb2.OrderRequest()
    moved.CopyFrom(working)
    moved.trigger_price_paise = 1295_00

    decision = engine.decide_modify(moved, 0)

    assert (decision.accepted, decision.reason_code) == (False, "INVALID_TRIGGER")


def test_a_change_leaving_a_passed_trigger_where_it_was_may_chase_the_limit(clock):
    """A stop-limit the market ran through has triggered and rests at its limit: moving the limit to get out is
    what the trader needs, and its trigger, unchanged, is not judged again."""
    engine = traded(holding(clock, fill(BUY, 10, 1290_00)), 1290_00, clock.now_ns())
    working = stop(SELL, 1280_00, 1279_00)
    assert engine.decide(working).accepted
    traded(engine, 1270_00, clock.now_ns())
    chased = trading_pb2.OrderRequest()
    chased.CopyFrom(working)
    chased.price_paise = 1265_00

    decision = engine.decide_modify(chased, 0)

    assert decision.accepted


def test_a_change_putting_a_stop_limits_limit_past_its_trigger_is_refused(clock):
    engine = holding(clock, fill(BUY, 10, 1290_00))
    working = stop(SELL, 1280_00, 1279_00)
    assert engine.decide(working).accepted
    changed = trading_pb2.OrderRequest()
    changed.CopyFrom(working)
    changed.price_paise = 1281_00

    assert engine.decide_modify(changed, 0).reason_code == "INVALID_PRICE"


@pytest.fixture
async def module(clock: ManualClock) -> AsyncIterator[RiskModule]:
    """A RiskModule on a real Bus, the instruments ingestion lists, RELIANCE traded at ₹1,290 today."""
    bus = Bus()

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    risk = RiskModule(bus, load(RiskSettings, {}), clock)
    await risk.start()
    traded(risk.engine, 1290_00, clock.now_ns())
    task = asyncio.create_task(bus.run())
    yield risk
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_manual_stop_limit_short_of_its_trigger_is_invalid_input_naming_its_price(module):
    with pytest.raises(InvalidInput) as err:
        await module.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=stop(BUY, 1300_00, 1299_95)))

    assert err.value.field == "order.price_paise"


async def test_a_manual_stop_through_the_market_is_refused_as_invalid_trigger(module):
    with pytest.raises(RiskRejected) as err:
        await module.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=stop(SELL, 1291_00)))

    assert err.value.reason_code == "INVALID_TRIGGER"
