"""Start-up reconciliation when Kotak's book lacks an order the ledger has working today (services/oms/reconcile.py),
over the real SDK and the simulator. Kotak answers "No Data" now and then while orders work (kotak-neo-api issue
103): one such read must not book them gone; a second look (the book again, the order by its number) decides."""

from __future__ import annotations

import asyncio
import logging

from services.simulator.rest import NO_DATA
from shared.contracts import trading_pb2 as T
from tests.kotak.conftest import NOW_NS, RunningOms
from tests.kotak.test_broker import limit_buy
from tests.kotak.test_restart_review_reconcile import placed_elsewhere

NOT_AT_KOTAK = "251125099999999"  # an order number the simulator never gave


async def working_in_the_ledger(running: RunningOms, tag: str, exchange_order_id: str) -> None:
    """The ledger's row of an order working at Kotak when NeoPulse stopped."""
    u = T.OrderUpdate(internal_id=f"i-{tag}", client_order_id=tag, request=limit_buy(tag, 120_000),
                      status=T.ORDER_STATUS_PENDING_NEW, sequence=1, ts_ns=NOW_NS)
    await running.oms.ledger.insert_new(u, {})
    u.previous_status, u.status, u.sequence, u.exchange_order_id = u.status, T.ORDER_STATUS_OPEN, 2, exchange_order_id
    await running.oms.ledger.record(u, {})


async def recorded(running: RunningOms, tag: str) -> T.OrderUpdate:
    row = await running.oms.ledger.get(tag)
    assert row is not None
    return row


async def test_an_order_working_at_kotak_stays_working_when_the_restarts_read_of_the_book_says_no_data(sim):
    ack = await placed_elsewhere(sim, "sig-00000000000000d1")  # working at Kotak, and in the ledger
    running = RunningOms(sim)
    await working_in_the_ledger(running, "sig-00000000000000d1", ack.exchange_order_id)
    sim.fail_next("order_book", status=200, body=dict(NO_DATA))  # the restart's read of the book

    async with running:
        row = await recorded(running, "sig-00000000000000d1")

    assert (row.status, row.reason_code, running.oms.reconciled["matched"]) == (T.ORDER_STATUS_OPEN, "", 1)


async def test_an_order_no_second_look_finds_while_kotak_lists_nothing_is_left_as_recorded_and_named(sim, caplog):
    """Kotak lists no order at all ("No Data" on every read): nothing confirms the order gone."""
    caplog.set_level(logging.WARNING, logger="services.oms.reconcile")
    running = RunningOms(sim)
    await working_in_the_ledger(running, "sig-00000000000000d2", NOT_AT_KOTAK)

    async with running:
        row = await recorded(running, "sig-00000000000000d2")
        unsettled = running.oms.reconciled["unsettled"]

    warned = [r for r in caplog.records if "not confirmed gone" in r.getMessage()]
    assert (row.status, unsettled) == (T.ORDER_STATUS_OPEN, 1)
    assert any(f"sig-00000000000000d2 ({NOT_AT_KOTAK})" in getattr(r, "orders", "") for r in warned)


async def test_an_order_kotak_does_not_list_while_listing_others_is_booked_gone_after_a_second_look(sim):
    await placed_elsewhere(sim, "from-the-kotak-app")  # Kotak's book answers, with another order
    running = RunningOms(sim)
    await working_in_the_ledger(running, "sig-00000000000000d3", NOT_AT_KOTAK)
    reads = sim.calls["order_book"]

    async with running:
        row = await recorded(running, "sig-00000000000000d3")

    assert (row.status, row.reason_code) == (T.ORDER_STATUS_CANCELLED, "NOT_IN_BROKER_BOOK")
    assert sim.calls["order_book"] - reads >= 3  # the book twice, then the order by its number


async def test_a_restart_whose_book_lists_every_working_order_reads_it_once(sim):
    ack = await placed_elsewhere(sim, "sig-00000000000000d4")
    running = RunningOms(sim)
    await working_in_the_ledger(running, "sig-00000000000000d4", ack.exchange_order_id)
    await running.broker.start()
    bus = asyncio.create_task(running.bus.run())
    reads = sim.calls["order_book"]
    try:
        await running.oms.start()  # reconciles; not run: Kotak's order feed and polls are not started
    finally:
        await running.oms.stop()
        bus.cancel()
        await asyncio.gather(bus, return_exceptions=True)
        await running.broker.stop()

    assert (sim.calls["order_book"] - reads, running.oms.reconciled["matched"]) == (1, 1)
