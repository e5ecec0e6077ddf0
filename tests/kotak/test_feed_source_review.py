"""KotakFeedSource against the simulator, the feed's awkward cases: a new trading day, corrupt and untraded
pictures inside a frame, quote-only updates, and updates that change only open interest or deeper depth."""

from __future__ import annotations

import asyncio
import struct

import pytest

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator import sfeed_codec as codec
from shared.contracts import market_pb2
from tests.kotak.conftest import NOW_NS, RELIANCE, TCS, tick

DAY_NS = 86_400 * 10**9
LTT_OFFSET = codec.HEADER_SIZE + 28  # last_trade_time in a market-picture packet: after token and three int64s


@pytest.fixture
async def source(settings):
    src = KotakFeedSource(settings, ["RELIANCE-EQ", "TCS-EQ"])
    yield src
    await src.close()


async def next_batch(batches) -> market_pb2.TickBatch:
    return await asyncio.wait_for(anext(batches), 5)


def deep_tick(fifth_bid_qty: int = 14, *, oi: int = 0) -> market_pb2.Tick:
    t = tick(RELIANCE, 129_100, volume=5_000)
    t.bids.extend(market_pb2.DepthLevel(price_paise=129_095 - 5 * i, quantity=10 + i, orders=1) for i in range(5))
    t.asks.extend(market_pb2.DepthLevel(price_paise=129_105 + 5 * i, quantity=20 + i, orders=1) for i in range(5))
    t.bids[4].quantity = fifth_bid_qty
    t.bid_paise, t.bid_qty, t.ask_paise, t.ask_qty = 129_095, 10, 129_105, 20
    t.open_interest = oi
    return t


async def test_first_ticks_of_a_new_ist_day_are_delivered_though_volume_restarts_below_yesterdays(sim, source):
    batches = source.batches()
    await next_batch(batches)  # the subscribe snapshot
    await sim.push_ticks([tick(RELIANCE, 129_100, volume=5_000_000)])  # late on day 1
    await next_batch(batches)
    next_day = NOW_NS + DAY_NS
    await sim.push_ticks([tick(RELIANCE, 130_000, ts_ns=next_day, volume=100),
                          tick(TCS, 346_000, ts_ns=next_day, volume=200)])
    batch = await next_batch(batches)
    assert [(t.token, t.ltp_paise, t.volume) for t in batch.ticks] == [(RELIANCE, 130_000, 100), (TCS, 346_000, 200)]


async def test_a_lower_volume_on_the_same_day_is_still_dropped_as_stale(sim, source):
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([tick(RELIANCE, 129_100, volume=5_000)])
    await next_batch(batches)
    await sim.push_ticks([tick(RELIANCE, 129_050, ts_ns=NOW_NS + 10**9, volume=4_000),
                          tick(TCS, 346_000, volume=200)])
    batch = await next_batch(batches)
    assert [t.token for t in batch.ticks] == [TCS]


async def test_a_corrupt_trade_time_is_counted_and_skipped_keeping_its_frame_mates_and_the_connection(sim, source):
    batches = source.batches()
    await next_batch(batches)
    bad = bytearray(codec.encode_market_picture(tick(TCS, 345_100, volume=500)))
    struct.pack_into("<q", bad, LTT_OFFSET, 1_764_049_500_000)  # milliseconds where SFeed sends seconds
    good = codec.encode_market_picture(tick(RELIANCE, 129_050, volume=400))
    await sim.send_raw_feed_frame(bytes(bad) + good)
    batch = await next_batch(batches)
    assert [(t.token, t.ltp_paise) for t in batch.ticks] == [(RELIANCE, 129_050)]
    assert (source.stats.malformed_packets, source.stats.reconnects, source.stats.connected) == (1, 0, True)


async def test_a_picture_of_a_never_traded_instrument_is_not_published_as_a_tick(sim, source):
    batches = source.batches()
    await next_batch(batches)
    untraded = tick(TCS, 0, ts_ns=0, volume=0, ltq=0, bid=344_990, ask=345_010)  # quotes, no trade yet
    await sim.push_ticks([untraded, tick(RELIANCE, 129_050, volume=400)])
    batch = await next_batch(batches)
    assert [(t.token, t.ltp_paise) for t in batch.ticks] == [(RELIANCE, 129_050)]
    assert source.stats.malformed_packets == 0


async def test_a_quote_only_update_carries_no_traded_quantity(sim, source):
    batches = source.batches()
    await next_batch(batches)  # snapshot: volume 100
    await sim.push_ticks([tick(RELIANCE, 129_010, ts_ns=NOW_NS + 10**9, volume=110, ltq=10)])  # a trade of 10
    trade = (await next_batch(batches)).ticks
    await sim.push_ticks([tick(RELIANCE, 129_010, ts_ns=NOW_NS + 10**9, volume=110, ltq=10, bid=129_000)])
    quote = (await next_batch(batches)).ticks  # the bid moved; the feed repeats the last trade's quantity
    assert [(t.ltq, t.bid_paise) for t in (*trade, *quote)] == [(10, 128_995), (0, 129_000)]


async def test_a_resent_quote_only_update_is_not_delivered_twice(sim, source):
    batches = source.batches()
    await next_batch(batches)
    quote = tick(RELIANCE, 129_000, volume=100, bid=128_990)  # snapshot's trade, new bid
    await sim.push_ticks([quote])
    await next_batch(batches)
    await sim.push_ticks([quote, tick(TCS, 346_000, volume=200)])
    batch = await next_batch(batches)
    assert [t.token for t in batch.ticks] == [TCS]


async def test_an_open_interest_only_update_is_delivered(sim, source):
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([deep_tick(oi=1_000)])
    await next_batch(batches)
    await sim.push_ticks([deep_tick(oi=1_500)])  # OI changed, no trade, same quotes
    [got] = (await next_batch(batches)).ticks
    assert (got.token, got.open_interest, got.ltq) == (RELIANCE, 1_500, 0)


async def test_an_update_changing_only_a_deeper_depth_level_is_delivered(sim, source):
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([deep_tick(fifth_bid_qty=14)])
    await next_batch(batches)
    await sim.push_ticks([deep_tick(fifth_bid_qty=99)])  # only the fifth bid's quantity moved
    [got] = (await next_batch(batches)).ticks
    assert (got.token, got.bids[4].quantity) == (RELIANCE, 99)
