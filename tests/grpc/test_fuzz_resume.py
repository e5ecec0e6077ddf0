"""Seeded fuzz of order-path stream resume: a real Bus and TopicHub behind the real stream handler, in process.

Each seed publishes order updates with increasing sequences, opens streams at random resume points, pauses
some (a slow client), closes and reopens others from the last sequence they received, and checks that no
stream ever skips, repeats or reorders a message without ending in DATA_LOSS, and that neopulse-sequence
says where the stream stands. The ground truth is what the hub has taken off the bus, recorded by a thin
wrapper around its bus handler.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from shared import rpc
from shared.bus import Bus, Topic
from shared.contracts import trading_pb2
from shared.errors import MessagesLost
from shared.grpc.bridge import method_types
from shared.grpc.hub import TopicHub
from shared.grpc.servicers import SEQUENCE_KEY, stream_handler

METHOD = rpc.method("OrderService", "StreamOrderUpdates")
REQUEST, BATCH = method_types(METHOD)
SLOW_S = 0.01  # a pause long enough for a paused client's queue to fill and be cut off
SEEDS = 80


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class FakeContext:
    """The ServicerContext calls a stream handler makes. Records what the hub had taken in when the stream attached
    (send_initial_metadata and abort come right after hub.attach, with no await in between)."""

    def __init__(self, processed: list[int]) -> None:
        self._processed = processed
        self.seen_at_attach: list[int] | None = None
        self.metadata: dict[str, str] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def _snapshot(self) -> None:
        if self.seen_at_attach is None:
            self.seen_at_attach = list(self._processed)

    async def send_initial_metadata(self, metadata: Any) -> None:
        self._snapshot()
        self.metadata = dict(metadata)

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        self._snapshot()
        raise Aborted(code, details)


@dataclass
class Attempt:
    after: int
    ctx: FakeContext
    start: int  # index into Client.got where this attempt's messages begin
    end: grpc.StatusCode | None = None  # None: still open, or closed by the client
    checked: bool = False


@dataclass
class Client:
    """One logical consumer: its first stream and every reopening after it (until a DATA_LOSS)."""

    name: str
    got: list[int] = field(default_factory=list)
    base: int | None = None  # the effective resume point of its first attempt: it must see everything after it
    attempts: list[Attempt] = field(default_factory=list)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.task is not None and not self.task.done()


def update(seq: int) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq)


class Harness:
    def __init__(self, rng: random.Random, replay_size: int) -> None:
        self.rng = rng
        self.replay_size = replay_size
        self.bus = Bus()
        self.hub = TopicHub(self.bus, Topic.ORDER_UPDATES, replay_size=replay_size)
        self.processed: list[int] = []  # sequences in the order the hub took them off the bus
        original = self.hub._sub.handler
        assert original is not None

        async def recording(msg: Any) -> None:
            self.processed.append(msg.sequence)  # no await before the hub's own (synchronous) ring update
            await original(msg)

        self.hub._sub.handler = recording
        self.handle = stream_handler(self.hub, METHOD, BATCH)
        self.next_seq = rng.randint(1, 3)
        self.clients: list[Client] = []
        self.log: list[str] = []
        self._bus_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self._bus_task = asyncio.create_task(self.bus.run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            if c.task is not None:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in self.clients if c.task is not None), return_exceptions=True)
        assert self._bus_task is not None
        self._bus_task.cancel()
        await asyncio.gather(self._bus_task, return_exceptions=True)
        self.hub.unsubscribe()

    # -- actions ----------------------------------------------------------------------------------------------
    async def publish(self, n: int) -> None:
        for _ in range(n):
            await self.bus.publish(Topic.ORDER_UPDATES, update(self.next_seq))
            self.next_seq += self.rng.choice((1, 1, 1, 2, 5))

    def resume_point(self) -> int:
        held = self.processed[-self.replay_size:] if self.replay_size else []
        evicted = self.processed[:len(self.processed) - len(held)]
        newest = self.processed[-1] if self.processed else 0
        choices: list[int] = [0, -1, newest or 0, newest + self.rng.randint(1, 5)]
        if held:
            choices.append(self.rng.choice(held))
        if evicted:
            choices += [evicted[-1], evicted[-1] - 1 if evicted[-1] > 1 else 1, self.rng.choice(evicted)]
        return self.rng.choice(choices)

    def start(self, c: Client, after: int) -> None:
        ctx = FakeContext(self.processed)
        attempt = Attempt(after, ctx, len(c.got))
        c.attempts.append(attempt)
        c.reading.set()
        self.log.append(f"{c.name} opens after_sequence={after}")

        async def consume() -> None:
            stream = self.handle(REQUEST(after_sequence=after), ctx)
            try:
                async for batch in stream:
                    c.got.extend(u.sequence for u in batch.updates)
                    await c.reading.wait()
                attempt.end = grpc.StatusCode.OK
            except Aborted as exc:
                attempt.end = exc.code
            finally:
                await stream.aclose()

        c.task = asyncio.create_task(consume(), name=c.name)

    def open_new(self) -> None:
        c = Client(f"c{len(self.clients)}")
        self.clients.append(c)
        self.start(c, self.resume_point())

    def reopen(self, c: Client) -> None:
        """Resume as a bridge does: after the last sequence received, else from where the first attempt stood."""
        if c.got:
            after = c.got[-1]
        else:
            assert c.base is not None
            after = c.base if c.base > 0 else -1
        self.start(c, after)

    async def close(self, c: Client) -> None:
        assert c.task is not None
        self.log.append(f"{c.name} closes by the client after {c.got[-1:] or 'nothing'}")
        c.task.cancel()
        await asyncio.gather(c.task, return_exceptions=True)

    def state(self) -> str:
        lines = [*self.log, f"hub took {self.processed}, ring {[u.sequence for u in self.hub.ring]}"]
        for c in self.clients:
            lines.append(f"{c.name}: base {c.base} got {c.got} open {c.open} "
                         f"attempts {[(a.after, a.end, a.ctx.metadata) for a in c.attempts]}")
        return "\n".join(lines)

    # -- checks -----------------------------------------------------------------------------------------------
    def check_attempt(self, c: Client, attempt: Attempt) -> bool:
        """The attempt's start (DATA_LOSS or not, neopulse-sequence); True when it started a stream."""
        seen = attempt.ctx.seen_at_attach
        assert seen is not None, f"{c.name}: the stream never attached"
        after, size = attempt.after, self.replay_size
        newest = seen[-1] if seen else 0
        effective = newest if after == 0 else max(after, 0)
        evicted = seen[:max(0, len(seen) - size)]
        must_lose = after != 0 and any(s > effective for s in evicted)
        lost = attempt.end == grpc.StatusCode.DATA_LOSS
        assert lost == must_lose, (
            f"{c.name} after_sequence={after}: DATA_LOSS={lost}, expected {must_lose} (hub had taken {seen}, "
            f"ring of {size})")
        if lost:
            return False
        published = int(attempt.ctx.metadata[SEQUENCE_KEY])
        assert published == newest, f"{c.name}: neopulse-sequence {published}, but the hub had taken {seen}"
        if c.base is None:
            c.base = effective
        return True

    def check_client(self, c: Client, complete: bool) -> None:
        """Everything the client received across its reopenings is exactly what followed its first resume point,
        in order, from the start; `complete`: and nothing is missing at the end."""
        if c.base is None:
            return
        expected = [s for s in self.processed if s > c.base]
        assert c.got == expected[:len(c.got)], (
            f"{c.name} from after {c.base}: got {c.got}, expected a prefix of {expected}\n" + "\n".join(self.log))
        if complete:
            assert c.got == expected, f"{c.name}: got {c.got}, expected {expected}\n" + "\n".join(self.log)

    def settle(self, c: Client) -> None:
        """Check a client's newest stream once it attached; reopen it when it ended on its own (cut off, or the
        server closed it), or replace it with a new live client after a DATA_LOSS."""
        attempt = c.attempts[-1]
        if attempt.ctx.seen_at_attach is None:
            return
        if not attempt.checked:
            attempt.checked = True
            if not self.check_attempt(c, attempt):
                self.log.append(f"{c.name} ended with DATA_LOSS")
                self.check_client(c, complete=False)
                self.clients.remove(c)  # it reloads its state (ListOrders) and starts a new live stream
                self.clients.append(Client(c.name + "'"))
                self.start(self.clients[-1], 0)
                return
        self.check_client(c, complete=False)
        if not c.open and attempt.end is not None:
            self.log.append(f"{c.name} ended with {attempt.end.name} after {c.got[-1:] or 'nothing'}")
            self.reopen(c)


