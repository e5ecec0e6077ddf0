"""The simulator's two websockets: SFeed market data (/feed, native_batch) and the order feed (/orders).

Called by aiohttp; reads the Simulator's sessions, market and indices, encodes with sfeed_codec.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from services.simulator import sfeed_codec as codec
from shared.contracts import market_pb2
from shared.indices import IndexBoard

if TYPE_CHECKING:
    from services.simulator.server import Simulator

SUBSCRIBE_LEVELS = {"subscribeScripsLite": codec.LEVEL_LITE, "subscribeScrips": codec.LEVEL_TOUCH_LINE,
                    "subscribeDepth": codec.LEVEL_DEPTH, "subscribeFullDepth": codec.LEVEL_DEPTH}
UNSUBSCRIBE_LEVELS = {"unsubscribeScripsLite": codec.LEVEL_LITE, "unsubscribeScrips": codec.LEVEL_TOUCH_LINE,
                      "unsubscribeDepth": codec.LEVEL_DEPTH, "unsubscribeFullDepth": codec.LEVEL_DEPTH}
INDEX_EVENTS = frozenset({"subscribeIndices", "unsubscribeIndices", "snapshotIndices"})


class FeedClient:
    """One connected /feed socket and its subscriptions (scrips: token -> levels; indices: index tokens)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.subs: dict[int, set[int]] = {}
        self.index_subs: set[int] = set()
        self.seq = 0

    async def send_ticks(self, ticks: list[market_pb2.Tick]) -> None:
        packets = []
        for tick in ticks:
            for level in sorted(self.subs.get(tick.token, ())):
                self.seq += 1
                packets.append(codec.encode(tick, level, self.seq))
        await self._send(packets)

    async def send_indices(self, readings: list[market_pb2.Tick], board: IndexBoard) -> None:
        packets = []
        for reading in readings:
            if reading.token in self.index_subs:
                self.seq += 1
                packets.append(codec.encode_index(reading, board.specs[reading.token].name, self.seq))
        await self._send(packets)

    async def _send(self, packets: list[bytes]) -> None:
        if packets and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(codec.batch(packets))


def _tokens(inputtoken: str) -> list[int]:
    out = []
    for item in inputtoken.split(","):
        _, _, token = item.partition("|")
        if token.strip().isdigit():
            out.append(int(token))
    return out


async def _control(client: FeedClient, sim: Simulator, data: dict) -> None:
    event = data.get("event", "")
    if event in INDEX_EVENTS:
        await _index_control(client, sim, event, str(data.get("inputtoken", "")))
        return
    tokens = _tokens(str(data.get("inputtoken", "")))
    if event in SUBSCRIBE_LEVELS:
        level = SUBSCRIBE_LEVELS[event]
        for token in tokens:
            client.subs.setdefault(token, set()).add(level)
        symbols = {f"{sim.exchange.instruments[t].exchange_segment}|{t}": sim.exchange.instruments[t].symbol
                   for t in tokens if t in sim.exchange.instruments}
        await client.ws.send_str(json.dumps({"message_code": codec.MSG_SUBSCRIBE_ACK, "trading_symbols": symbols}))
        # Like SFeed, a subscribe is answered with the current picture of each instrument.
        snapshot = [sim.exchange.market[t] for t in tokens if t in sim.exchange.market]
        packets = [codec.encode(t, level, 0) for t in snapshot]
        if packets:
            await client.ws.send_bytes(codec.batch(packets))
        await _close_if_faulted(client, sim)
    elif event in UNSUBSCRIBE_LEVELS:
        for token in tokens:
            client.subs.get(token, set()).discard(UNSUBSCRIBE_LEVELS[event])


def _index_names(inputtoken: str) -> list[tuple[str, str]]:
    """The "segment|Name" items as sent (Kotak subscribes indices by name; a name may hold spaces and "&")."""
    out = []
    for item in inputtoken.split(","):
        segment, sep, name = item.partition("|")
        if sep and name.strip():
            out.append((segment, name))
    return out


async def _index_control(client: FeedClient, sim: Simulator, event: str, inputtoken: str) -> None:
    """subscribeIndices / snapshotIndices: the ack (keyed by the names as sent), then the current readings;
    unsubscribeIndices. An unknown name is left out, as an unknown scrip token is."""
    found = {f"{segment}|{name}": spec for segment, name in _index_names(inputtoken)
             if (spec := sim.indices.find(segment, name)) is not None}
    tokens = {spec.token for spec in found.values()}
    if event == "unsubscribeIndices":
        client.index_subs -= tokens
        return
    if event == "subscribeIndices":
        client.index_subs |= tokens
    symbols = {key: spec.name for key, spec in found.items()}
    await client.ws.send_str(json.dumps({"message_code": codec.MSG_SUBSCRIBE_ACK, "trading_symbols": symbols}))
    readings = [sim.indices.current(sim.indices.specs[t], sim.clock.now_ns()) for t in sorted(tokens)]
    packets = [codec.encode_index(r, sim.indices.specs[r.token].name, 0) for r in readings]
    if packets:
        await client.ws.send_bytes(codec.batch(packets))
    if event == "subscribeIndices":
        await _close_if_faulted(client, sim)


async def _close_if_faulted(client: FeedClient, sim: Simulator) -> None:
    if sim.close_feeds_after_subscribe:  # a server that accepts, then refuses: closed right after the snapshot
        sim.close_feeds_after_subscribe -= 1
        await client.ws.close()


async def feed_handler(request: web.Request, sim: Simulator) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    client = FeedClient(ws)
    authed = False
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if not authed:
                if not sim.sid_valid(data.get("auth")):
                    await ws.send_str(json.dumps({"message_code": 401, "stat": "Not_Ok",
                                                  "emsg": "session expired or invalid"}))
                    break
                authed = True
                await ws.send_str(json.dumps(codec.auth_response()))
                sim.feed_sockets.add(client)
                continue
            await _control(client, sim, data)
    finally:
        sim.feed_sockets.discard(client)
    return ws


_AUTH = re.compile(r"Authorization:([^,}]*),Sid:([^,}]*)")


async def orders_handler(request: web.Request, sim: Simulator) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            match = _AUTH.search(msg.data)
            if ws not in sim.order_sockets:
                if not match or not sim.session_valid(match.group(1), match.group(2)):
                    await ws.send_str(json.dumps({"type": "cn", "ak": "nk", "msg": "invalid session"}))
                    break
                sim.order_sockets.add(ws)
                sim.order_feed_logins += 1
                await ws.send_str(json.dumps({"type": "cn", "ak": "ok"}))
                if sim.close_order_feeds_after_ack:  # the close right behind the acknowledgement
                    sim.close_order_feeds_after_ack -= 1
                    await ws.close()
    finally:
        sim.order_sockets.discard(ws)
    return ws
