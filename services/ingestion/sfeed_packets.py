"""SFeed packets as NeoPulse reads them: frames checked before the SDK decodes them, market pictures whose depth
cannot be trusted, and the SDK's decoded messages turned into ticks (prices in paise, corrupt fields refused).

Used by KotakFeedSource (services/ingestion/kotak_source.py) and the SFeed benchmark.
"""

from __future__ import annotations

import struct
from itertools import pairwise
from typing import Any

from neo_api_client.websocket.feed.models import Level, SFeedIndex, SFeedScrip, SFeedScripLite
from neo_api_client.websocket.feed.protocol import (
    MSG_CAS_CHANGE,
    MSG_INDEX,
    MSG_MARKET_CLOSE,
    MSG_MARKET_OPEN,
    MSG_MARKET_STATUS,
)

from shared.clock import NS
from shared.contracts import market_pb2

_U16 = struct.Struct("<H")
HEADER_SIZE = 9  # SFeed packet header (length u16, code u16, exchange, level, auction, seq, bitmask)
# last_trade_time is epoch seconds; outside 2000..2100 it is corrupt (milliseconds would overflow int64 ns).
_LTT_MIN_S, _LTT_MAX_S = 946_684_800, 4_102_444_800
# A trade time further ahead of this machine's clock (NTP keeps it within seconds of the exchange's) is a corrupt
# field: taken, it would hold the token's candle in that future minute, every real tick after it "late" (no candles,
# no stop watched on its ticks) until then. Too slow a clock skips every tick: the
# ingestion watchdog tells the trader it is behind (module._report_clock).
AHEAD_NS = 300 * NS
# A day's cumulative volume above this is a corrupt field (the busiest NSE contracts trade ~10^9 units a day).
MAX_DAY_VOLUME = 10**12
# A market picture: a 144-byte fixed part holding the depth row counts (buy, sell: u32 at byte 89), then 16-byte
# rows, bids first. The SDK deals rows to the bids until the buy count is reached and stops quietly when rows run
# out, so counts that disagree with the rows carried put an ask among the bids (or a bid among the asks).
_PICTURE_FIXED_SIZE, _DEPTH_ROW_SIZE, _DEPTH_COUNTS_AT = 144, 16, 89
_HEADER_START = struct.Struct("<HH")  # length, message code
_DEPTH_COUNTS = struct.Struct("<II")
_ROUTED_BY_CODE = frozenset({MSG_MARKET_OPEN, MSG_MARKET_CLOSE, MSG_INDEX, MSG_MARKET_STATUS, MSG_CAS_CHANGE})
_COUNTED_LEVELS = frozenset({2, Level.DEPTH, Level.FULL_DEPTH})  # a touch line's rows are 1 + 1 whatever it says

def frame_is_well_formed(frame: bytes) -> bool:
    """Every packet's length prefix is sane and the packets tile the frame exactly."""
    offset, n = 0, len(frame)
    while offset < n:
        if offset + 2 > n:
            return False
        size = _U16.unpack_from(frame, offset)[0]
        if size < HEADER_SIZE or offset + size > n:
            return False
        offset += size
    return n > 0


def miscounted_depth(frame: bytes) -> list[bytes]:
    """The market-picture packets of `frame` whose depth counts disagree with the depth rows they carry."""
    out, offset, n = [], 0, len(frame)
    while offset + HEADER_SIZE <= n:
        size, code = _HEADER_START.unpack_from(frame, offset)
        if size < HEADER_SIZE or offset + size > n:
            break  # the rest is not packets: frame_is_well_formed counts it
        if code not in _ROUTED_BY_CODE and frame[offset + 5] in _COUNTED_LEVELS and size >= _PICTURE_FIXED_SIZE:
            buy, sell = _DEPTH_COUNTS.unpack_from(frame, offset + _DEPTH_COUNTS_AT)
            if buy + sell != (size - _PICTURE_FIXED_SIZE) // _DEPTH_ROW_SIZE:
                out.append(frame[offset:offset + size])
        offset += size
    return out


def depth_in_price_order(tick: market_pb2.Tick, auction: bool = False) -> bool:
    """Bids strictly falling and asks strictly rising, levels without quantity (an empty level's padding) aside, and
    the best bid under the best ask (counts off by a level hand a bid to the asks and cross the touch); a pre-open
    auction's book may cross."""
    bids = [d.price_paise for d in tick.bids if d.quantity]
    asks = [d.price_paise for d in tick.asks if d.quantity]
    crossed = bool(bids and asks) and bids[0] >= asks[0] and not auction
    return not crossed and all(a > b for a, b in pairwise(bids)) and all(a < b for a, b in pairwise(asks))


