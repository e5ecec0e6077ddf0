"""An MIS position the square-off could not close before its segment's close: no more square-offs that day (each
would be refused MARKET_CLOSED, and told to Telegram, every square_off_retry_s until midnight), one CRITICAL alert."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.engine import RiskEngine
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.risk.factories import DAY, RELIANCE, fill, instruments, limits

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
REFUSED_BY_KOTAK = "RMS:Margin Exceeds"


def holding(clock: ManualClock, **overrides: object) -> RiskEngine:
    """Long 10 RELIANCE MIS, bought at Rs 1,290."""
    engine = RiskEngine(limits(**overrides), clock, instruments())
    engine.on_order_update(fill(BUY, 10, 1290_00))
    return engine


def refused_square_off(engine: RiskEngine, clock: ManualClock, at: int) -> None:
    """At `at`, the square-off goes out and the broker refuses it."""
    clock.set(at)
    [sq] = engine.square_off_due()
    assert engine.decide(sq).accepted
    engine.on_order_update(trading_pb2.OrderUpdate(client_order_id=sq.client_order_id, request=sq,
                                                   status=trading_pb2.ORDER_STATUS_REJECTED, reason=REFUSED_BY_KOTAK))


def looks_until(engine: RiskEngine, clock: ManualClock, passes: int) -> list[trading_pb2.OrderRequest]:
    """What risk's timer gets from square_off_due over `passes` retry intervals of 30 s."""
    orders = []
    for _ in range(passes):
        clock.advance(30)
        orders += engine.square_off_due()
    return orders


def test_after_the_close_an_mis_position_left_open_gets_no_more_square_off_orders(clock):
    engine = holding(clock)
    refused_square_off(engine, clock, ist_ns(DAY, 15, 29, 40))
    clock.set(ist_ns(DAY, 15, 30))

    orders = looks_until(engine, clock, 120)

    assert orders == []


def test_an_mis_position_left_open_after_the_close_is_told_once_with_why_its_square_off_failed(clock):
    engine = holding(clock)
    refused_square_off(engine, clock, ist_ns(DAY, 15, 29, 40))
    clock.set(ist_ns(DAY, 15, 30))
    looks_until(engine, clock, 120)

    alerts = engine.left_open.pop()

    assert [(a.severity, a.fields["symbol"], a.fields["quantity"], a.fields["product"], a.fields["why"])
            for a in alerts] == [(ops_pb2.SEVERITY_CRITICAL, "RELIANCE-EQ", "10", "MIS", REFUSED_BY_KOTAK)]


def test_a_square_off_filled_just_before_the_close_and_reported_after_it_raises_no_alert(clock):
    engine = holding(clock)
    clock.set(ist_ns(DAY, 15, 29, 30))
    [sq] = engine.square_off_due()
    assert engine.decide(sq).accepted
    clock.set(ist_ns(DAY, 15, 30, 0))
    engine.square_off_due()  # the first look after the close: the order may have filled; its report is on its way
    engine.on_order_update(fill(SELL, 10, 1288_00, client_order_id=sq.client_order_id))

    looks_until(engine, clock, 2)

    assert engine.left_open.pop() == []


def test_a_square_off_still_working_at_the_next_look_after_the_close_is_told_as_not_done(clock):
    engine = holding(clock)
    clock.set(ist_ns(DAY, 15, 29, 30))
    [sq] = engine.square_off_due()
    assert engine.decide(sq).accepted
    clock.set(ist_ns(DAY, 15, 30, 0))
    engine.square_off_due()

    looks_until(engine, clock, 1)

    assert [a.fields["why"] for a in engine.left_open.pop()] == [f"order(s) {sq.client_order_id} still working "
                                                                 "at the close"]


def test_a_loss_halt_before_the_open_squares_off_when_the_segment_opens_not_into_refusals(clock):
    clock.set(ist_ns(DAY, 9, 5))  # MCX trades from 09:00, NSE from 09:15
    engine = holding(clock, daily_loss_reducing_paise=100_00, daily_loss_halt_paise=200_00)
    engine.on_ticks([market_pb2.Tick(token=RELIANCE, ltp_paise=1200_00, ts_ns=clock.now_ns())])
    engine.evaluate_loss()  # a loss of Rs 900: HALTED, its MIS positions close now
    before_the_open = engine.square_off_due()

    clock.set(ist_ns(DAY, 9, 15))
    at_the_open = [(d.accepted, d.order.side, d.order.quantity) for d in map(engine.decide, engine.square_off_due())]

    assert (before_the_open, at_the_open) == ([], [(True, SELL, 10)])


