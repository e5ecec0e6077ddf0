"""Benchmark: SFeed decode throughput through the SDK path (split_batch + decode_packet + Tick conversion)
beside a plain struct.unpack baseline over the same frames, built by the simulator's encoder, in the same run."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from neo_api_client.websocket.feed.protocol import decode_packet, split_batch

from services.ingestion.sfeed_packets import to_tick
from services.simulator import sfeed_codec as codec
from shared.contracts import market_pb2
from shared.marketdata import SyntheticMarket, nse_instruments

PACKETS_PER_FRAME = 20
FRAMES = 500
_HEADER = struct.Struct("<HHbBBBB")
_MP_BODY = struct.Struct("<IqqqqqIIIIIqIIIIhiIdiIIIIIBI")
_ROW = struct.Struct("<qii")


def make_frames(level: int = codec.LEVEL_DEPTH) -> list[bytes]:
    market = SyntheticMarket(nse_instruments(), seed=11)
    frames = []
    for i in range(FRAMES):
        ticks = market.next_ticks(1_764_049_500 * 10**9 + i * 10**9, PACKETS_PER_FRAME)
        for t in ticks:
            t.bids.extend(market_pb2.DepthLevel(price_paise=t.bid_paise - 5 * k, quantity=10 + k, orders=1)
                          for k in range(5))
            t.asks.extend(market_pb2.DepthLevel(price_paise=t.ask_paise + 5 * k, quantity=10 + k, orders=1)
                          for k in range(5))
        frames.append(codec.batch([codec.encode(t, level) for t in ticks]))
    return frames


def sdk_path(frames: list[bytes]) -> int:
    """What KotakFeedSource does per frame: the SDK's de-framing and decoder, then Tick in paise."""
    dividers = {1: codec.DIVIDER}
    count = 0
    for frame in frames:
        for packet in split_batch(frame):
            if to_tick(decode_packet(packet, dividers), 0) is not None:
                count += 1
    return count


def baseline(frames: list[bytes]) -> int:
    """The floor: struct.unpack of header, fixed body and depth rows, nothing else."""
    count = 0
    for frame in frames:
        offset, n = 0, len(frame)
        while offset + 2 <= n:
            size = _HEADER.unpack_from(frame, offset)[0]
            body = _MP_BODY.unpack_from(frame, offset + 9)
            rows = offset + 144
            for _ in range(body[14] + body[15]):
                _ROW.unpack_from(frame, rows)
                rows += 16
            offset += size
            count += 1
    return count


def _rate(fn: Callable[[list[bytes]], int], frames: list[bytes], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += fn(frames)
    return done / elapsed


def run(seconds: float = 2.0) -> dict:
    frames = make_frames()
    assert sdk_path(frames[:1]) == baseline(frames[:1]) == PACKETS_PER_FRAME
    sdk = round(_rate(sdk_path, frames, seconds / 2))
    raw = round(_rate(baseline, frames, seconds / 2))
    return {"sdk_ticks_per_s": sdk, "baseline_ticks_per_s": raw, "baseline_over_sdk": round(raw / sdk, 2),
            "packets_per_frame": PACKETS_PER_FRAME, "depth_levels": 5}


if __name__ == "__main__":
    print(run())
