"""KotakBroker.modify_order against the real SDK and the simulator, as real Kotak answers: a change its RMS refuses
after answering "Ok" (the simulator's late_rms_refusals: the order works on with its old terms, the reason in
rejRsn; kotak-neo-api issue 36), and a change whose read of the order before it fails (nothing sent)."""

from __future__ import annotations

import asyncio

from services.simulator.server import Simulator
from shared.contracts import trading_pb2 as T
from shared.errors import NotSent
from tests.helpers import eventually
from tests.kotak.test_broker import limit_buy
from tests.kotak.test_broker_resilience import next_event_with
from tests.kotak.test_oms_modify import Trading, terms


def rms_refuses_a_raise_after_taking_it(sim: Simulator) -> None:
    """Margin for 2 RELIANCE at 1200.00 (480.00, a fifth of the value) but not at 1250.00 (500.00); Kotak's RMS
    refuses such a change after its "Ok"."""
    sim.exchange.cash_paise = 490_00
    sim.exchange.late_rms_refusals = True


async def test_a_change_kotaks_rms_refuses_after_taking_it_comes_as_an_event_naming_the_refusal(sim, broker):
    rms_refuses_a_raise_after_taking_it(sim)
    ack = await broker.place_order(limit_buy("coid-rms", 120_000))
    events = broker.events()
    await next_event_with(events, T.ORDER_STATUS_OPEN)  # the order as it works before the change

    await broker.modify_order(ack.exchange_order_id, price_paise=125_000)
    try:
        async with asyncio.timeout(3.0):
            refused = await anext(e async for e in events if e.reason)  # a poll's row from before may come first
    finally:
        await events.aclose()

    assert (refused.exchange_order_id, refused.price_paise) == (ack.exchange_order_id, 120_000)
    assert refused.reason.startswith("change refused: RMS:Margin Exceeds")


async def test_the_oms_takes_back_the_terms_kotak_works_after_its_rms_refused_a_change_it_took(sim):
    rms_refuses_a_raise_after_taking_it(sim)
    async with Trading(sim) as running:
        await running.place(limit_buy("coid-rms", 120_000, qty=2))

        changed = await running.modify("coid-rms", price_paise=125_000)
        # At the refusal's row (a poll or the feed), not STALE_TERMS_S (5 s) after Kotak's "Ok".
        await eventually(lambda: terms(running.order("coid-rms").request) == (2, 120_000), within=4.0)

        back = running.order("coid-rms")
        recorded = await running.recorded("coid-rms")
    assert terms(changed.request) == (2, 125_000)  # booked on Kotak's "Ok"
    assert (back.status, back.reason.startswith("change refused: RMS:Margin Exceeds")) == (T.ORDER_STATUS_OPEN, True)
    assert terms(recorded.request) == (2, 120_000)


async def test_a_change_whose_read_of_the_order_failed_is_not_sent(sim, broker):
    ack = await broker.place_order(limit_buy("coid-pre", 120_000))
    sim.fail_next("order_book", status=503)  # Kotak's "Trade API service is unavailable", on the read before it

    try:
        await broker.modify_order(ack.exchange_order_id, price_paise=121_000)
        raised: Exception | None = None
    except Exception as exc:
        raised = exc

    assert (type(raised), sim.calls["modify_order"]) == (NotSent, 0)
    assert [o.price for o in sim.exchange.orders.values()] == [120_000]


async def test_a_change_kotak_takes_and_holds_is_not_reported_refused(sim, broker):
    sim.exchange.late_rms_refusals = True  # margin enough: nothing to refuse
    ack = await broker.place_order(limit_buy("coid-held", 120_000))
    events = broker.events()
    await next_event_with(events, T.ORDER_STATUS_OPEN)

    await broker.modify_order(ack.exchange_order_id, price_paise=121_000)
    seen = []
    try:
        async with asyncio.timeout(3.0):
            async for event in events:
                seen.append((event.price_paise, event.reason))
                if event.price_paise == 121_000:
                    break
    finally:
        await events.aclose()

    assert seen[-1] == (121_000, "") and [reason for _, reason in seen if reason] == []
