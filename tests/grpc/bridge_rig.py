"""A split-mode rig for stream-bridge tests: a real upstream (bus + GrpcServer, restartable) behind a TCP proxy that
cuts connections or refuses them, order-path bridges into a local bus, the faults to inject, and the checks.

Used by tests/grpc/test_fuzz_bridge.py (seeded fuzz and the regressions it found).
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass, field
from typing import Any

import grpc
from pydantic import SecretStr

from shared import rpc
from shared.bus import Bus, Topic
from shared.contracts import trading_pb2
from shared.grpc.auth import auth_metadata
from shared.grpc.bridge import Backoff, StreamBridge
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer

TOKEN = "fuzz-token"
SLOW_S = 0.05  # a stall long enough for a hub to cut off an order-path stream (its queue full)
FIRST_S, MAX_S = 0.01, 0.1  # the bridges' reconnect backoff
METHODS = {
    Topic.ORDER_UPDATES: rpc.method("OrderService", "StreamOrderUpdates"),
    Topic.ORDERS: rpc.method("RiskService", "StreamDecisions"),
    Topic.SIGNALS: rpc.method("StrategyService", "StreamSignals"),
}
SERVICES = ["OrderService", "RiskService", "StrategyService"]


def message(topic: Topic, seq: int, upstream: int, pad: int) -> Any:
    """A message that says which upstream incarnation sent it (client_order_id or strategy)."""
    if topic is Topic.ORDER_UPDATES:
        return trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", client_order_id=str(upstream), sequence=seq,
                                       reason="x" * pad)
    if topic is Topic.ORDERS:
        return trading_pb2.RiskDecision(accepted=True, strategy=str(upstream), sequence=seq, reason="x" * pad)
    return trading_pb2.Signal(strategy=str(upstream), sequence=seq, reason="x" * pad)


def sender(msg: Any) -> int:
    return int(msg.client_order_id if isinstance(msg, trading_pb2.OrderUpdate) else msg.strategy)


def fast_channel(target: str) -> grpc.aio.Channel:
    """The bridges' channel options, but the channel looks for its peer again within 0.1 s (test time)."""
    quick = {"grpc.initial_reconnect_backoff_ms": 20, "grpc.min_reconnect_backoff_ms": 20,
             "grpc.max_reconnect_backoff_ms": 100}
    options = [(k, quick.get(k, v)) for k, v in GrpcSettings().channel_options()]
    return grpc.aio.insecure_channel(target, options)


class Proxy:
    """127.0.0.1 TCP proxy to the upstream's port: cut() aborts every connection (mid-frame, wherever the bytes
    are); while `refusing`, new connections are dropped at once (the upstream looks down)."""

    def __init__(self) -> None:
        self.target_port = 0
        self.refusing = False
        self.port = 0
        self._conns: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        ends = {writer.transport, up_writer.transport}
        self._conns |= ends
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._conns -= ends

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        for transport in list(self._conns):
            transport.abort()

    async def stop(self) -> None:
        self.refusing = True
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@dataclass
class Upstream:
    """One incarnation of the upstream process: its bus and its server."""

    bus: Bus
    server: GrpcServer
    task: asyncio.Task[None]
    crashed: bool = False


@dataclass
class Stream:
    """Ground truth and what reached the local bus for one topic."""

    published: list[int] = field(default_factory=list)  # distinct sequences, first-publish order
    senders: dict[int, set[int]] = field(default_factory=dict)  # sequence -> the upstreams that published it
    delivered: list[int] = field(default_factory=list)
    sent_by: dict[int, int] = field(default_factory=dict)  # delivered sequence -> the upstream it came from
    gaps: list[int] = field(default_factory=list)  # after_sequence of every reported gap
    # Of those, the ones reported on reaching a restarted upstream that had not ended the stream cleanly and keeps
    # no record of what it published (all but the OMS): such a gap may be reported though none was lost.
    possible: list[int] = field(default_factory=list)