def _depth_key(message: SFeedScrip) -> tuple[Any, ...]:
    """What tells one market picture from another: its instrument and times (whole seconds), and its depth rows'
    quantities in the order carried (the same whichever side miscounted depth deals a row to): two pictures of one
    second differ there."""
    return (message.exchange_segment, message.instrument_token, message.last_trade_time, message.last_update_time,
            message.volume_traded_today, tuple(level.quantity for level in (*message.buy, *message.sell)))


def _paise(rupees: float) -> int:
    # The SDK hands out wire_int / divider as a float; with divider 100 the float is within one ulp of
    # paise / 100, so rounding recovers the exact integer the exchange sent (no float survives this edge).
    return round(rupees * 100)


def to_tick(message: Any, recv_ns: int) -> market_pb2.Tick | None:
    """An SDK feed message (lite, market picture with depth, or an index's) -> Tick in paise; None for other
    messages and for an instrument not traded yet (SFeed sends last_trade_time 0 / ltp 0 for "no value"). Raises
    ValueError for a corrupt message."""
    token = int(message.instrument_token) if getattr(message, "instrument_token", "").isdigit() else 0
    if token and isinstance(message, SFeedIndex):
        return _index_tick(message, token, recv_ns)
    if not token or not isinstance(message, (SFeedScrip, SFeedScripLite)):
        return None
    ltt, ltp = message.last_trade_time, _paise(message.last_traded_price)
    if ltt == 0 or ltp <= 0:
        return None  # no trade to report: a zero price or a 1970 time would open a bogus candle
    if not _LTT_MIN_S <= ltt < _LTT_MAX_S:
        raise ValueError(f"last_trade_time {ltt} is not epoch seconds")
    if isinstance(message, SFeedScripLite):
        if message.last_trade_qty < 0:
            raise ValueError("negative traded quantity")
        return market_pb2.Tick(token=token, exchange_segment=message.exchange_segment, ts_ns=ltt * NS,
                               ltp_paise=ltp, ltq=message.last_trade_qty, close_paise=_paise(message.close_price),
                               recv_ns=recv_ns)
    tick = market_pb2.Tick(
        token=token, exchange_segment=message.exchange_segment, ts_ns=ltt * NS, ltp_paise=ltp,
        ltq=message.last_trade_qty, volume=message.volume_traded_today, open_paise=_paise(message.open_price),
        high_paise=_paise(message.high_price), low_paise=_paise(message.low_price),
        close_paise=_paise(message.close_price), atp_paise=_paise(message.average_trade_price),
        open_interest=message.open_interest, recv_ns=recv_ns)
    if message.last_trade_qty < 0 or message.volume_traded_today < 0:
        raise ValueError("negative traded quantity or volume")
    if message.volume_traded_today > MAX_DAY_VOLUME:
        raise ValueError(f"day volume {message.volume_traded_today} is not plausible")
    if any(d.price < 0 or d.quantity < 0 or d.orders < 0 for d in (*message.buy, *message.sell)):
        raise ValueError("negative depth price, quantity or orders")
    for d in message.buy:
        tick.bids.add(price_paise=_paise(d.price), quantity=d.quantity, orders=d.orders)
    for d in message.sell:
        tick.asks.add(price_paise=_paise(d.price), quantity=d.quantity, orders=d.orders)
    if message.buy:
        tick.bid_paise, tick.bid_qty = tick.bids[0].price_paise, tick.bids[0].quantity
    if message.sell:
        tick.ask_paise, tick.ask_qty = tick.asks[0].price_paise, tick.asks[0].quantity
    return tick


def _index_tick(message: SFeedIndex, token: int, recv_ns: int) -> market_pb2.Tick | None:
    """An index's reading: its value as ltp_paise (index values have two decimals, as paise do), the day's open,
    high and low, the previous close; no volume. Stamped with its last_trade_time, or with its arrival when the feed
    leaves that at 0 (an index does not trade: its time is when it was computed)."""
    value = _paise(message.last_traded_price)
    if value <= 0:
        return None
    ltt = message.last_trade_time
    if ltt and not _LTT_MIN_S <= ltt < _LTT_MAX_S:
        raise ValueError(f"last_trade_time {ltt} is not epoch seconds")
    return market_pb2.Tick(token=token, exchange_segment=message.exchange_segment, ts_ns=ltt * NS if ltt else recv_ns,
                           ltp_paise=value, open_paise=_paise(message.open_price),
                           high_paise=_paise(message.high_price), low_paise=_paise(message.low_price),
                           close_paise=_paise(message.close_price), recv_ns=recv_ns)
