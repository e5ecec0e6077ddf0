"""Start-up reconciliation against Kotak (services/oms/reconcile.py) over the real SDK and the simulator: an order
written ahead just before a crash is looked up again before it is given up, and working orders at Kotak that the
ledger does not hold are reported at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.oms.broker import BrokerAck
from services.simulator.server import Simulator
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as T
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RunningOms, settings_for
from tests.kotak.test_broker import limit_buy

TAG = "sig-00000000000000bb"
RUNNING_PATH_WORDS = "not re-sent: check the broker's order book before placing it again"


@asynccontextmanager
async def elsewhere(sim: Simulator) -> AsyncIterator[KotakBroker]:
    """Another session on the account: Kotak's app, another NeoPulse, or the crashed process's order arriving."""
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def written_ahead_before_the_crash(running: RunningOms, tag: str) -> None:
    """The ledger's row of an order written ahead (PENDING_NEW) whose placement the crash interrupted."""
    await running.oms.ledger.insert_new(T.OrderUpdate(
        internal_id="i-1", client_order_id=tag, request=limit_buy(tag, 120_000), status=T.ORDER_STATUS_PENDING_NEW,
        sequence=1, ts_ns=NOW_NS), {})


def statuses(running: RunningOms, tag: str) -> list[str]:
    return [T.OrderStatus.Name(u.status) for u in running.updates if u.client_order_id == tag]


async def test_an_order_kotak_lists_only_after_the_restarts_read_is_adopted_not_given_up(sim):
    running = RunningOms(sim, lookup_backoff_s=0.2)
    await written_ahead_before_the_crash(running, TAG)
    async with elsewhere(sim) as kotak, running:
        await kotak.place_order(limit_buy(TAG, 120_000))  # Kotak lists it only after the start-up read

        await eventually(lambda: "ORDER_STATUS_OPEN" in statuses(running, TAG))

    assert statuses(running, TAG) == ["ORDER_STATUS_SUBMITTED", "ORDER_STATUS_OPEN"]


async def test_an_order_kotak_never_lists_is_given_up_after_the_lookups_and_not_placed_again(sim):
    running = RunningOms(sim, lookup_backoff_s=0.02)
    await written_ahead_before_the_crash(running, TAG)
    async with running:
        await eventually(lambda: "ORDER_STATUS_REJECTED" in statuses(running, TAG))

    given_up = running.latest(TAG)
    assert given_up is not None
    assert (given_up.reason_code, given_up.reason.endswith(RUNNING_PATH_WORDS), sim.calls["place_order"]) == (
        "OUTCOME_UNKNOWN", True, 0)


async def placed_elsewhere(sim: Simulator, tag: str) -> BrokerAck:
    async with elsewhere(sim) as kotak:
        return await kotak.place_order(limit_buy(tag, 120_000))  # below the market: it rests


async def notes_at_start(sim: Simulator, running: RunningOms | None = None) -> list[ops_pb2.Notification]:
    running = running or RunningOms(sim)
    async with running:
        await eventually(lambda: running.notes, within=2.0)
    return [n for n in running.notes if n.title == "Working orders at Kotak unknown to NeoPulse"]


async def test_a_working_order_with_a_neopulse_tag_the_ledger_does_not_hold_is_a_critical_alert_naming_it(sim):
    ack = await placed_elsewhere(sim, "sig-0123456789abcdef")

    (note,) = await notes_at_start(sim)

    assert (note.severity, ack.exchange_order_id in note.text) == (ops_pb2.SEVERITY_CRITICAL, True)


async def test_a_working_order_placed_in_kotaks_app_is_a_warning_naming_it(sim):
    ack = await placed_elsewhere(sim, "from-the-kotak-app")

    (note,) = await notes_at_start(sim)

    assert (note.severity, ack.exchange_order_id in note.text) == (ops_pb2.SEVERITY_WARNING, True)


async def test_only_working_orders_no_ledger_order_matches_are_named(sim):
    known = await placed_elsewhere(sim, "known-to-the-ledger")
    ended = await placed_elsewhere(sim, "cancelled-in-the-app")
    async with elsewhere(sim) as kotak:
        await kotak.cancel_order(ended.exchange_order_id)
    unknown = await placed_elsewhere(sim, "resting-in-the-app")
    running = RunningOms(sim)
    await running.oms.ledger.insert_new(T.OrderUpdate(
        internal_id="i-1", client_order_id="known-to-the-ledger", request=limit_buy("known-to-the-ledger", 120_000),
        status=T.ORDER_STATUS_OPEN, exchange_order_id=known.exchange_order_id, sequence=1, ts_ns=NOW_NS), {})

    (note,) = await notes_at_start(sim, running)

    named = [ack.exchange_order_id in note.text for ack in (known, ended, unknown)]
    assert (named, note.fields["orders"]) == ([False, False, True], "1")