async def run_seed(seed: int) -> None:
    rng = random.Random(seed)
    async with Harness(rng, rng.choice((0, 1, 2, 3, 4, 6, 8, 16))) as h:
        for _ in range(rng.randint(0, 6)):
            await h.publish(1)
        for _ in range(rng.randint(30, 60)):
            action = rng.random()
            if action < 0.35:
                await h.publish(rng.randint(1, 4))
            elif action < 0.5 and len([c for c in h.clients if c.open]) < 4:
                h.open_new()
            elif action < 0.62 and h.clients:
                c = rng.choice(h.clients)
                (c.reading.clear if c.reading.is_set() else c.reading.set)()
                h.log.append(f"{c.name} {'reads' if c.reading.is_set() else 'pauses'}")
            elif action < 0.72 and any(c.open for c in h.clients):
                c = rng.choice([c for c in h.clients if c.open])
                await h.close(c)
                attempt = c.attempts[-1]
                if attempt.ctx.seen_at_attach is None:  # closed before the handler ran: open it again
                    c.attempts.pop()
                    h.start(c, attempt.after)
                else:
                    h.settle(c)  # checks it; reopens it if it had ended on its own meanwhile
                    if c.attempts[-1] is attempt and attempt.end is None:
                        h.reopen(c)
            elif action < 0.8:
                await h.bus.drain()
            else:
                await asyncio.sleep(rng.choice((0, 0, 0.002, SLOW_S * 2)))
            for c in list(h.clients):
                h.settle(c)

        # Quiesce: every client reads until it has everything (reopening when cut off or ended).
        for c in h.clients:
            c.reading.set()
        assert await h.bus.drain(within_s=5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            for c in list(h.clients):
                h.settle(c)
            if all(c.attempts[-1].checked and c.got == [s for s in h.processed if s > (c.base or 0)]
                   for c in h.clients):
                break
            assert loop.time() < deadline, "streams did not catch up\n" + h.state()
            await asyncio.sleep(0.002)
        for c in h.clients:
            h.check_client(c, complete=True)


# -- regressions shrunk from failing seeds ------------------------------------------------------------------------

async def started_bus() -> tuple[Bus, asyncio.Task[None]]:
    bus = Bus()
    return bus, asyncio.create_task(bus.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_without_a_replay_ring_neopulse_sequence_is_still_the_highest_published():
    """replay_size = 0 (allowed by [grpc]) left hub.last_sequence at 0, so every stream said neopulse-sequence 0
    although sequences up to 3 had been published; a bridge would then resume from -1 after a reconnect."""
    bus, task = await started_bus()
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=0)
    for seq in (1, 2, 3):
        await bus.publish(Topic.ORDER_UPDATES, update(seq))
    await bus.drain()
    ctx = FakeContext([])
    stream = stream_handler(hub, METHOD, BATCH)(REQUEST(after_sequence=0), ctx)
    pending = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)

    assert ctx.metadata[SEQUENCE_KEY] == "3"
    pending.cancel()
    await stop(task)


