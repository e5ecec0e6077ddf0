"""SFeed native_batch ENCODER: Tick protos -> packed little-endian packets and batched frames.

Our own writer of the wire format the SDK decodes (neo_api_client/websocket/feed/protocol.py).
"""

from __future__ import annotations

import struct

from shared.clock import NS
from shared.contracts import market_pb2

# Wire constants, as the SDK's decoder reads them.
MSG_MARKET_PICTURE = 7208
MSG_INDEX = 7207
MSG_AUTH_RESPONSE = 1117
MSG_SUBSCRIBE_ACK = 1109
LEVEL_LITE = 1
LEVEL_TOUCH_LINE = 4
LEVEL_DEPTH = 8
EXCHANGE_IDS = {"nse_cm": 1, "nse_fo": 2, "bse_cm": 5, "bse_fo": 6, "mcx_fo": 9}
# Prices travel as integers: rupees * divider. With divider 100 the integer IS the paise value.
DIVIDER = 100

_HEADER = struct.Struct("<HHbBBBB")
_MINI_BODY = struct.Struct("<IqIqIiiIBI")
_MP_BODY = struct.Struct("<IqqqqqIIIIIqIIIIhiIdiIIIIIBI")
_DEPTH_ROW = struct.Struct("<qii")
_INDEX_BODY = struct.Struct("<IiiiiiQiiidBi21s")
INDEX_PRECISION = 2  # index values have two decimals
HEADER_SIZE = _HEADER.size


def _pct(ltp: int, close: int) -> int:
    # net change percent travels * 100 (the decoder divides by 100).
    return (ltp - close) * 10_000 // close if close else 0


def encode_lite(tick: market_pb2.Tick, seq: int = 0) -> bytes:
    """One mini touch-line packet (level 1)."""
    body = _MINI_BODY.pack(tick.token, tick.ts_ns // NS, tick.ltp_paise, tick.ltq, tick.close_paise,
                           _pct(tick.ltp_paise, tick.close_paise), tick.ltp_paise - tick.close_paise, 1, 2, 1)
    size = HEADER_SIZE + len(body)
    header = _HEADER.pack(size, MSG_MARKET_PICTURE, EXCHANGE_IDS.get(tick.exchange_segment, 1), LEVEL_LITE, 0,
                          seq & 0xFF, 0)
    return header + body


def _depth(tick: market_pb2.Tick) -> tuple[list[market_pb2.DepthLevel], list[market_pb2.DepthLevel]]:
    bids = list(tick.bids) or [market_pb2.DepthLevel(price_paise=tick.bid_paise, quantity=tick.bid_qty, orders=1)]
    asks = list(tick.asks) or [market_pb2.DepthLevel(price_paise=tick.ask_paise, quantity=tick.ask_qty, orders=1)]
    return bids, asks


def encode_market_picture(tick: market_pb2.Tick, level: int = LEVEL_DEPTH, seq: int = 0) -> bytes:
    """One market-picture packet: touch line (level 4, one row a side) or depth (level 8, all rows)."""
    bids, asks = _depth(tick)
    if level == LEVEL_TOUCH_LINE:
        bids, asks = bids[:1], asks[:1]
    total_buy = sum(b.quantity for b in bids)
    total_sell = sum(a.quantity for a in asks)
    ts = tick.ts_ns // NS
    body = _MP_BODY.pack(
        tick.token, total_buy, total_sell, tick.volume, ts, ts, tick.open_paise, tick.close_paise,
        tick.high_paise, tick.low_paise, tick.ltp_paise, tick.ltq, tick.atp_paise, 0, len(bids), len(asks), 0,
        _pct(tick.ltp_paise, tick.close_paise), tick.open_interest, float(tick.volume * tick.atp_paise),
        tick.ltp_paise - tick.close_paise, tick.close_paise * 12 // 10, tick.close_paise * 8 // 10,
        tick.high_paise, tick.low_paise, 1, 2, 1)
    rows = b"".join(_DEPTH_ROW.pack(r.quantity, r.price_paise, r.orders) for r in (*bids, *asks))
    size = HEADER_SIZE + len(body) + len(rows)
    header = _HEADER.pack(size, MSG_MARKET_PICTURE, EXCHANGE_IDS.get(tick.exchange_segment, 1), level, 0,
                          seq & 0xFF, 0)
    return header + body + rows


def encode_index(tick: market_pb2.Tick, name: str, seq: int = 0) -> bytes:
    """One IndexMessage packet: the index value travels as ltp_paise, close_paise is the previous close.

    The decoder routes it by message code alone, so the level byte is 0. The SDK reads the index multiplier as a
    price (wire / divider): DIVIDER reads as 1."""
    close = tick.close_paise
    body = _INDEX_BODY.pack(
        tick.token, tick.open_paise, close, tick.high_paise, tick.low_paise, tick.ltp_paise, tick.ts_ns // NS,
        max(tick.high_paise, close * 12 // 10), min(tick.low_paise or close, close * 8 // 10),
        _pct(tick.ltp_paise, close), 0.0, INDEX_PRECISION, DIVIDER, name.encode())
    size = HEADER_SIZE + len(body)
    header = _HEADER.pack(size, MSG_INDEX, EXCHANGE_IDS.get(tick.exchange_segment, 1), 0, 0, seq & 0xFF, 0)
    return header + body


def encode(tick: market_pb2.Tick, level: int, seq: int = 0) -> bytes:
    return encode_lite(tick, seq) if level == LEVEL_LITE else encode_market_picture(tick, level, seq)


def batch(packets: list[bytes]) -> bytes:
    """A binary frame is packets laid end to end (each starts with its own uint16 length)."""
    return b"".join(packets)


def auth_response() -> dict:
    return {"message_code": MSG_AUTH_RESPONSE, "format": "native_batch", "stat": "Ok",
            "exchanges": {name: {"value": ex_id, "divider": DIVIDER} for name, ex_id in EXCHANGE_IDS.items()}}
