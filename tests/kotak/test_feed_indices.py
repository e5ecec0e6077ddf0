"""Indices through KotakFeedSource and the real SDK against the simulator: learnt by name at start (Kotak streams
an index under a number of its own), streamed as ticks of their value, a misspelt name refused naming it."""

from __future__ import annotations

import asyncio
import struct

import pytest

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator import sfeed_codec as codec
from shared.contracts import market_pb2
from shared.errors import ConfigError
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RELIANCE, TCS, settings_for, tick

NIFTY_50 = 26000


async def next_ticks(batches, token: int) -> list[market_pb2.Tick]:
    """The ticks of `token` in the next batch that has any."""
    async with asyncio.timeout(5):
        while True:
            ticks = [t for t in (await anext(batches)).ticks if t.token == token]
            if ticks:
                return ticks


async def test_an_index_is_learnt_by_name_and_listed_under_its_feed_token_as_an_index(sim, settings):
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["nifty 50"])
    try:
        instruments = await source.instruments()
    finally:
        await source.close()

    assert [(i.token, i.symbol, i.exchange_segment, i.is_index) for i in instruments] == [
        (RELIANCE, "RELIANCE-EQ", "nse_cm", False), (NIFTY_50, "Nifty 50", "nse_cm", True)]


async def test_an_index_streams_as_ticks_of_its_value_beside_the_stocks(sim, settings):
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["Nifty 50"])
    batches = source.batches()
    try:
        await next_ticks(batches, NIFTY_50)  # the subscribe's answer
        # The simulator's Nifty 50 is 24,000 x the mean move of its constituents (its 50 stocks, unmoved ones at 1):
        # RELIANCE and TCS each at 1.1 x their previous close of Rs 1,285 -> 24,000 x (2 x 1.1 + 48) / 50 = 24,096.
        await sim.push_ticks([tick(RELIANCE, 141_350, ts_ns=NOW_NS + 60 * 10**9),
                              tick(TCS, 141_350, ts_ns=NOW_NS + 60 * 10**9)])
        [got] = await next_ticks(batches, NIFTY_50)
    finally:
        await source.close()

    assert (got.exchange_segment, got.ts_ns, got.ltp_paise, got.close_paise, got.volume, got.ltq) == (
        "nse_cm", NOW_NS + 60 * 10**9, 2_409_600, 2_400_000, 0, 0)
    # The day's open and high came with the fixture's ticks (TCS at Rs 3,450 over a close of Rs 1,285), when
    # the index was 24,000 x (129,000 / 128,500 + 345,000 / 128,500 + 48) / 50 = 24,810.58.
    assert (got.open_paise, got.high_paise, got.low_paise) == (2_481_058, 2_481_058, 2_409_600) and got.recv_ns > 0


async def test_an_index_name_the_feed_does_not_know_stops_the_start_naming_it(sim):
    source = KotakFeedSource(settings_for(sim, request_timeout_s=0.5), ["RELIANCE-EQ"],
                             indices=["Nifty 50", "bse_cm:Nifty Fifty"])
    try:
        with pytest.raises(ConfigError, match=r"indices: no reading from the Kotak feed within 0.5 s for "
                                              r"bse_cm:Nifty Fifty; write each as Kotak spells it"):
            await source.instruments()
    finally:
        await source.close()


async def test_the_feed_s_subscription_cap_counts_the_indices_too(sim, settings, monkeypatch):
    """The SDK refuses a subscribe past its cap on every connection, whatever the kind: refused at start instead."""
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["Nifty 50"])
    await source.session.login()
    make_socket = source.session.websocket
    monkeypatch.setattr(source.session, "websocket", lambda **kw: make_socket(**kw, max_subscriptions=1))
    try:
        with pytest.raises(ConfigError, match=r"1 instruments and 1 indices, but the Kotak feed subscribes at most 1 "):
            await source.instruments()
    finally:
        await source.close()


async def test_a_reconnected_feed_subscribes_its_indices_again(sim, settings):
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["Nifty 50"])
    batches = source.batches()
    try:
        await next_ticks(batches, NIFTY_50)  # the subscribe's answer
        await sim.drop_feeds()
        pending = asyncio.ensure_future(next_ticks(batches, NIFTY_50))
        await eventually(lambda: source.stats.reconnects == 1
                         and any(c.index_subs == {NIFTY_50} for c in sim.feed_sockets))
        await sim.push_ticks([tick(RELIANCE, 141_350, ts_ns=NOW_NS + 120 * 10**9)])
        ticks = await pending
    finally:
        await source.close()

    # The new subscribe's answer (the reading as it was) is old news already delivered: the first new one is the
    # reading RELIANCE moved: 24,000 x (1.1 + 345,000 / 128,500 + 48) / 50 = 24,856.72 (the fixture's TCS at
    # Rs 3,450 over a close of Rs 1,285).
    assert [(t.ts_ns, t.ltp_paise) for t in ticks] == [(NOW_NS + 120 * 10**9, 2_485_672)]


async def test_a_corrupt_or_unasked_index_packet_is_counted_and_skipped_keeping_its_frame_mates(sim, settings):
    source = KotakFeedSource(settings, ["RELIANCE-EQ"], indices=["Nifty 50"])
    batches = source.batches()
    try:
        await next_ticks(batches, NIFTY_50)
        reading = market_pb2.Tick(token=NIFTY_50, exchange_segment="nse_cm", ts_ns=NOW_NS + 60 * 10**9,
                                  ltp_paise=2_410_000, open_paise=2_400_000, high_paise=2_410_000,
                                  low_paise=2_400_000, close_paise=2_400_000)
        corrupt = bytearray(codec.encode_index(reading, "Nifty 50"))
        struct.pack_into("<Q", corrupt, codec.HEADER_SIZE + 24, 1_764_049_560_000)  # ms where SFeed sends seconds
        unasked = market_pb2.Tick()
        unasked.CopyFrom(reading)
        unasked.token = 26009  # Nifty Bank: not subscribed
        good = market_pb2.Tick()
        good.CopyFrom(reading)
        good.ltp_paise = 2_411_000
        await sim.send_raw_feed_frame(bytes(corrupt) + codec.encode_index(unasked, "Nifty Bank")
                                      + codec.encode_index(good, "Nifty 50"))
        [got] = await next_ticks(batches, NIFTY_50)
        stats = source.stats
    finally:
        await source.close()

    assert got.ltp_paise == 2_411_000
    assert (stats.malformed_packets, stats.reconnects) == (2, 0)
