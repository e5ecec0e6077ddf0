"""The simulator serves SFeed index data as Kotak does: the unmodified SDK subscribes indices by name
(subscribe_index, snapshot intent "index") and receives IndexMessages (SFeedIndex) with the index token.

The simulator here has four stocks: Nifty 50 is all four, Nifty Bank is HDFCBANK and SBIN. Values are hand-computed
from the index model (services/simulator/indices.py): base x mean(ltp / previous close) over the constituents.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from neo_api_client.websocket.feed import WsToken
from neo_api_client.websocket.feed.models import SFeedIndex, SFeedScrip
from neo_api_client.websocket.feed.protocol import decode_packet, split_batch

from services.simulator import sfeed_codec as codec
from services.simulator.server import Simulator
from shared.clock import NS, ManualClock
from shared.contracts import market_pb2
from shared.indices import IndexBoard
from shared.kotak.session import KotakSession
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, settings_for

RELIANCE, TCS, HDFCBANK, SBIN = 2885, 11536, 1333, 3045
NIFTY_50, NIFTY_BANK = WsToken("nse_cm", "Nifty 50"), WsToken("nse_cm", "Nifty Bank")
MARKER = 999_999  # a scrip packet with this token, sent after everything else, ends a read


def stock(token: int, ltp: int, close: int, ts_ns: int = NOW_NS) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=1, volume=10,
                           bid_paise=ltp - 5, ask_paise=ltp + 5, bid_qty=10, ask_qty=10, open_paise=close,
                           high_paise=max(ltp, close), low_paise=min(ltp, close), close_paise=close, atp_paise=ltp)


def paise(rupees: float) -> int:
    return round(rupees * 100)


def reading_of(message: SFeedIndex) -> tuple:
    return (int(message.instrument_token), message.name, paise(message.last_traded_price),
            paise(message.open_price), paise(message.high_price), paise(message.low_price),
            paise(message.close_price), message.last_trade_time)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(tick_interval=None, clock=ManualClock(NOW_NS),
                          instruments=nse_instruments(["RELIANCE-EQ", "TCS-EQ", "HDFCBANK-EQ", "SBIN-EQ"]))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def ws(sim: Simulator) -> AsyncIterator[Any]:
    """The SDK's own SFeed socket, logged in against the simulator."""
    session = KotakSession(settings_for(sim))
    await session.login()
    socket = session.websocket(max_reconnect_attempts=0, max_connect_retries=0)
    await socket.connect()
    yield socket
    await socket.close()


async def read_until(ws: Any, done: Callable[[Any], bool]) -> list[Any]:
    """Messages received up to and including the first for which `done` is true (5 s at most)."""
    out: list[Any] = []
    async with asyncio.timeout(5):
        while not out or not done(out[-1]):
            out.append(await anext(ws))
    return out


async def everything_sent(sim: Simulator, ws: Any) -> list[Any]:
    """Every message the socket got before a marker packet sent now: a message not among them was not sent."""
    marker = market_pb2.Tick(token=MARKER, exchange_segment="nse_cm", ts_ns=NOW_NS, ltp_paise=100)
    await sim.send_raw_feed_frame(codec.encode(marker, codec.LEVEL_TOUCH_LINE))
    got = await read_until(ws, lambda m: m.instrument_token == str(MARKER))
    return got[:-1]


def indices_in(messages: list[Any]) -> list[tuple]:
    return [reading_of(m) for m in messages if isinstance(m, SFeedIndex)]


