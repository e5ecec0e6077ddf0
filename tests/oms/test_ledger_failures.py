"""The ledger failing under a running OMS (a dropped PostgreSQL connection): no broker news is lost, nothing is
recorded twice, and the OMS keeps running."""

import asyncio
import time
from collections.abc import Callable

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import Ledger, MemoryLedger
from services.oms.ledger_pg import PgLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Bus, Topic
from shared.clock import ManualClock, day_of
from shared.contracts import market_pb2, ops_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotSent, RetryableError
from tests.helpers import eventually as until
from tests.oms.conftest import accepted, running_on_new_day_book
from tests.oms.helpers import MINUTE, T0, candle, order
from tests.oms.test_cancel_races import CancelTimesOutOnce

FAST_RETRY_S = (0.05, 0.1)


class FailingLedger(MemoryLedger):
    """A MemoryLedger whose record() fails `failures` times for the updates `when` picks: before writing (the
    connection dropped), or after (`after_commit`: committed, the reply lost)."""

    def __init__(self, when: Callable[[t.OrderUpdate], bool], failures: int = 1, after_commit: bool = False) -> None:
        super().__init__()
        self.when, self.failures, self.after_commit = when, failures, after_commit

    async def record(self, update, audit):
        if self.failures and self.when(update):
            self.failures -= 1
            if self.after_commit:
                await super().record(update, audit)
            raise ConnectionResetError("connection to the database lost")
        await super().record(update, audit)


def fills(update: t.OrderUpdate) -> bool:
    return update.last_fill_quantity > 0


def candles(*batch: market_pb2.Candle) -> market_pb2.CandleBatch:
    return market_pb2.CandleBatch(candles=list(batch))


class DroppedConnection(PgLedger):
    """PostgreSQL whose connection drops during the first write `when` picks (a fill's), after it commits
    (`committed`) or before: that write raises, and so does the read-back of the order that follows it (the
    connection is still down); the ledger answers again after."""

    def __init__(self, pool, committed: bool, when: Callable[[t.OrderUpdate], bool] = fills) -> None:
        super().__init__(pool)
        self.committed, self.when, self.dropped, self.reads_to_fail = committed, when, False, 0

    async def record(self, update, audit):
        if not self.when(update) or self.dropped:
            await super().record(update, audit)
            return
        if self.committed:
            await super().record(update, audit)
        self.dropped, self.reads_to_fail = True, 1
        raise ConnectionResetError("connection to the database lost")

    async def get(self, order_id):
        if self.reads_to_fail:
            self.reads_to_fail -= 1
            raise ConnectionResetError("connection to the database lost")
        return await super().get(order_id)


async def start_failing(start_oms, ledger: Ledger, **kwargs):
    oms = await start_oms(ledger=ledger, **kwargs)
    oms.module.engine.ledger_retry_s = FAST_RETRY_S
    return oms


async def test_a_fill_the_ledger_fails_to_record_is_applied_again_until_it_is(start_oms):
    oms = await start_failing(start_oms, FailingLedger(fills, failures=3))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, candles(candle(101_00, 102_00, 99_00, 100_00)))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    assert (traded.filled_quantity, traded.last_fill_quantity) == (10, 10)
    assert (await oms.ledger.get("c-1")).status == t.ORDER_STATUS_TRADED
    assert [u.last_fill_quantity for u in oms.ledger.events if u.last_fill_quantity] == [10]
    assert oms.module.engine.positions.net_quantity(order().token) == 10
    await until(lambda: oms.notifications)
    assert [(n.severity, n.title) for n in oms.notifications] == [
        (ops_pb2.SEVERITY_CRITICAL, "Order updates not recorded")]


