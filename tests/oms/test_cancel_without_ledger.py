"""Cancels with the ledger down: a cancel, and so the kill switch, reaches the broker even when the ledger refuses
its CANCEL_PENDING; the order stays as recorded until the broker's answer or events are, and nothing is lost."""

import asyncio
import json

import pytest

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, ops_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import NotSent
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, order
from tests.oms.test_ledger_failures import DroppedConnection, Outage, start_failing

OPEN, CANCELLED = t.ORDER_STATUS_OPEN, t.ORDER_STATUS_CANCELLED


def nothing(update: t.OrderUpdate) -> bool:
    return False


def everything(update: t.OrderUpdate) -> bool:
    return True


async def working(start_oms, ledger, *tags: str, **kwargs):
    """An OMS over `ledger` with a resting limit buy per tag, each OPEN (recorded) at the broker."""
    oms = await start_failing(start_oms, ledger, **kwargs)
    for tag in tags:
        await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id=tag, price=100_00)))
    for tag in tags:
        await oms.until_status(tag, OPEN)
    return oms


async def recorded(db_pool) -> list[tuple[str, dict]]:
    rows = await db_pool.fetch("SELECT status, payload FROM order_events ORDER BY event_id")
    return [(r["status"], json.loads(r["payload"])["audit"]) for r in rows]


async def test_a_cancel_reaches_the_broker_while_the_ledger_refuses_its_cancel_pending(start_oms, db_pool):
    ledger = Outage(db_pool, nothing)
    oms = await working(start_oms, ledger, "c-1")
    ledger.down = everything

    answered = await oms.module.engine.cancel("c-1")
    again = await oms.module.engine.cancel("c-1")  # asked already: not sent twice (the broker would refuse it)

    assert (await oms.broker.find_by_tag("c-1")).status == CANCELLED
    assert answered.status == again.status == OPEN  # as recorded until the ledger takes the broker's news
    assert (await oms.ledger.get("c-1")).status == OPEN


async def test_a_cancel_sent_without_its_cancel_pending_says_so_to_the_trader_once(start_oms, db_pool):
    ledger = Outage(db_pool, nothing)
    oms = await working(start_oms, ledger, "c-1")
    ledger.down = everything

    await oms.module.engine.cancel("c-1")
    await oms.module.engine.cancel("c-1")  # asked already: nothing sent, nothing said again
    await until(lambda: oms.notifications)
    await asyncio.sleep(0.05)

    [note] = [n for n in oms.notifications if n.title.startswith("Cancel")]  # beside "Order updates not recorded"
    assert (note.severity, note.title, note.fields["client_order_id"]) == (
        ops_pb2.SEVERITY_WARNING, "Cancel sent, not recorded", "c-1")
    assert "the cancel went to the broker, but the ledger did not record it (cancel sent while the ledger refused " \
           "CANCEL_PENDING" in note.text and "shows OPEN until" in note.text


async def test_a_cancel_sent_without_its_cancel_pending_is_recorded_from_the_brokers_event_once_the_ledger_is_back(
        start_oms, db_pool):
    ledger = Outage(db_pool, nothing)
    oms = await working(start_oms, ledger, "c-1")
    ledger.down = everything
    await oms.module.engine.cancel("c-1")

    ledger.down = nothing
    await oms.until_status("c-1", CANCELLED)

    events = await recorded(db_pool)
    assert [status for status, _ in events] == ["PENDING_NEW", "SUBMITTED", "OPEN", "CANCELLED"]
    assert "ledger refused CANCEL_PENDING" in events[-1][1]["cancel_sent_unrecorded"]
    assert oms.module.engine.lookup("c-1").status == CANCELLED


@pytest.mark.parametrize(("committed", "statuses"), [
    (True, ["CANCEL_PENDING", "CANCELLED"]), (False, ["CANCELLED"])], ids=["committed", "not-committed"])
async def test_a_cancel_whose_cancel_pending_lost_its_reply_and_read_back_is_sent_at_once(
        start_oms, db_pool, committed, statuses):
    ledger = DroppedConnection(db_pool, committed, when=lambda u: u.status == t.ORDER_STATUS_CANCEL_PENDING)
    oms = await working(start_oms, ledger, "c-1")

    cancelled = await oms.module.engine.cancel("c-1")  # its CANCELLED write settles the CANCEL_PENDING first

    assert cancelled.status == CANCELLED
    assert (await oms.broker.find_by_tag("c-1")).status == CANCELLED
    assert [status for status, _ in await recorded(db_pool)] == ["PENDING_NEW", "SUBMITTED", "OPEN", *statuses]


