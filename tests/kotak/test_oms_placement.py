"""The OMS over the real SDK and the simulator: a burst of orders goes out together, not one round trip each."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import NotSent
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RunningOms, settings_for
from tests.kotak.test_broker import limit_buy, market_buy
from tests.kotak.test_review_session import change_mpin

ACKNOWLEDGED = {T.ORDER_STATUS_OPEN, T.ORDER_STATUS_PARTIALLY_FILLED, T.ORDER_STATUS_TRADED}


async def test_an_order_is_placed_while_the_one_before_it_still_waits_for_kotak_and_neither_twice(sim):
    broker = KotakBroker(settings_for(sim, request_timeout_s=5.0))
    await broker.start()
    bus, latest = Bus(), {}
    oms = OmsModule(bus, OmsSettings(poll_interval_s=0), broker, MemoryLedger(), ManualClock(NOW_NS))

    async def collect(update: T.OrderUpdate) -> None:
        latest[update.client_order_id] = update.status

    bus.subscribe(Topic.ORDER_UPDATES, "test", collect)
    bus_task = asyncio.create_task(bus.run())
    await oms.start()
    sim.delay_next("place_order", 2.0)  # Kotak takes the first order, then answers it late
    try:
        for coid in ("slow-first", "second"):
            await bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=market_buy(coid), signal_id=coid))

        await eventually(lambda: latest.get("second") in ACKNOWLEDGED)
        assert latest["slow-first"] == T.ORDER_STATUS_PENDING_NEW  # still waiting for its reply

        await eventually(lambda: latest.get("slow-first") in ACKNOWLEDGED)
        assert sim.calls["place_order"] == 2
        assert sorted(o.tag for o in sim.exchange.orders.values()) == ["second", "slow-first"]
    finally:
        assert await bus.drain()
        await oms.stop()
        bus_task.cancel()
        await asyncio.gather(bus_task, return_exceptions=True)
        await broker.stop()


async def test_a_kotak_fill_carries_the_charges_the_configured_rates_give(sim):
    """Kotak reports no charges per fill (they come on the contract note after the day): without an estimate
    the live P&L, and the daily loss limit with it, would leave out STT, exchange charges, stamp duty and GST."""
    order = market_buy("coid-charges")
    async with RunningOms(sim) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=order, signal_id="coid-charges"))

        await eventually(lambda: sum(u.last_fill_quantity for u in running.updates) == order.quantity)

    fills = [u for u in running.updates if u.last_fill_quantity]
    model = ChargeModel.from_settings(running.oms.settings)
    expected = sum(model.for_fill(order, u.last_fill_quantity, u.last_fill_price_paise).total for u in fills)
    assert expected > 0 and sum(u.last_fill_charges_paise for u in fills) == expected
    assert running.oms.engine.positions.charges_paise() == expected


async def test_an_order_gone_stale_while_kotak_renewed_the_session_ends_not_sent_and_is_not_looked_up(sim, caplog):
    """Refused for an expired session, then older than max_decision_age_s once the session is renewed: the OMS
    records it REJECTED NOT_SENT at once, never SUBMITTED, never sent again and never searched for by its tag."""
    order = market_buy("coid-stale")
    order.tick_recv_ns = time.time_ns()
    async with RunningOms(sim, max_decision_age_s=1.0) as running:
        sim.expire_session()
        sim.delay_next("totp_validate", 1.2)
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=order, signal_id="coid-stale"))
        await eventually(lambda: [u.status for u in running.updates] == [T.ORDER_STATUS_PENDING_NEW,
                                                                         T.ORDER_STATUS_REJECTED])

    last = running.latest("coid-stale")
    assert last is not None and last.reason_code == "NOT_SENT" and "max_decision_age_s 1 s" in last.reason
    assert (sim.calls["place_order"], dict(sim.exchange.orders)) == (1, {})
    assert not [r.getMessage() for r in caplog.records if "outcome unknown" in r.getMessage()]


async def test_a_cancel_refused_for_an_expired_session_that_cannot_be_renewed_leaves_the_order_as_it_was(sim):
    """Kotak refused the cancel, so it certainly did not reach the exchange: the order is OPEN again (not left
    CANCEL_PENDING waiting for an answer that will never come) and the caller is told why."""
    async with RunningOms(sim) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=limit_buy("coid-keep", 120_000),
                                                               signal_id="coid-keep"))
        await eventually(lambda: (u := running.latest("coid-keep")) is not None and u.status == T.ORDER_STATUS_OPEN)
        change_mpin(sim, "111111")
        sim.expire_session()

        with pytest.raises(NotSent, match="cancel_order: not sent"):
            await running.oms.engine.cancel("coid-keep")

        await eventually(lambda: running.latest("coid-keep").status == T.ORDER_STATUS_OPEN)
        assert [o.status for o in sim.exchange.orders.values()] == ["open"]


async def test_a_position_the_book_does_not_know_raises_one_critical_alert_naming_it(sim):
    """Risk counts only the OMS's book: a position opened outside NeoPulse (the Kotak app) or carried from an
    earlier day across a restart is invisible to the position and loss limits, so the trader must hear of it."""
    async with RunningOms(sim, position_check_s=0.1) as running:
        outside = KotakBroker(settings_for(sim))
        await outside.start()
        try:
            await outside.place_order(market_buy("from-the-kotak-app"))
        finally:
            await outside.stop()

        await eventually(lambda: running.notes)
        await asyncio.sleep(0.5)  # later checks see the same difference: no second alert

    (note,) = running.notes
    assert (note.severity, note.source) == (ops_pb2.SEVERITY_CRITICAL, "oms")
    assert "RELIANCE-EQ MIS: Kotak +3, NeoPulse 0" in note.text


async def test_a_delivery_position_the_book_does_not_hold_raises_nothing(sim):
    """CNC moves from Kotak's positions to holdings with settlement, a day after the book carried it: compared,
    every delivery trade would page twice. Only intraday and carry-forward F&O positions are compared."""
    async with RunningOms(sim, position_check_s=0.1) as running:
        outside = KotakBroker(settings_for(sim))
        await outside.start()
        try:
            delivery = market_buy("a-delivery-buy")
            delivery.product = T.PRODUCT_CNC
            await outside.place_order(delivery)
        finally:
            await outside.stop()
        await eventually(lambda: any(r["prod"] == "CNC" for r in sim.exchange.positions()))
        await asyncio.sleep(0.5)

    assert running.notes == []


async def test_positions_from_orders_the_oms_placed_match_the_brokers_and_raise_nothing(sim):
    """Kotak's positions can count a fill before its order-feed message reaches the OMS (a CI host once took
    longer than two 0.1 s checks): a difference that goes away within `position_grace_s` is a fill in flight."""
    sim.order_feed_delay_s = 0.6
    async with RunningOms(sim, kotak={"poll_interval_s": 30.0}, position_check_s=0.1, position_grace_s=1.5) as running:
        await eventually(lambda: sim.calls["order_book"] == 1)  # the broker's first poll, then none: the feed tells
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=market_buy("ours"),
                                                               signal_id="ours"))
        await eventually(lambda: any(r["flBuyQty"] == "3" for r in sim.exchange.positions()))
        await eventually(lambda: running.oms.engine.positions.net_quantity(market_buy("ours").token) == 3)
        await asyncio.sleep(2.0)  # past the grace: a difference that stayed would have alerted

    assert running.notes == []
