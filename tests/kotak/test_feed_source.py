"""KotakFeedSource through the SDK's SFeed websocket against the simulator: exact decode of lite and depth
packets, reconnect without duplicates, session expiry, malformed frames, unknown symbols."""

from __future__ import annotations

import asyncio
import itertools
import struct

import pytest

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator import sfeed_codec as codec
from shared import runtime
from shared.contracts import market_pb2
from shared.errors import ConfigError
from tests.helpers import eventually as wait_for
from tests.kotak.conftest import NOW_NS, RELIANCE, TCS, settings_for, tick


def depth_tick() -> market_pb2.Tick:
    t = tick(RELIANCE, 129_135, ts_ns=NOW_NS + 7 * 10**9, volume=5_000, ltq=25, bid=129_130, ask=129_140)
    t.bids.extend(market_pb2.DepthLevel(price_paise=129_130 - 5 * i, quantity=10 + i, orders=1 + i) for i in range(5))
    t.asks.extend(market_pb2.DepthLevel(price_paise=129_140 + 5 * i, quantity=20 + i, orders=2 + i) for i in range(5))
    t.bid_qty, t.ask_qty = 10, 20
    return t


def subscribed(sim) -> bool:
    return any(client.subs for client in sim.feed_sockets)


@pytest.fixture
async def source(settings):
    src = KotakFeedSource(settings, ["RELIANCE-EQ", "TCS-EQ"])
    yield src
    await src.close()


async def next_batch(batches) -> market_pb2.TickBatch:
    return await asyncio.wait_for(anext(batches), 5)


async def test_depth_packet_decodes_to_the_exact_tick_the_simulator_sent(sim, source):
    batches = source.batches()
    await next_batch(batches)  # the subscribe snapshot
    sent = depth_tick()
    await sim.push_ticks([sent])
    [got] = (await next_batch(batches)).ticks
    assert got.recv_ns > 0
    got.recv_ns = 0
    assert got == sent


async def test_lite_packet_decodes_token_time_price_quantity_and_close(sim, settings):
    source = KotakFeedSource(settings, ["TCS-EQ"], mode="lite")
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([tick(TCS, 345_065, ts_ns=NOW_NS + 3 * 10**9, ltq=7)])
    [got] = (await next_batch(batches)).ticks
    await source.close()
    assert (got.token, got.exchange_segment, got.ts_ns, got.ltp_paise, got.ltq, got.close_paise) == (
        TCS, "nse_cm", NOW_NS + 3 * 10**9, 345_065, 7, 128_500)


async def test_one_feed_frame_becomes_one_tick_batch(sim, source):
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([tick(RELIANCE, 129_010, volume=200), tick(TCS, 345_020, volume=300)])
    batch = await next_batch(batches)
    assert [(t.token, t.ltp_paise) for t in batch.ticks] == [(RELIANCE, 129_010), (TCS, 345_020)]


async def test_reconnect_after_a_dropped_socket_resubscribes_without_duplicate_ticks(sim, source):
    batches = source.batches()
    snapshot = await next_batch(batches)
    await sim.drop_feeds()
    pending = asyncio.ensure_future(next_batch(batches))  # the source reconnects while it is being read
    await wait_for(lambda: source.stats.reconnects == 1 and subscribed(sim))
    await sim.push_ticks([tick(RELIANCE, 129_200, volume=900)])
    after = await pending
    assert len(snapshot.ticks) == 2
    assert [(t.token, t.ltp_paise) for t in after.ticks] == [(RELIANCE, 129_200)]


async def test_expired_session_is_renewed_when_the_feed_reconnects(sim, source):
    batches = source.batches()
    await next_batch(batches)
    sim.expire_session()
    await sim.drop_feeds()
    pending = asyncio.ensure_future(next_batch(batches))
    await wait_for(lambda: sim.logins == 2 and subscribed(sim))
    await sim.push_ticks([tick(TCS, 345_500, volume=1_000)])
    after = await pending
    assert [(t.token, t.ltp_paise) for t in after.ticks] == [(TCS, 345_500)]


