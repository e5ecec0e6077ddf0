"""KotakFeedSource against the simulator (and small websocket servers standing in for a misbehaving feed): an auth
blip is not an expired session, an index is not a depth scrip, a segment in capitals resolves, and a feed that does
not answer at start is not blamed on index names."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from services.ingestion.kotak_source import KotakFeedSource
from shared import runtime
from shared.contracts import market_pb2
from shared.errors import RetryableError
from tests.helpers import eventually
from tests.kotak.conftest import RELIANCE, settings_for

NIFTY_50 = 26000


async def _drain(source: KotakFeedSource) -> None:
    async for _ in source.batches():
        pass


async def test_a_feed_socket_closed_during_auth_reconnects_without_logging_in_again(sim):
    async def close_on_auth(ws):
        await ws.recv()  # the auth frame
        await ws.close(code=1001, reason="going away")  # a feed server restarting

    server = await websockets.serve(close_on_auth, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = KotakFeedSource(settings_for(sim, feed_url=f"ws://127.0.0.1:{port}/feed", reconnect_initial_s=0.01,
                                          reconnect_max_s=0.02), ["RELIANCE-EQ"])
    await source.instruments()  # the run's one login
    reading = asyncio.ensure_future(_drain(source))
    try:
        await eventually(lambda: source.stats.reconnects >= 3)
    finally:
        await runtime.cancel_and_wait([reading])
        await source.close()
        server.close()

    assert sim.logins == 1


async def test_an_index_is_subscribed_by_name_only_not_as_a_depth_scrip(sim):
    source = KotakFeedSource(settings_for(sim), ["RELIANCE-EQ"], indices=["Nifty 50"])
    batches = source.batches()
    try:
        await asyncio.wait_for(anext(batches), 5)
        scrips = {token for client in sim.feed_sockets for token in client.subs}
    finally:
        await source.close()

    assert scrips == {RELIANCE}


async def test_a_feed_at_its_subscription_cap_with_an_index_streams(sim, monkeypatch):
    source = KotakFeedSource(settings_for(sim), ["RELIANCE-EQ"], indices=["Nifty 50"])
    await source.session.login()
    make_socket = source.session.websocket
    monkeypatch.setattr(source.session, "websocket", lambda **kw: make_socket(**kw, max_subscriptions=2))
    try:
        batch = await asyncio.wait_for(anext(source.batches()), 5)  # 1 stock + 1 index: exactly the cap
    finally:
        await source.close()

    assert {t.token for t in batch.ticks} <= {RELIANCE, NIFTY_50} and source.stats.reconnects == 0


async def test_a_segment_written_in_capitals_is_found_in_the_scrip_master(sim):
    sim.instruments.append(market_pb2.Instrument(token=RELIANCE + 1, symbol="BSESCRIP", exchange_segment="bse_cm",
                                                 tick_size_paise=5, lot_size=1))
    source = KotakFeedSource(settings_for(sim), ["BSE_CM:BSESCRIP"])
    try:
        instruments = await source.instruments()
    finally:
        await source.close()

    assert [(i.exchange_segment, i.symbol) for i in instruments] == [("bse_cm", "BSESCRIP")]


async def _mute_feed(connections: list[object]):
    async def mute(ws):
        connections.append(ws)
        await asyncio.sleep(30)  # accepts the socket, never answers the auth frame

    return await websockets.serve(mute, "127.0.0.1", 0)


async def test_a_feed_that_does_not_answer_at_start_is_a_retryable_error_not_a_naming_mistake(sim):
    server = await _mute_feed([])
    port = server.sockets[0].getsockname()[1]
    source = KotakFeedSource(settings_for(sim, feed_url=f"ws://127.0.0.1:{port}/feed", request_timeout_s=0.3),
                             ["RELIANCE-EQ"], indices=["Nifty 50"])
    try:
        with pytest.raises(RetryableError, match=r"indices: the Kotak feed could not be opened and authenticated "
                                                 r"within 0.3 s"):
            await source.instruments()
    finally:
        await source.close()
        server.close()


async def test_a_feed_that_does_not_answer_at_start_is_asked_again_within_start_login_wait_s(sim):
    connections: list[object] = []
    server = await _mute_feed(connections)
    port = server.sockets[0].getsockname()[1]
    source = KotakFeedSource(settings_for(sim, feed_url=f"ws://127.0.0.1:{port}/feed", request_timeout_s=0.1,
                                          reconnect_initial_s=0.05, start_login_wait_s=1.0),
                             ["RELIANCE-EQ"], indices=["Nifty 50"])
    try:
        with pytest.raises(RetryableError):
            await source.instruments()
    finally:
        await source.close()
        server.close()

    assert len(connections) >= 3