async def test_a_cancel_whose_cancelled_the_ledger_refuses_answers_cancel_pending_and_the_brokers_event_ends_it(
        start_oms, db_pool):
    ledger = Outage(db_pool, lambda u: u.status == CANCELLED)
    oms = await working(start_oms, ledger, "c-1")

    answered = await oms.module.engine.cancel("c-1")
    ledger.down = nothing
    await oms.until_status("c-1", CANCELLED)

    assert answered.status == t.ORDER_STATUS_CANCEL_PENDING
    assert [status for status, _ in await recorded(db_pool)] == [
        "PENDING_NEW", "SUBMITTED", "OPEN", "CANCEL_PENDING", "CANCELLED"]


async def test_a_cancel_sent_before_the_orders_acknowledgement_was_recorded_is_recorded_after_it(start_oms, db_pool):
    ledger = Outage(db_pool, lambda u: u.status != t.ORDER_STATUS_SUBMITTED)  # the acknowledgement's OPEN too
    oms = await start_failing(start_oms, ledger)
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00)))
    await until(lambda: oms.notifications)  # the broker has it; the ledger refuses its OPEN
    await oms.module.engine.cancel("c-1")

    ledger.down = nothing
    await oms.until_status("c-1", CANCELLED)

    events = await recorded(db_pool)
    assert [status for status, _ in events] == ["PENDING_NEW", "SUBMITTED", "OPEN", "CANCELLED"]
    assert "acknowledgement was recorded" in events[2][1]["cancel_sent_unrecorded"]


class NotSentOnce(VirtualBroker):
    """A broker whose first cancel is not sent (Kotak: the re-login failed)."""

    cancels = 0

    async def cancel_order(self, exchange_order_id: str):
        self.cancels += 1
        if self.cancels == 1:
            raise NotSent("cancel not sent: the session's re-login failed")
        return await super().cancel_order(exchange_order_id)


async def test_a_cancel_not_sent_whose_undo_the_ledger_refuses_is_sent_when_asked_again(start_oms, db_pool):
    undo = Outage(db_pool, lambda u: u.previous_status == t.ORDER_STATUS_CANCEL_PENDING and u.status == OPEN)
    broker = NotSentOnce(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await working(start_oms, undo, "c-1", broker=broker)
    with pytest.raises(NotSent):
        await oms.module.engine.cancel("c-1")  # CANCEL_PENDING recorded, then not sent, and not undone
    assert (await oms.broker.find_by_tag("c-1")).status == OPEN

    answered = await oms.module.engine.cancel("c-1")  # not "asked already": nobody holds that cancel

    assert (broker.cancels, answered.status) == (2, CANCELLED)
    assert (await oms.broker.find_by_tag("c-1")).status == CANCELLED


async def test_the_kill_switch_cancels_every_working_order_while_the_ledger_is_down(start_oms, db_pool):
    ledger = Outage(db_pool, nothing)
    oms = await working(start_oms, ledger, "c-1", "c-2", risk=False)

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    oms.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    risk = RiskModule(oms.bus, load(RiskSettings, {}, cancel_retry_backoff_ms=5, cancel_retry_window_ms=300),
                      oms.clock)
    await risk.start()
    ledger.down = everything

    await risk.set_kill_switch(risk_pb2.SetKillSwitchRequest(engaged=True, reason="test", cancel_open_orders=True))

    for tag in ("c-1", "c-2"):
        assert (await oms.broker.find_by_tag(tag)).status == CANCELLED
    ledger.down = nothing
    await until(lambda: not risk.engine.open_orders)  # the broker's events recorded, and so risk hears of them
    assert [oms.module.engine.lookup(tag).status for tag in ("c-1", "c-2")] == [CANCELLED, CANCELLED]


class CancelHangsOnce(VirtualBroker):
    """A broker whose first cancel call never answers: the caller gives up on it (a gRPC deadline, a timeout)."""

    cancels = 0

    async def cancel_order(self, exchange_order_id: str):
        self.cancels += 1
        if self.cancels == 1:
            await asyncio.Event().wait()
        return await super().cancel_order(exchange_order_id)


@pytest.mark.parametrize("ledger_down", [False, True], ids=["cancel-pending-recorded", "ledger-refusing"])
async def test_a_cancel_whose_caller_gave_up_during_the_broker_call_is_sent_when_asked_again(
        start_oms, db_pool, ledger_down):
    ledger = Outage(db_pool, nothing)
    broker = CancelHangsOnce(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await working(start_oms, ledger, "c-1", broker=broker)
    if ledger_down:
        ledger.down = lambda u: u.status == t.ORDER_STATUS_CANCEL_PENDING
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await oms.module.engine.cancel("c-1")

    again = await oms.module.engine.cancel("c-1")  # not "asked already": the broker may never have had it

    assert broker.cancels == 2
    assert (await oms.broker.find_by_tag("c-1")).status == CANCELLED
    assert again.status == CANCELLED