async def test_an_orders_later_fill_waits_for_the_earlier_one_the_ledger_failed_to_record(start_oms):
    oms = await start_failing(start_oms, FailingLedger(fills, failures=2))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, candles(candle(99_00, 99_50, 98_00, 99_00, volume=4)))
    await oms.bus.publish(Topic.CANDLES, candles(candle(98_00, 99_00, 97_00, 98_50, start_ns=T0 + 2 * MINUTE)))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    assert [(u.status, u.last_fill_quantity, u.last_fill_price_paise) for u in oms.of("c-1") if u.last_fill_quantity] \
        == [(t.ORDER_STATUS_PARTIALLY_FILLED, 4, 100_00), (t.ORDER_STATUS_TRADED, 6, 100_00)]  # at its limit


async def test_a_fill_whose_write_committed_but_lost_its_reply_is_recorded_once(start_oms):
    oms = await start_failing(start_oms, FailingLedger(fills, after_commit=True))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, candles(candle(101_00, 102_00, 99_00, 100_00)))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    recorded = [u for u in oms.ledger.events if u.last_fill_quantity]
    assert [(u.sequence, u.last_fill_quantity) for u in recorded] == [(traded.sequence, 10)]
    assert oms.module.engine.positions.net_quantity(order().token) == 10


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_fill_whose_write_and_read_back_both_lost_their_reply_is_recorded_once(start_oms, db_pool, committed):
    ledger = DroppedConnection(db_pool, committed)
    oms = await start_failing(start_oms, ledger)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, candles(candle(101_00, 102_00, 99_00, 100_00)))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    assert await oms.bus.drain()

    booked = await db_pool.fetch("SELECT fill_qty, fill_charges FROM order_events WHERE fill_qty > 0")
    assert [(r["fill_qty"], r["fill_charges"]) for r in booked] == [(10, traded.last_fill_charges_paise)]
    assert await ledger.fill_charges(day_of(T0)) == {traded.internal_id: traded.last_fill_charges_paise}
    assert [u.last_fill_quantity for u in oms.of("c-1") if u.last_fill_quantity] == [10]
    assert oms.module.engine.positions.net_quantity(order().token) == 10


async def test_an_acknowledgement_the_ledger_failed_to_record_is_recorded_again_before_the_orders_fill(start_oms):
    oms = await start_failing(start_oms, FailingLedger(lambda u: u.status == t.ORDER_STATUS_SUBMITTED, failures=2))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await until(lambda: oms.notifications)  # the broker has it; the OMS's book does not say so yet

    await oms.bus.publish(Topic.CANDLES, candles(candle(101_00, 102_00, 99_00, 100_00)))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    statuses = [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRADED]
    assert oms.statuses("c-1") == statuses
    assert [u.status for u in oms.ledger.events] == statuses


class Refuses(VirtualBroker):
    """A broker that refuses every order (its RMS: not enough funds), or (NotSent) never takes it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(None, ChargeModel.default(), ManualClock(T0 + 1))
        self.error = error

    async def place_order(self, order):
        raise self.error


@pytest.mark.parametrize(("error", "code", "statuses"), [
    (BrokerRejected("RMS: insufficient funds"), "BROKER_REJECTED",
     [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_REJECTED]),
    (NotSent("not sent: session expired and the login failed"), "NOT_SENT",
     [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_REJECTED])], ids=["refused", "not-sent"])
async def test_a_refusal_the_ledger_failed_to_record_is_recorded_again_not_left_open_all_day(
        start_oms, error, code, statuses):
    """The broker says no once: were its REJECTED dropped with the write that failed, the order would stay
    PENDING_NEW, counted open by risk and the OMS, and no cancel could end it."""
    failing = {t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_REJECTED}
    oms = await start_failing(start_oms, FailingLedger(lambda u: u.status in failing, failures=2),
                              broker=Refuses(error))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))

    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    assert (rejected.reason_code, rejected.reason) == (code, str(error))
    assert [u.status for u in oms.ledger.events] == statuses
    assert oms.module.engine.open_orders() == []


class NoAnswer(Refuses):
    """The place call times out and the broker's book never shows the tag: the outcome stays unknown."""

    async def find_by_tag(self, client_order_id):
        return None