async def test_a_feed_refused_after_the_broker_already_logged_in_again_does_not_log_in_a_second_time(sim, source):
    """Both meet the same expiry: the broker's re-login renews the session, and the feed's socket, opened with
    the old tokens, must reconnect on the new session, not spend another TOTP code (Kotak refuses a reused one)."""
    batches = source.batches()
    await next_batch(batches)
    sim.expire_session()
    await source.session.relogin(source.session.generation)  # the broker's order call met the expiry first
    assert sim.logins == 2

    await source._renew_if_expired()  # the feed's socket (opened before that login) is refused

    assert sim.logins == 2


async def test_malformed_frame_is_counted_and_skipped_and_the_connection_is_kept(sim, source):
    batches = source.batches()
    await next_batch(batches)
    await sim.send_raw_feed_frame(b"\x90\x00\x28\x1c\x01\x08\x00")  # length 144 announced, 7 bytes sent
    await sim.push_ticks([tick(RELIANCE, 129_050, volume=400)])
    after = await next_batch(batches)
    assert [(t.token, t.ltp_paise) for t in after.ticks] == [(RELIANCE, 129_050)]
    assert (source.stats.malformed_packets, source.stats.reconnects, source.stats.connected) == (1, 0, True)


async def test_unknown_symbol_fails_listing_close_matches_from_the_scrip_master(sim, settings):
    source = KotakFeedSource(settings, ["RELIANCE", "TCS-EQ"])
    with pytest.raises(ConfigError, match=r"'RELIANCE' \(close: RELIANCE-EQ"):
        await source.instruments()


def test_sdk_float_prices_convert_back_to_the_exact_wire_paise():
    from services.ingestion.sfeed_packets import _paise

    wire = range(0, 5 * 10**7, 997)  # up to ₹5,00,000 in paise
    assert [_paise(p / 100) for p in wire] == list(wire)


def test_sfeed_bench_reports_sdk_and_baseline_rates_from_the_same_frames():
    from bench import sfeed

    result = sfeed.run(seconds=0.2)
    assert result["sdk_ticks_per_s"] > 0 and result["baseline_ticks_per_s"] > 0
    assert result["baseline_over_sdk"] == round(result["baseline_ticks_per_s"] / result["sdk_ticks_per_s"], 2)


async def test_stall_reconnect_logs_in_again_when_the_session_expired(sim, source):
    batches = source.batches()
    await next_batch(batches)
    sim.expire_session()
    await source.reconnect("no ticks for 15 s")
    pending = asyncio.ensure_future(next_batch(batches))
    await wait_for(lambda: source.stats.reconnects == 1 and subscribed(sim))
    await sim.push_ticks([tick(RELIANCE, 129_300, volume=2_000)])
    after = await pending
    assert sim.logins == 2
    assert [(t.token, t.ltp_paise) for t in after.ticks] == [(RELIANCE, 129_300)]


async def test_ticks_received_just_before_the_socket_dropped_are_not_lost(sim, source):
    batches = source.batches()
    await next_batch(batches)  # the subscribe snapshot
    await sim.push_ticks([tick(RELIANCE, 129_100, volume=1_000)])
    await sim.push_ticks([tick(RELIANCE, 129_200, volume=1_100)])
    await asyncio.sleep(0.2)  # both frames wait in the SDK's queue; nothing has read them yet
    await sim.drop_feeds()
    await asyncio.sleep(0.2)

    got = (await next_batch(batches)).ticks

    assert [(t.token, t.ltp_paise) for t in got] == [(RELIANCE, 129_100), (RELIANCE, 129_200)]