async def test_without_a_replay_ring_a_resume_point_behind_the_newest_is_data_loss():
    """replay_size = 0 kept nothing but never counted anything as evicted: resuming after 1 when 2 and 3 had been
    published replayed nothing and went live at 4, a silent gap of two order updates."""
    bus, task = await started_bus()
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=0)
    for seq in (1, 2, 3):
        await bus.publish(Topic.ORDER_UPDATES, update(seq))
    await bus.drain()

    with pytest.raises(MessagesLost):
        hub.attach(1)
    assert hub.attach(3)[0] == []  # resuming after the newest misses nothing
    await stop(task)


async def test_a_stream_that_reads_just_as_the_hub_cuts_it_off_ends_instead_of_hanging():
    """The hub gave up waiting for room (overflowed) and, before it detached the listener, the client read the
    queued message and waited for the next one on the now empty queue. detach() emptied the queue without waking
    that wait: the stream hung open forever, neither delivering nor ending, so the client never resumed."""
    bus, task = await started_bus()
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=2)  # a stream's queue holds 1
    ctx = FakeContext([])
    stream = stream_handler(hub, METHOD, BATCH)(REQUEST(after_sequence=0), ctx)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    listener = hub._listeners[0]
    await bus.publish(Topic.ORDER_UPDATES, update(1))
    got = [u.sequence for u in (await first).updates]  # then the client stops reading for a while
    await bus.publish(Topic.ORDER_UPDATES, update(2))  # fills its queue
    await bus.publish(Topic.ORDER_UPDATES, update(3))  # no room: the hub cuts it off at once

    async def client_comes_back() -> None:
        # Checked every loop turn: the hub detaches a couple of turns after it gives up, and we must read before.
        while not listener.overflowed:  # noqa: ASYNC110
            await asyncio.sleep(0)
        async for batch in stream:
            got.extend(u.sequence for u in batch.updates)

    with pytest.raises(Aborted) as ended:
        await asyncio.wait_for(client_comes_back(), 2)

    assert ended.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and got == [1]
    assert [u.sequence for u in hub.attach(got[-1])[0]] == [2, 3]  # and it resumes seamlessly
    await stop(task)


@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda s: f"seed{s}")
async def test_every_stream_gets_exactly_what_followed_its_resume_point_or_data_loss(seed):
    await asyncio.wait_for(run_seed(seed), 15)