async def test_an_unknown_outcome_whose_submitted_the_ledger_failed_to_record_is_still_looked_up(start_oms):
    oms = await start_failing(start_oms, FailingLedger(lambda u: u.status == t.ORDER_STATUS_SUBMITTED, failures=2),
                              broker=NoAnswer(TimeoutError("place_order timed out")))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))

    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)

    assert rejected.reason_code == "OUTCOME_UNKNOWN"
    assert [u.status for u in oms.ledger.events] == [
        t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_REJECTED]


class Outage(PgLedger):
    """PostgreSQL refusing the transitions `down` picks (the connection drops before the statement reaches it)."""

    def __init__(self, pool, down: Callable[[t.OrderUpdate], bool]) -> None:
        super().__init__(pool)
        self.down = down

    async def record(self, update, audit):
        if self.down(update):
            raise ConnectionResetError("connection to the database lost")
        await super().record(update, audit)


async def acknowledged_but_not_recorded(start_oms, ledger: Outage):
    """An order the broker took whose OPEN the ledger refused; its next attempt is a minute away."""
    oms = await start_oms(ledger=ledger)
    oms.module.engine.ledger_retry_s = (60.0, 60.0)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await until(lambda: oms.notifications)
    return oms


async def test_a_cancel_goes_ahead_while_the_orders_acknowledgement_waits_to_be_recorded_again(start_oms, db_pool):
    refused: list[t.OrderUpdate] = []
    oms = await acknowledged_but_not_recorded(start_oms, Outage(db_pool, lambda u: not refused and (
        u.status == t.ORDER_STATUS_OPEN and not refused.append(u))))  # the first OPEN only

    async with asyncio.timeout(5):  # not a minute: the back-off does not hold the order
        cancelled = await oms.module.engine.cancel("c-1")

    assert cancelled.status == t.ORDER_STATUS_CANCELLED
    await oms.until_status("c-1", t.ORDER_STATUS_CANCELLED)
    assert oms.statuses("c-1") == [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_OPEN,
                                   t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_CANCELLED]
    assert (await oms.ledger.get("c-1")).status == t.ORDER_STATUS_CANCELLED
    assert (await oms.broker.find_by_tag("c-1")).status == t.ORDER_STATUS_CANCELLED


async def test_a_cancel_while_the_ledger_still_refuses_the_acknowledgement_goes_at_once_by_its_exchange_id(
        start_oms, db_pool):
    down = Outage(db_pool, lambda u: u.status != t.ORDER_STATUS_SUBMITTED)  # OPEN and the cancel's writes
    oms = await acknowledged_but_not_recorded(start_oms, down)

    async with asyncio.timeout(5):  # not a minute: the back-off does not hold the order
        answered = await oms.module.engine.cancel("c-1")

    assert (await oms.broker.find_by_tag("c-1")).status == t.ORDER_STATUS_CANCELLED  # a cancel needs no ledger
    assert answered.status == t.ORDER_STATUS_SUBMITTED  # as recorded, until the ledger takes the acknowledgement
    assert (await oms.ledger.get("c-1")).status == t.ORDER_STATUS_SUBMITTED


async def test_a_cancel_whose_cancel_pending_turned_out_recorded_after_all_is_sent_again_if_it_got_no_answer(
        start_oms, db_pool):
    ledger = DroppedConnection(db_pool, committed=True, when=lambda u: u.status == t.ORDER_STATUS_CANCEL_PENDING)
    broker = CancelTimesOutOnce(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await start_failing(start_oms, ledger, broker=broker)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)
    with pytest.raises(RetryableError, match="no answer"):  # CANCEL_PENDING may or may not be in; the cancel went
        await oms.module.engine.cancel("c-1")
    assert (await oms.broker.find_by_tag("c-1")).status == t.ORDER_STATUS_OPEN

    cancelled = await oms.module.engine.cancel("c-1")  # CANCEL_PENDING was in, its cancel lost: sent again

    assert (broker.calls, cancelled.status) == (2, t.ORDER_STATUS_CANCELLED)
    assert (await oms.broker.find_by_tag("c-1")).status == t.ORDER_STATUS_CANCELLED
    events = await db_pool.fetch("SELECT status FROM order_events ORDER BY event_id")
    assert [e["status"] for e in events] == ["PENDING_NEW", "SUBMITTED", "OPEN", "CANCEL_PENDING", "CANCELLED"]


