"""Market-picture depth the source cannot trust: counts that disagree with the rows carried (the SDK then deals the
best ask to the bids), or levels out of price order. The tick keeps its trade and loses its depth and touch, and the
packet is counted as malformed."""

from __future__ import annotations

import asyncio
import struct

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator import sfeed_codec as codec
from shared.contracts import market_pb2
from tests.ingestion.test_fuzz_feed import MP, Harness, depth_tick
from tests.ingestion.test_fuzz_feed import harness as harness  # the fixture
from tests.kotak.conftest import NOW_NS, RELIANCE, settings_for
from tests.kotak.conftest import sim as sim  # the fixture


def picture(buy_n: int | None = None) -> bytearray:
    """RELIANCE at 1,290.00: bids 1,289.95 down, asks 1,290.05 up, five rows a side; `buy_n` overwrites the count."""
    pkt = bytearray(codec.encode_market_picture(depth_tick(RELIANCE, 129_000, 1_000_000, NOW_NS)))
    if buy_n is not None:
        struct.pack_into("<I", pkt, MP["buy_n"], buy_n)
    return pkt


def seen(tick: market_pb2.Tick) -> tuple[int, int, int, int, int]:
    return tick.ltp_paise, tick.bid_paise, tick.ask_paise, len(tick.bids), len(tick.asks)


def test_depth_counts_that_disagree_with_the_rows_drop_the_depth_and_count_the_packet(harness: Harness):
    before = harness.src.stats.malformed_packets

    [got] = harness.feed(bytes(picture(buy_n=6)))  # 5 + 5 rows carried, counts say 6 + 5

    assert (seen(got), harness.src.stats.malformed_packets - before) == ((129_000, 0, 0, 0, 0), 1)


def test_a_bid_counted_as_an_ask_drops_the_depth(harness: Harness):
    """Counts 0 + 10 over 5 + 5 rows: every list looks ordered, but the best ask would be the best bid."""
    pkt = picture(buy_n=0)
    struct.pack_into("<I", pkt, MP["sell_n"], 10)

    [got] = harness.feed(bytes(pkt))

    assert seen(got) == (129_000, 0, 0, 0, 0)


def test_bids_out_of_price_order_drop_the_depth_and_count_the_packet(harness: Harness):
    pkt = picture()
    second_bid = MP["row0"] + 16  # rows: quantity i64, price i32, orders i32
    struct.pack_into("<i", pkt, second_bid + 8, 129_200)  # above the first bid, 1,289.95
    before = harness.src.stats.malformed_packets

    [got] = harness.feed(bytes(pkt))

    assert (seen(got), harness.src.stats.malformed_packets - before) == ((129_000, 0, 0, 0, 0), 1)


def test_a_well_formed_depth_keeps_its_touch(harness: Harness):
    [got] = harness.feed(bytes(picture()))

    assert (seen(got), harness.src.stats.malformed_packets) == ((129_000, 128_995, 129_005, 5, 5), 0)


async def test_a_miscounted_picture_from_the_feed_socket_comes_out_without_depth(sim):
    source = KotakFeedSource(settings_for(sim), ["RELIANCE-EQ"])
    batches = source.batches()
    try:
        await asyncio.wait_for(anext(batches), 5)  # the subscribe snapshot
        await sim.send_raw_feed_frame(bytes(picture(buy_n=6)))
        [got] = (await asyncio.wait_for(anext(batches), 5)).ticks
    finally:
        await source.close()

    assert (seen(got), source.stats.malformed_packets) == ((129_000, 0, 0, 0, 0), 1)
