"""KotakBroker under faults: session expiry and re-login, a place_order timeout that Kotak accepted, order
events from the order feed and from order-book polling, and secrets kept out of logs and errors."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.contracts import trading_pb2 as T
from shared.errors import RetryableError
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually as wait_for
from tests.kotak.conftest import settings_for
from tests.kotak.test_broker import limit_buy, market_buy


async def next_event_with(events, status: int, within: float = 5.0):
    async with asyncio.timeout(within):
        async for event in events:
            if event.status == status:
                return event
    raise AssertionError("no such event")


async def test_expired_session_is_renewed_once_and_the_call_succeeds(sim, broker):
    sim.expire_session()
    limits = await broker.limits()
    assert limits["net_paise"] == 10_000_000_00
    assert sim.logins == 2


async def test_place_order_that_times_out_but_was_accepted_is_found_by_tag_and_not_placed_again(sim):
    broker = KotakBroker(settings_for(sim, request_timeout_s=0.5))
    await broker.start()
    sim.delay_next("place_order", 1.0)
    ack = await broker.place_order(market_buy("coid-slow"))
    assert sim.calls["place_order"] == 1
    assert [o.tag for o in sim.exchange.orders.values()] == ["coid-slow"]
    assert (ack.exchange_order_id, ack.status) == (next(iter(sim.exchange.orders)), T.ORDER_STATUS_TRADED)


async def test_place_order_that_failed_before_kotak_took_it_raises_retryable_and_places_nothing(sim, broker):
    sim.fail_next("place_order", status=503)
    with pytest.raises(RetryableError, match="find_by_tag"):
        await broker.place_order(market_buy("coid-503"))
    assert sim.exchange.orders == {}


# Kotak's own list for place/modify/cancel: 500, 502 "Not able to communicate with OMS", 503, 504 "Gateway timeout".
# The SDK hands over the body whatever the HTTP status; a gateway's 5xx body is Kotak's 429 shape with its code.
GATEWAY_TIMEOUT = {"code": 504, "error": "Gateway Timeout", "message": "upstream request timeout"}
NO_OMS = {"stat": "Not_Ok", "errMsg": "Not able to communicate with OMS"}


@pytest.mark.parametrize("body", [GATEWAY_TIMEOUT, NO_OMS], ids=["gateway-504", "no-oms-502"])
async def test_a_place_answered_5xx_after_kotak_took_it_is_found_by_tag_not_booked_as_refused(sim, broker, body):
    sim.fail_next("place_order", status=502 if body is NO_OMS else 504, body=body, after_work=True)

    ack = await broker.place_order(market_buy("coid-5xx"))

    assert sim.calls["place_order"] == 1
    assert [o.tag for o in sim.exchange.orders.values()] == ["coid-5xx"]
    assert (ack.exchange_order_id, ack.status) == (next(iter(sim.exchange.orders)), T.ORDER_STATUS_TRADED)


@pytest.mark.parametrize("body", [GATEWAY_TIMEOUT, NO_OMS], ids=["gateway-504", "no-oms-502"])
async def test_a_place_answered_5xx_before_kotak_took_it_is_an_unknown_outcome_to_look_up(sim, broker, body):
    sim.fail_next("place_order", status=502 if body is NO_OMS else 504, body=body)

    with pytest.raises(RetryableError, match="outcome unknown"):
        await broker.place_order(market_buy("coid-5xx"))

    assert sim.exchange.orders == {}


async def test_a_cancel_answered_5xx_after_kotak_made_it_is_not_a_refusal(sim, broker):
    ack = await broker.place_order(limit_buy("coid-cancel-5xx", 128_000))
    sim.fail_next("cancel_order", status=504, body=GATEWAY_TIMEOUT, after_work=True)

    with pytest.raises(RetryableError, match="outcome unknown"):
        await broker.cancel_order(ack.exchange_order_id)

    assert sim.exchange.orders[ack.exchange_order_id].status == "cancelled"


async def test_gateway_errors_at_login_never_stop_automatic_login_as_refusals_would(sim):
    """Three refusals in a row stop automatic login (an account locks after a few wrong MPINs); a login outage
    of 5xx replies is no refusal: once Kotak answers again the login goes through."""
    broker = KotakBroker(settings_for(sim, login_max_refusals=2, reconnect_initial_s=0.01, reconnect_max_s=0.01))
    for _ in range(4):
        sim.fail_next("totp_login", status=504, body=GATEWAY_TIMEOUT)
        with pytest.raises(RetryableError, match="Gateway Timeout"):
            await broker.start()
        await asyncio.sleep(0.02)  # past the backoff

    await broker.start()

    assert sim.logins == 1


async def test_order_feed_delivers_each_state_of_a_fill_once(sim, broker):
    events = broker.events()
    first = asyncio.ensure_future(anext(events))
    await wait_for(lambda: bool(sim.order_sockets))
    ack = await broker.place_order(market_buy("coid-feed"))
    seen = [await first]
    seen.append(await next_event_with(events, T.ORDER_STATUS_TRADED))
    await events.aclose()
    assert seen[0].exchange_order_id == ack.exchange_order_id
    assert (seen[-1].client_order_id, seen[-1].filled_quantity, seen[-1].average_price_paise) == (
        "coid-feed", 3, 129_005)


async def test_an_order_feed_row_the_sdks_model_does_not_take_is_read_not_left_to_the_next_poll(sim):
    """A row with an integer tok, a numeric avgPrc or an empty fldQty fails the SDK's OrderData model: the SDK hands
    the frame over as a dict. Polling once a minute here, the fill can only come from the feed in time."""
    broker = KotakBroker(settings_for(sim, poll_interval_s=60.0))
    await broker.start()
    sim.order_feed_loose_types = True
    events = broker.events()
    first = asyncio.ensure_future(anext(events))
    await wait_for(lambda: bool(sim.order_sockets))
    await asyncio.sleep(0.2)  # the first poll (at start) is done
    polls = sim.calls["order_book"]

    await broker.place_order(market_buy("coid-loose"))
    try:
        async with asyncio.timeout(3.0):
            seen = [await first, await next_event_with(events, T.ORDER_STATUS_TRADED)]
    finally:
        first.cancel()
        await events.aclose()

    assert (seen[-1].client_order_id, seen[-1].filled_quantity, seen[-1].average_price_paise) == (
        "coid-loose", 3, 129_005)
    assert sim.calls["order_book"] == polls


async def test_polling_fills_the_gap_when_the_order_feed_is_silent(sim, broker):
    sim.mute_order_feed = True
    await broker.place_order(market_buy("coid-poll"))
    events = broker.events()
    traded = await next_event_with(events, T.ORDER_STATUS_TRADED)
    await events.aclose()
    assert (traded.client_order_id, traded.filled_quantity) == ("coid-poll", 3)


async def test_an_order_kotak_rejects_later_arrives_as_rejected_with_its_reason(sim, broker):
    sim.reject_next_order("RMS:Blocked for trading")
    ack = await broker.place_order(limit_buy("coid-late-rej", 129_000))
    events = broker.events()
    rejected = await next_event_with(events, T.ORDER_STATUS_REJECTED)
    await events.aclose()
    assert (rejected.exchange_order_id, rejected.reason) == (ack.exchange_order_id, "RMS:Blocked for trading")


async def test_credentials_never_appear_in_logs_reprs_or_errors(sim, caplog):
    caplog.set_level(logging.DEBUG)
    settings = settings_for(sim, request_timeout_s=0.5)
    broker = KotakBroker(settings)
    await broker.start()
    sim.expire_session()
    await broker.positions()
    sim.fail_next("place_order", status=503)
    with pytest.raises(RetryableError) as err:
        await broker.place_order(market_buy("coid-secret"))
    token = broker.session.client.configuration.edit_token
    texts = caplog.text + str(err.value) + repr(settings) + repr(broker) + repr(broker.session)
    for secret in (sim.creds.consumer_key, sim.creds.mpin, sim.creds.totp_secret, sim.creds.mobile, token):
        assert secret not in texts


async def test_an_order_feed_closed_right_after_its_acknowledgement_is_connected_again(sim, broker):
    """The SDK's order-feed iterator can miss a close that lands between two receives (its receive loop ends
    without marking the feed stopped) and then waits forever: events would come only from polling, for good."""
    sim.close_order_feeds_after_ack = 3
    events = broker.events()
    first = asyncio.ensure_future(anext(events))
    try:
        await wait_for(lambda: sim.order_feed_logins >= 4 and bool(sim.order_sockets), within=8.0)
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await events.aclose()