# -- the codec ----------------------------------------------------------------------------------------------------
def test_an_index_packet_decodes_in_the_sdk_to_the_exact_fields_encoded():
    reading = market_pb2.Tick(token=26009, exchange_segment="nse_cm", ts_ns=NOW_NS + 7 * NS, ltp_paise=5_212_345,
                              open_paise=5_200_050, high_paise=5_230_000, low_paise=5_190_000, close_paise=5_200_000)
    frame = codec.batch([codec.encode_index(reading, "Nifty Bank", 3), codec.encode_index(reading, "Nifty Bank")])

    [message, _] = [decode_packet(p, {1: codec.DIVIDER}) for p in split_batch(frame)]

    assert isinstance(message, SFeedIndex)
    assert (message.exchange_segment, *reading_of(message)) == (
        "nse_cm", 26009, "Nifty Bank", 5_212_345, 5_200_050, 5_230_000, 5_190_000, 5_200_000, NOW_NS // NS + 7)
    assert (paise(message.change), message.net_change_percent, paise(message.yearly_high),
            paise(message.yearly_low), message.precision, message.multiplier) == (
        12_345, 0.23, 6_240_000, 4_160_000, 2, 1.0)


# -- the index model (no server) ------------------------------------------------------------------------------------
def test_a_constituent_not_ticked_yet_counts_at_its_previous_close():
    board = IndexBoard.for_instruments(nse_instruments(["RELIANCE-EQ", "TCS-EQ"]))

    [reading] = board.update([stock(RELIANCE, 141_900, 129_000)])  # +10 %, TCS not ticked: (1.1 + 1) / 2

    assert (reading.token, reading.ltp_paise, reading.close_paise) == (26000, 2_520_000, 2_400_000)


def test_an_index_with_no_constituent_among_the_instruments_is_left_out():
    board = IndexBoard.for_instruments(nse_instruments(["RELIANCE-EQ", "TCS-EQ"]))

    assert (list(board.specs), board.find("nse_cm", "Nifty Bank")) == ([26000], None)


def test_index_names_match_in_any_case_within_their_segment():
    board = IndexBoard.for_instruments(nse_instruments(["HDFCBANK-EQ"]))

    assert [getattr(board.find(seg, name), "token", None) for seg, name in (
        ("nse_cm", "NIFTY bank"), ("nse_cm", "nifty 50"), ("bse_cm", "Nifty 50"), ("nse_cm", "Nifty"))] == [
        26009, 26000, None, None]


def test_a_new_ist_day_starts_the_index_open_high_and_low_again():
    board = IndexBoard.for_instruments(nse_instruments(["HDFCBANK-EQ"]))
    board.update([stock(HDFCBANK, 176_000, 160_000)])
    board.update([stock(HDFCBANK, 168_000, 160_000, NOW_NS + 60 * NS)])

    [reading] = [r for r in board.update([stock(HDFCBANK, 164_000, 160_000, NOW_NS + 86_400 * NS)])
                 if r.token == 26009]

    assert (reading.ltp_paise, reading.open_paise, reading.high_paise, reading.low_paise) == (
        5_330_000, 5_330_000, 5_330_000, 5_330_000)


def test_an_exact_reading_for_a_token_that_is_no_index_is_refused_naming_the_indices():
    board = IndexBoard.for_instruments(nse_instruments(["HDFCBANK-EQ"]))

    with pytest.raises(KeyError, match=r"token 2885 is no index.*Nifty 50 \(26000\), Nifty Bank \(26009\)"):
        board.set_reading(market_pb2.Tick(token=RELIANCE, exchange_segment="nse_cm", ltp_paise=100))


# -- through the SDK's feed socket ----------------------------------------------------------------------------------
async def test_subscribing_an_index_by_name_answers_its_current_reading_under_the_index_token(sim, ws):
    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])  # +10 %, three more at their close: 24,000 x 4.1 / 4

    await ws.subscribe_index([NIFTY_50])
    [message] = await read_until(ws, lambda m: True)

    assert isinstance(message, SFeedIndex)
    assert (*reading_of(message), message.trading_symbol) == (
        26000, "Nifty 50", 2_460_000, 2_460_000, 2_460_000, 2_460_000, 2_400_000, NOW_NS // NS, "Nifty 50")


async def test_index_readings_follow_the_mean_move_of_their_constituents(sim, ws):
    await ws.subscribe_index([NIFTY_50, WsToken("nse_cm", "nifty bank")])
    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])  # HDFCBANK x 1.1
    await sim.push_ticks([stock(SBIN, 77_005, 80_000, NOW_NS + 60 * NS)])  # SBIN x 0.9625625

    got = indices_in(await everything_sent(sim, ws))

    later = NOW_NS // NS + 60
    assert sorted(got) == sorted([
        # Answering the subscribe: the indices before any trade, at their previous close
        (26000, "Nifty 50", 2_400_000, 2_400_000, 2_400_000, 2_400_000, 2_400_000, NOW_NS // NS),
        (26009, "Nifty Bank", 5_200_000, 5_200_000, 5_200_000, 5_200_000, 5_200_000, NOW_NS // NS),
        (26000, "Nifty 50", 2_460_000, 2_460_000, 2_460_000, 2_460_000, 2_400_000, NOW_NS // NS),
        (26009, "Nifty Bank", 5_460_000, 5_460_000, 5_460_000, 5_460_000, 5_200_000, NOW_NS // NS),
        # 24,000 x (1.1 + 0.9625625 + 2) / 4 = 24,375.375 and 52,000 x (1.1 + 0.9625625) / 2 = 53,626.625
        (26000, "Nifty 50", 2_437_538, 2_460_000, 2_460_000, 2_437_538, 2_400_000, later),
        (26009, "Nifty Bank", 5_362_663, 5_460_000, 5_460_000, 5_362_663, 5_200_000, later)])


async def test_an_exact_index_reading_pushed_by_a_test_is_streamed_as_it_is(sim, ws):
    await ws.subscribe_index([NIFTY_BANK])
    exact = market_pb2.Tick(token=26009, exchange_segment="nse_cm", ts_ns=NOW_NS + 5 * NS, ltp_paise=5_187_465,
                            open_paise=5_210_010, high_paise=5_222_220, low_paise=5_180_000, close_paise=5_199_995)

    await sim.push_index_ticks([exact])
    [answer, message] = await read_until(ws, lambda m: m.last_trade_time == NOW_NS // NS + 5)

    assert paise(answer.last_traded_price) == 5_200_000  # the subscribe's answer: not moved yet
    assert reading_of(message) == (
        26009, "Nifty Bank", 5_187_465, 5_210_010, 5_222_220, 5_180_000, 5_199_995, NOW_NS // NS + 5)


async def test_an_index_not_moved_yet_answers_a_snapshot_with_its_previous_close(sim, ws):
    await ws.snapshot([NIFTY_50], intent="index")

    assert indices_in(await everything_sent(sim, ws)) == [
        (26000, "Nifty 50", 2_400_000, 2_400_000, 2_400_000, 2_400_000, 2_400_000, NOW_NS // NS)]


async def test_an_index_snapshot_answers_one_reading_and_subscribes_nothing(sim, ws):
    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])

    await ws.snapshot([NIFTY_BANK], intent="index")
    first = await everything_sent(sim, ws)
    await sim.push_ticks([stock(HDFCBANK, 168_000, 160_000)])
    after = await everything_sent(sim, ws)

    assert (indices_in(first), after) == (
        [(26009, "Nifty Bank", 5_460_000, 5_460_000, 5_460_000, 5_460_000, 5_200_000, NOW_NS // NS)], [])


async def test_unsubscribing_an_index_stops_its_readings_and_not_the_others(sim, ws):
    await ws.subscribe_index([NIFTY_50, NIFTY_BANK])
    await ws.unsubscribe_index([NIFTY_BANK])  # sent without an answer: wait until the simulator took it
    await eventually(lambda: [c.index_subs for c in sim.feed_sockets] == [{26000}])

    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])
    got = indices_in(await everything_sent(sim, ws))

    assert [(token, value) for token, _, value, *_ in got] == [(26000, 2_400_000), (26009, 5_200_000),
                                                              (26000, 2_460_000)]  # the subscribe's answers first


async def test_an_unknown_index_name_gets_nothing_and_the_known_one_in_the_same_request_streams(sim, ws):
    await ws.subscribe_index([WsToken("nse_cm", "Nifty Next 500"), NIFTY_50])

    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])
    got = indices_in(await everything_sent(sim, ws))

    assert (ws.trading_symbols, [(token, value) for token, _, value, *_ in got]) == (
        {"nse_cm|Nifty 50": "Nifty 50"}, [(26000, 2_400_000), (26000, 2_460_000)])


async def test_scrips_and_indices_stream_side_by_side_on_one_socket(sim, ws):
    await ws.subscribe_index([NIFTY_BANK])
    await ws.subscribe_scrips([WsToken("nse_cm", str(HDFCBANK))])

    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])
    got = await everything_sent(sim, ws)

    assert [(type(m).__name__, m.instrument_token, paise(m.last_traded_price), m.trading_symbol) for m in got] == [
        ("SFeedIndex", "26009", 5_200_000, "Nifty Bank"),  # the subscribe's answer
        ("SFeedScrip", "1333", 176_000, "HDFCBANK-EQ"), ("SFeedIndex", "26009", 5_460_000, "Nifty Bank")]
    assert isinstance(got[1], SFeedScrip) and got[1].level == codec.LEVEL_TOUCH_LINE


async def test_a_feed_set_to_close_after_a_subscribe_closes_after_an_index_subscribe_and_its_snapshot(sim, ws):
    await sim.push_ticks([stock(HDFCBANK, 176_000, 160_000)])
    sim.close_feeds_after_subscribe = 1

    await ws.subscribe_index([NIFTY_BANK])
    await eventually(lambda: not sim.feed_sockets)
    # The SDK's receive loop stops at the close before reading the frame in front of it (as KotakFeedSource
    # knows): read that frame from the SDK's connection.
    left = await asyncio.wait_for(ws._ws.recv(), 5)

    [message] = [decode_packet(p, ws.dividers) for p in split_batch(left)]
    assert (message.instrument_token, paise(message.last_traded_price), sim.close_feeds_after_subscribe) == (
        "26009", 5_460_000, 0)