def cancels(update: t.OrderUpdate) -> bool:
    return update.status == t.ORDER_STATUS_CANCELLED


async def test_a_ledger_error_while_expiring_earlier_days_orders_is_retried_and_the_oms_keeps_running():
    ledger = FailingLedger(cancels)
    async with running_on_new_day_book(ledger) as (bus, clock, module, run):
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-yesterday", price=90_00)))
        await until(lambda: getattr(module.engine.lookup("c-yesterday"), "status", 0) == t.ORDER_STATUS_OPEN)
        clock.advance(24 * 3600)  # the next day: the first settle's CANCELLED write fails

        await until(lambda: module.engine.lookup("c-yesterday").status == t.ORDER_STATUS_CANCELLED)
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-today", price=100_00)))
        await until(lambda: getattr(module.engine.lookup("c-today"), "status", 0) == t.ORDER_STATUS_OPEN)
        await module.broker.process_candle(candle(99_00, 99_50, 98_00, 99_00, start_ns=clock.now_ns() + MINUTE))
        await until(lambda: module.engine.lookup("c-today").status == t.ORDER_STATUS_TRADED)  # events still applied
        running = not run.done()

    assert ledger.failures == 0 and running
    assert (await ledger.get("c-yesterday")).reason_code == "NOT_IN_BROKER_BOOK"


async def test_a_ledger_error_while_settling_restored_orders_at_start_is_retried_after_start():
    ledger = FailingLedger(cancels)
    await ledger.insert_new(t.OrderUpdate(internal_id="i-gone", client_order_id="c-gone", request=order(),
                                          status=t.ORDER_STATUS_PENDING_NEW, sequence=1), {})
    await ledger.record(t.OrderUpdate(internal_id="i-gone", client_order_id="c-gone", request=order(),
                                      status=t.ORDER_STATUS_OPEN, exchange_order_id="EX-1", sequence=2), {})
    bus, clock = Bus(), ManualClock(T0 + 1)
    module = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0),
                       VirtualBroker(None, ChargeModel.default(), clock), ledger, clock)
    module.settle_retry_s = (0.01, 0.02)
    tasks = [asyncio.create_task(bus.run())]
    try:
        await module.start()  # not in the broker's book: cancelled, but the ledger fails that write
        unsettled = module.reconciled["unsettled"]
        tasks.append(asyncio.create_task(module.run()))
        await until(lambda: module.reconciled["unsettled"] == 0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert unsettled == 1
    assert (await ledger.get("c-gone")).status == t.ORDER_STATUS_CANCELLED


def from_tick_aged(client_order_id: str, age_s: float) -> t.RiskDecision:
    decision = accepted(order(client_order_id=client_order_id, price=100_00))
    decision.order.tick_recv_ns = time.time_ns() - int(age_s * 1e9)
    return decision


async def test_a_ledger_error_recording_a_too_old_decision_does_not_stop_the_fresh_ones_of_its_burst(start_oms):
    oms = await start_oms(ledger=FailingLedger(lambda u: u.status == t.ORDER_STATUS_REJECTED),
                          settings=OmsSettings(max_decision_age_s=5, poll_interval_s=0, lookup_backoff_s=0))
    for decision in (from_tick_aged("old", 60), from_tick_aged("fresh-1", 0), from_tick_aged("fresh-2", 0)):
        await oms.bus.publish(Topic.ORDERS, decision)  # queued together: one burst

    for tag in ("fresh-1", "fresh-2"):
        await oms.until_status(tag, t.ORDER_STATUS_OPEN)
    assert await oms.bus.drain()

    assert (await oms.ledger.get("fresh-1")).status == t.ORDER_STATUS_OPEN
    assert oms.statuses("old") == [t.ORDER_STATUS_PENDING_NEW]  # never sent; left for reconciliation
    assert await oms.broker.find_by_tag("old") is None