def test_with_market_hours_not_enforced_the_square_off_goes_on_after_the_close(clock):
    """Paper trading out of hours on purpose: the paper broker works an order placed while its segment is closed."""
    engine = holding(clock, enforce_market_hours=False)
    refused_square_off(engine, clock, ist_ns(DAY, 15, 15))
    clock.set(ist_ns(DAY, 15, 45))

    retries = [(d.accepted, d.order.quantity) for d in map(engine.decide, engine.square_off_due())]

    assert (retries, engine.left_open.pop()) == ([(True, 10)], [])


def test_a_new_day_squares_off_a_position_left_open_again_and_tells_again_if_it_fails(clock):
    engine = holding(clock)
    refused_square_off(engine, clock, ist_ns(DAY, 15, 15))
    clock.set(ist_ns(DAY, 15, 31))
    looks_until(engine, clock, 2)
    assert len(engine.left_open.pop()) == 1

    refused_square_off(engine, clock, ist_ns(DAY + timedelta(days=1), 15, 15))
    clock.set(ist_ns(DAY + timedelta(days=1), 15, 31))
    looks_until(engine, clock, 2)

    assert [a.fields["why"] for a in engine.left_open.pop()] == [REFUSED_BY_KOTAK]


def tick_at(ts_ns: int, ltp_paise: int) -> market_pb2.TickBatch:
    return market_pb2.TickBatch(ticks=[market_pb2.Tick(token=RELIANCE, exchange_segment="nse_cm", ts_ns=ts_ns,
                                                       ltp_paise=ltp_paise)])


async def test_a_paper_square_off_expired_at_the_close_is_told_with_its_expiry(clock):
    """The feed stalls at 15:14:50, so the paper MARKET square-off waits; the feed comes back only at 15:31, and its
    first tick expires the order: the alert says so."""
    vb = VirtualBroker(None, ChargeModel.default(), clock)
    engine = holding(clock)
    await vb.on_ticks(tick_at(ist_ns(DAY, 15, 14, 50), 1290_00))
    clock.set(ist_ns(DAY, 15, 15, 10))
    [sq] = engine.square_off_due()
    ack = await vb.place_order(engine.decide(sq).order)
    clock.set(ist_ns(DAY, 15, 31))
    await vb.on_ticks(tick_at(clock.now_ns(), 1280_00))
    expired = vb.book[ack.exchange_order_id]
    engine.on_order_update(trading_pb2.OrderUpdate(client_order_id=sq.client_order_id, request=sq,
                                                   status=expired.status, reason=expired.reason))

    looks_until(engine, clock, 1)

    [alert] = engine.left_open.pop()
    assert alert.fields["why"].startswith("DAY order expired") and "nse_cm closed at 15:30 IST" in alert.text


# -- the module: the alert published once, no refused square-offs ---------------------------------------------
@pytest.fixture
async def module(clock: ManualClock) -> AsyncIterator[tuple[RiskModule, list[trading_pb2.RiskDecision],
                                                            list[ops_pb2.Notification]]]:
    """A started RiskModule on a real Bus whose timer the test drives (tick_timer), with what it publishes."""
    bus = Bus()

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    decisions: list[trading_pb2.RiskDecision] = []
    notes: list[ops_pb2.Notification] = []

    async def on_decision(decision: trading_pb2.RiskDecision) -> None:
        decisions.append(decision)

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.subscribe(Topic.ORDERS, "test", on_decision)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    risk = RiskModule(bus, load(RiskSettings, {}), clock)
    await risk.start()
    running = asyncio.create_task(bus.run())
    yield risk, decisions, notes
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_the_module_tells_the_trader_once_and_sends_no_square_off_after_the_close(module, clock):
    risk, decisions, notes = module
    await risk.bus.publish(Topic.ORDER_UPDATES, fill(BUY, 10, 1290_00))
    await eventually(lambda: risk.engine.positions.net_quantity(RELIANCE) == 10)
    clock.set(ist_ns(DAY, 15, 29, 40))
    await risk.tick_timer()
    await eventually(lambda: len(decisions) == 1)
    sq = decisions[0].order
    await risk.bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(
        client_order_id=sq.client_order_id, request=sq, status=trading_pb2.ORDER_STATUS_REJECTED,
        reason=REFUSED_BY_KOTAK))
    await eventually(lambda: not risk.engine.open_orders)
    clock.set(ist_ns(DAY, 15, 30))

    for _ in range(120):  # an hour of the timer's looks
        clock.advance(30)
        await risk.tick_timer()
    await risk.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title="end"))  # after all the module's
    await eventually(lambda: notes and notes[-1].title == "end")

    assert ([d.accepted for d in decisions], [(n.severity, n.fields["why"]) for n in notes[:-1]]) == (
        [True], [(ops_pb2.SEVERITY_CRITICAL, REFUSED_BY_KOTAK)])