class Harness:
    def __init__(self, rng: random.Random, replay_size: int | None = None, pad: int | None = None) -> None:
        self.rng = rng
        self.replay_size = rng.choice((2, 4, 8, 32)) if replay_size is None else replay_size
        # Big messages fill the socket buffers and flow control, so a stalled bridge's upstream queue fills and its
        # hub cuts the stream off (to be resumed from the ring).
        self.pad = rng.choice((0, 20_000, 300_000, 300_000)) if pad is None else pad
        self.settings = GrpcSettings(auth_token=SecretStr(TOKEN), replay_size=self.replay_size)
        self.proxy = Proxy()
        self.local = Bus(default_maxsize=rng.choice((1, 2, 8)))
        self.streams = {topic: Stream() for topic in METHODS}
        self.next_seq = {topic: rng.randint(1, 1000) for topic in METHODS}
        self.reading = asyncio.Event()
        self.reading.set()
        self.upstreams: list[Upstream] = []
        self.bridges: dict[Topic, StreamBridge] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.outages: list[tuple[int, float]] = []  # (reconnect attempts, seconds) per outage
        self.log: list[str] = []

    # -- set-up and tear-down ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.proxy.start()
        await self.start_upstream()
        for topic in METHODS:
            self.local.subscribe(topic, f"collector:{topic.value}", self.collector(topic))
        self.local.subscribe(Topic.NOTIFICATIONS, "gaps", self.on_notification)
        self.tasks.append(asyncio.create_task(self.local.run()))
        self.channel = fast_channel(f"127.0.0.1:{self.proxy.port}")
        for topic, method in METHODS.items():
            bridge = StreamBridge(self.local, self.channel, method, metadata=auth_metadata(TOKEN),
                                  backoff=Backoff(FIRST_S, MAX_S))
            self.bridges[topic] = bridge
            self.tasks.append(asyncio.create_task(bridge.run(), name=f"bridge:{topic.value}"))
        # "Live from now" is from the stream's headers (neopulse-sequence): what is published before a bridge read
        # them is not promised to it (nor to any gRPC client).
        await self.until(lambda: all(b.connected.is_set() for b in self.bridges.values()), "every bridge connected")
        await self.until_attached()

    async def start_upstream(self) -> None:
        bus = Bus()
        server = GrpcServer(bus, SERVICES, self.settings, host="127.0.0.1")
        if self.upstreams:  # the OMS's ledger: how far its earlier processes got (the others keep no record)
            updates = self.streams[Topic.ORDER_UPDATES].published
            server.hubs[METHODS[Topic.ORDER_UPDATES]].previous = {"all": max(updates, default=0)}
        await server.start()
        server.set_all_serving()
        assert server.bound_port is not None
        self.proxy.target_port = server.bound_port
        self.upstreams.append(Upstream(bus, server, asyncio.create_task(bus.run())))

    async def stop_upstream(self, grace: float) -> None:
        old = self.upstreams[-1]
        await old.server.stop(grace)
        old.task.cancel()
        await asyncio.gather(old.task, return_exceptions=True)

    def collector(self, topic: Topic) -> Any:
        async def collect(msg: Any) -> None:
            await self.reading.wait()
            self.streams[topic].delivered.append(msg.sequence)
            self.streams[topic].sent_by[msg.sequence] = sender(msg)
        return collect

    async def on_notification(self, note: Any) -> None:
        topic = next(t for t, m in METHODS.items() if m == note.fields["method"])
        self.streams[topic].gaps.append(int(note.fields["after_sequence"]))
        if note.fields["cause"] == "unrecorded":
            self.streams[topic].possible.append(int(note.fields["after_sequence"]))

    @property
    def hubs(self) -> list[Any]:
        return [self.upstreams[-1].server.hubs[m] for m in METHODS.values()]

    async def until(self, predicate: Any, what: str, within: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            assert loop.time() < deadline, f"{what} within {within} s\n{self.streams}\n" + "\n".join(self.log)
            await asyncio.sleep(0.002)

    async def until_attached(self) -> None:
        await self.until(lambda: all(h.listener_count == 1 for h in self.hubs), "every bridge attached")

    # -- faults -----------------------------------------------------------------------------------------------
    async def publish(self, topic: Topic, seqs: list[int]) -> None:
        stream, now = self.streams[topic], len(self.upstreams) - 1
        for seq in seqs:
            if seq not in stream.senders:
                stream.published.append(seq)
            stream.senders.setdefault(seq, set()).add(now)
            await self.upstreams[-1].bus.publish(topic, message(topic, seq, now, self.pad))

    async def publish_new(self, n: int) -> None:
        for _ in range(n):
            topic = self.rng.choice(list(METHODS))
            self.next_seq[topic] += self.rng.choice((1, 1, 1, 2, 7))  # the odd gap: a sequence not published
            await self.publish(topic, [self.next_seq[topic]])

    async def settle(self) -> None:
        """Once every bridge is attached (the consumers reading), one more message per topic must come through; again
        if a gap was reported meanwhile (a bridge whose resume point was lost may skip to live after it)."""
        for _ in range(3):
            await self.until_attached()
            gaps = {topic: len(s.gaps) for topic, s in self.streams.items()}
            for topic in METHODS:
                self.next_seq[topic] += 1
                await self.publish(topic, [self.next_seq[topic]])
            await self.until(functools.partial(self.through, gaps), "bridges caught up")
            if self.through({}):
                return
        raise AssertionError("a gap reported at every try to catch up\n" + "\n".join(self.log))

    def through(self, gaps_before: dict[Topic, int]) -> bool:
        """Every topic's newest message delivered, or a gap reported on it since `gaps_before` was taken."""
        return all(s.delivered[-1:] == s.published[-1:] or len(s.gaps) > gaps_before.get(topic, len(s.gaps))
                   for topic, s in self.streams.items())

    async def restart(self, faults_active: bool) -> None:
        crash = faults_active or self.rng.random() < 0.5
        if not crash:
            await self.settle()
        self.upstreams[-1].crashed = crash
        self.log.append(f"restart ({'crash' if crash else 'graceful'})")
        await self.stop_upstream(0 if crash else 0.2)
        await self.start_upstream()
        for topic, stream in self.streams.items():  # a restarted upstream may repeat its tail, or older work
            if topic is Topic.ORDER_UPDATES:  # not the OMS: it numbers on from its ledger
                continue
            tail = stream.published[len(stream.published) - self.rng.randint(0, 3):] if self.rng.random() < 0.4 else []
            older = self.rng.sample(stream.delivered, min(len(stream.delivered), self.rng.randint(0, 2)))
            self.log.append(f"  {topic.value} repeats {tail} and {older}")
            await self.publish(topic, [*tail, *older])

    async def go_down(self) -> None:
        """Refuse connections and cut the open ones; returns once the upstream saw every stream end."""
        self.proxy.refusing = True
        self.proxy.cut()
        await self.until(lambda: all(h.listener_count == 0 for h in self.hubs), "streams ended at the upstream")

    async def outage(self, kind: str) -> None:
        """The upstream unreachable (or refusing our token) for a while, publishing meanwhile."""
        attempts = sum(b.attempts for b in self.bridges.values())
        started = asyncio.get_running_loop().time()
        if kind == "auth":
            for bridge in self.bridges.values():
                bridge.metadata = auth_metadata("wrong-token")
        else:
            self.proxy.refusing = True
        self.proxy.cut()
        self.log.append(f"outage {kind}")
        for _ in range(self.rng.randint(1, 4)):
            await self.publish_new(self.rng.randint(0, self.replay_size + 2))
            await asyncio.sleep(self.rng.choice((0.005, 0.02, 0.08)))
        for bridge in self.bridges.values():
            bridge.metadata = auth_metadata(TOKEN)
        self.proxy.refusing = False
        took = asyncio.get_running_loop().time() - started
        self.outages.append((sum(b.attempts for b in self.bridges.values()) - attempts, took))

    async def step(self) -> None:
        action = self.rng.random()
        if action < 0.35:
            await self.publish_new(self.rng.randint(1, 5))
        elif action < 0.45:
            self.log.append("cut")
            self.proxy.cut()
        elif action < 0.55:
            await self.restart(faults_active=not self.reading.is_set())
        elif action < 0.65:
            await self.outage(self.rng.choice(("down", "auth")))
        elif action < 0.77:
            (self.reading.clear if self.reading.is_set() else self.reading.set)()
            self.log.append("local consumers " + ("read" if self.reading.is_set() else "stall"))
            if not self.reading.is_set() and self.pad:  # one stream far behind: its hub cuts it off
                topic = self.rng.choice(list(METHODS))
                for _ in range(self.rng.randint(20, 40)):
                    self.next_seq[topic] += 1
                    await self.publish(topic, [self.next_seq[topic]])
                await asyncio.sleep(SLOW_S * 2)
        elif action < 0.87:  # a duplicated delivery: the upstream repeats what it sent (out of order, too)
            for topic, stream in self.streams.items():
                older = self.rng.sample(stream.delivered, min(len(stream.delivered), self.rng.randint(1, 3)))
                self.log.append(f"{topic.value} repeats {older}")
                await self.publish(topic, older)
        else:
            await asyncio.sleep(self.rng.choice((0, 0.005, SLOW_S * 2)))

    # -- checks -----------------------------------------------------------------------------------------------
    async def quiesce(self) -> None:
        """No more faults: once every bridge is attached, one last message per topic must come through."""
        self.reading.set()
        await self.settle()

    def check(self, topic: Topic) -> None:
        s = self.streams[topic]
        where = f"{topic.value}: published {s.published}\ndelivered {s.delivered}\ngaps {s.gaps}\n" + "\n".join(
            self.log)
        assert all(a < b for a, b in zip(s.delivered, s.delivered[1:], strict=False)), "repeated or reordered\n" + where
        assert set(s.delivered) <= set(s.published), where
        delivered = set(s.delivered)
        for seq in s.published:
            if seq in delivered:
                continue
            in_gap = any(after < seq and not any(after < d < seq for d in delivered) for after in s.gaps)
            # A crashed upstream takes what it had not sent yet with it: nothing it sent after `seq` arrived.
            unsent_tail = any(self.upstreams[j].crashed and not any(d > seq and s.sent_by[d] == j for d in delivered)
                              for j in s.senders[seq])
            assert in_gap or unsent_tail, (f"sequence {seq} (sent by {s.senders[seq]}) lost without a reported gap; "
                                           f"delivered from {s.sent_by}\n" + where)
        for after in set(s.gaps) - set(s.possible):  # a reported gap is real: something after it never arrived
            assert any(p > after and p not in delivered for p in s.published), f"a false gap at {after}\n" + where
        bridge = self.bridges[topic]
        assert bridge.gaps == len(s.gaps), where

    def check_no_reconnect_storm(self) -> None:
        # Backoff doubles from FIRST_S to MAX_S (jitter 0.8): about five tries to reach MAX_S, then one per 0.08 s.
        for attempts, took in self.outages:
            assert attempts <= len(METHODS) * (7 + took / (MAX_S * 0.8)), f"{attempts} reconnects in {took:.2f} s"

    async def shutdown(self) -> None:
        """Cancel the bridges (maybe while they wait for a stalled consumer): no stream may stay open."""
        bridges = [t for t in self.tasks if t.get_name().startswith("bridge:")]
        for task in bridges:
            task.cancel()
        _, pending = await asyncio.wait(bridges, timeout=2)
        assert not pending, "a bridge did not stop when cancelled"
        await self.until(lambda: all(h.listener_count == 0 for h in self.hubs), "server streams ended on cancel",
                         within=2)

    async def close(self) -> None:
        self.reading.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if hasattr(self, "channel"):
            await self.channel.close()
        await self.stop_upstream(0)
        await self.proxy.stop()