def test_symbols_resolve_bare_or_with_their_segment():
    from services.ingestion.source import resolve

    master = [market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm"),
              market_pb2.Instrument(token=500325, symbol="RELIANCE-EQ", exchange_segment="bse_cm"),
              market_pb2.Instrument(token=450001, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo")]

    found = resolve(["RELIANCE-EQ", "bse_cm:RELIANCE-EQ", "mcx_fo:crudeoil26janfut"], master)

    assert [i.token for i in found] == [2885, 500325, 450001]
    with pytest.raises(ConfigError, match="nse_cm:CRUDEOIL26JANFUT"):
        resolve(["nse_cm:CRUDEOIL26JANFUT"], master)


# -- the feed's awkward cases: a new trading day, corrupt and untraded pictures inside a frame, quote-only
# updates, and updates that change only open interest or deeper depth.
DAY_NS = 86_400 * 10**9
LTT_OFFSET = codec.HEADER_SIZE + 28  # last_trade_time in a market-picture packet: after token and three int64s


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


# -- sockets that end in ways the SDK does not report
async def test_a_close_right_behind_a_data_frame_delivers_the_frame_and_reconnects_at_once(sim, source):
    batches = source.batches()
    await next_batch(batches)
    # Sent in one turn of the loop, the frame and the close reach the SDK's socket together: its receive loop reads
    # the frame, finds the socket closed and ends without its disconnect handling; its iterator never ends.
    await sim.push_ticks([tick(RELIANCE, 129_100, volume=1_000)])
    await sim.drop_feeds()
    last = await next_batch(batches)
    pending = asyncio.ensure_future(next_batch(batches))
    await wait_for(lambda: source.stats.reconnects == 1 and subscribed(sim), within=2)
    await sim.push_ticks([tick(RELIANCE, 129_200, volume=1_100)])
    after = await pending
    got = [(t.token, t.ltp_paise) for b in (last, after) for t in b.ticks]
    assert got == [(RELIANCE, 129_100), (RELIANCE, 129_200)]



async def test_frames_received_between_the_last_one_read_and_the_close_are_delivered(sim, source):
    batches = source.batches()
    await next_batch(batches)
    # Three frames and the close in one loop turn: the SDK's receive loop reads the first, finds the socket closed
    # and stops reading; the other two wait in the websocket connection. (Raw frames: the reconnect's snapshot
    # does not carry them.)
    for i in range(3):
        await sim.send_raw_feed_frame(codec.encode_market_picture(tick(RELIANCE, 129_100 + i, volume=1_000 + i)))
    await sim.drop_feeds()
    got = [t.ltp_paise for t in (await next_batch(batches)).ticks]
    got += [t.ltp_paise for t in (await next_batch(batches)).ticks]
    assert got == [129_100, 129_101, 129_102]

def test_an_sdk_socket_whose_receive_loop_cannot_be_watched_is_reported_once(settings, caplog):
    source = KotakFeedSource(settings, ["RELIANCE-EQ"])

    source._watch_receiver(object())
    source._watch_receiver(object())

    assert [r.getMessage() for r in caplog.records if "receive loop" in r.getMessage()] == [
        "kotak feed cannot watch the SDK's receive loop (SDK internals changed); a socket closed right behind a "
        "data frame is noticed by the stall watchdog only"]


async def test_a_drop_while_a_frame_is_being_split_delivers_the_whole_frame(sim, source):
    batches = source.batches()
    await next_batch(batches)
    n = 300
    frame = b"".join(codec.encode_market_picture(tick((RELIANCE, TCS)[i % 2], 129_000 + i, ts_ns=NOW_NS + i * 10**9,
                                                      volume=1_000_000 + i)) for i in range(n))
    pending = asyncio.ensure_future(next_batch(batches))
    await sim.send_raw_feed_frame(frame)
    await wait_for(lambda: 0 < len(source._frames) < n, every=0)  # the read has taken part of the frame
    await sim.drop_feeds()
    batch = await pending
    assert [t.ltp_paise for t in batch.ticks] == [129_000 + i for i in range(n)]


async def test_instruments_sharing_a_token_in_two_segments_are_deduplicated_apart(sim, settings):
    sim.instruments.append(market_pb2.Instrument(token=RELIANCE, symbol="BSESCRIP", exchange_segment="bse_cm",
                                                 tick_size_paise=5, lot_size=1))  # tokens repeat across segments
    source = KotakFeedSource(settings, ["RELIANCE-EQ", "bse_cm:BSESCRIP"])
    batches = source.batches()
    await next_batch(batches)
    await sim.push_ticks([tick(RELIANCE, 129_100, volume=5_000_000)])
    await next_batch(batches)
    bse = tick(RELIANCE, 4_550, ts_ns=NOW_NS + 10**9, volume=20_000, bid=4_545, ask=4_555)  # below NSE's volume
    bse.exchange_segment = "bse_cm"
    await sim.push_ticks([bse])
    batch = await next_batch(batches)
    await source.close()
    assert [(t.exchange_segment, t.token, t.ltp_paise) for t in batch.ticks] == [("bse_cm", RELIANCE, 4_550)]


async def read_all(batches) -> None:
    async for _ in batches:
        pass


async def reconnect_gaps(source: KotakFeedSource, count: int, within: float = 3.0) -> list[float]:
    """Seconds between the source's next `count` + 1 reconnects (polled every 2 ms)."""
    loop, marks = asyncio.get_running_loop(), []
    async with asyncio.timeout(within):
        while len(marks) <= count:
            if source.stats.reconnects > len(marks):
                marks.append(loop.time())
            await asyncio.sleep(0.002)
    return [b - a for a, b in itertools.pairwise(marks)]


async def test_a_server_that_closes_each_connection_at_once_is_retried_with_growing_waits(sim):
    source = KotakFeedSource(settings_for(sim, reconnect_initial_s=0.05, reconnect_max_s=0.4), ["RELIANCE-EQ"])
    sim.close_feeds_after_subscribe = 100  # accepts auth and subscribe, sends the snapshot, then closes
    reading = asyncio.ensure_future(read_all(source.batches()))
    gaps = await reconnect_gaps(source, 3)
    assert not await runtime.cancel_and_wait([reading])  # the SDK's wait_for can swallow one cancel (gh-86296)
    await source.close()
    assert [round(g, 2) >= wait for g, wait in zip(gaps, (0.05, 0.1, 0.2), strict=True)] == [True, True, True]


async def test_a_connection_that_held_starts_the_backoff_again(sim, monkeypatch):
    from services.ingestion import kotak_source

    monkeypatch.setattr(kotak_source, "STABLE_AFTER_S", 0.3)
    source = KotakFeedSource(settings_for(sim, reconnect_initial_s=0.05, reconnect_max_s=0.4), ["RELIANCE-EQ"])
    sim.close_feeds_after_subscribe = 3  # three refusals in a row: the next wait would be 0.4 s
    reading = asyncio.ensure_future(read_all(source.batches()))
    await wait_for(lambda: source.stats.reconnects == 3 and source.stats.connected)
    await asyncio.sleep(0.35)  # the fourth connection holds past STABLE_AFTER_S
    await sim.drop_feeds()
    await wait_for(lambda: source.stats.reconnects == 4)
    dropped = asyncio.get_running_loop().time()
    await wait_for(lambda: source.stats.connected)
    waited = asyncio.get_running_loop().time() - dropped
    assert not await runtime.cancel_and_wait([reading])  # the SDK's wait_for can swallow one cancel (gh-86296)
    await source.close()
    assert waited < 0.3


async def test_more_symbols_than_the_feed_can_subscribe_fail_at_once_naming_cap_and_count(settings, monkeypatch):
    source = KotakFeedSource(settings, ["RELIANCE-EQ", "TCS-EQ"])
    await source.session.login()
    make_socket = source.session.websocket
    monkeypatch.setattr(source.session, "websocket", lambda **kw: make_socket(**kw, max_subscriptions=1))

    with pytest.raises(ConfigError, match=r"2 instruments.* at most 1 "):
        await asyncio.wait_for(anext(source.batches()), 2)
    assert source.stats.reconnects == 0
