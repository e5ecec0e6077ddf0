"""The in-process message bus: topics of protobuf objects, and named request handlers.

Every module talks only through it; in split mode, gRPC bridges plug into it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from shared.errors import NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")


class Topic(enum.StrEnum):
    """Topics and what they carry (all generated protobuf classes)."""

    TICKS = "ticks"  # market_pb2.TickBatch
    CANDLES = "candles"  # market_pb2.CandleBatch
    SIGNALS = "signals"  # trading_pb2.Signal
    # trading_pb2.RiskDecision: accepted = a validated order, else a rejection with its reason
    ORDERS = "orders"
    ORDER_UPDATES = "order_updates"  # trading_pb2.OrderUpdate
    NOTIFICATIONS = "notifications"  # ops_pb2.Notification
    COMMANDS = "commands"  # ops_pb2.Command

    @property
    def lossy(self) -> bool:
        """Market-data topics shed the oldest batch under pressure; the rest never drop."""
        return self in (Topic.TICKS, Topic.CANDLES)

    @property
    def priority(self) -> int:
        """Who goes first when several consumers have work (a subscriber may ask for another level, see
        Priority): the order path, then what follows from it, then market data."""
        if self in (Topic.SIGNALS, Topic.ORDERS):
            return Priority.ORDER_PATH
        return Priority.MARKET_DATA if self.lossy else Priority.FOLLOW_UP


class Priority(enum.IntEnum):
    """Consumer levels, lowest first: a consumer with work waits (at most MAX_YIELDS loop turns) while one of a
    lower level has work and is free to take it."""

    ORDER_PATH = 0  # signals and decisions: the way to an order
    SIGNAL_SOURCE = 1  # what makes signals: the strategy's ticks (and its own fills, in order with them)
    FOLLOW_UP = 2  # what follows from orders sent: order updates, notifications, commands
    MARKET_DATA = 3  # the other market-data consumers (marks, paper fills from candles, stores)


PUBLISHED = Counter("neopulse_bus_published_messages", "Messages published", ["topic"])
DROPPED = Counter("neopulse_bus_dropped_messages", "Messages dropped from a full lossy queue", ["topic", "subscriber"])
HANDLER_ERRORS = Counter("neopulse_bus_handler_errors", "Handler exceptions (logged, not fatal)",
                         ["topic", "subscriber"])
UNDELIVERED = Counter("neopulse_bus_undelivered_messages", "Messages no subscriber will handle: published after the "
                      "bus stopped, or still queued when it stopped (logged)", ["topic"])
QUEUE_DEPTH = Gauge("neopulse_bus_queue_depth_messages", "Messages waiting per subscriber", ["topic", "subscriber"])

MAX_YIELDS = 16  # loop turns a consumer waits at most for higher-priority ones (each turn runs them all)

Handler = Callable[[Any], Awaitable[None]]
RequestHandler = Callable[[Any], Awaitable[Any]]


@dataclass(eq=False)
class Subscription:
    topic: Topic
    name: str
    queue: asyncio.Queue[Any]
    handler: Handler | None = None
    dropped: int = 0
    handled: int = 0
    errors: int = 0
    priority: int = Priority.MARKET_DATA
    holding: bool = False  # took a message, lets higher priorities go first before handling it
    busy: bool = False  # inside its handler (maybe awaiting I/O): yielding to it would not help
    max_batch: int = 0  # 0: the handler takes one message; n: a list of what is queued, up to n
    _drop_counter: Any = field(default=None, repr=False)

    @property
    def runnable(self) -> bool:
        """It has a message to handle and will as soon as the loop lets it run."""
        return self.holding or (not self.busy and bool(self.queue._queue))  # type: ignore[attr-defined]

    def offer(self, msg: Any) -> None:
        """Put without waiting; a full lossy queue sheds its oldest message."""
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.dropped += 1
            self._drop_counter.inc()
            self.queue.put_nowait(msg)


class Bus:
    """Topics fan out to bounded per-subscriber queues; requests go to one named handler."""

    def __init__(self, default_maxsize: int = 10_000) -> None:
        self.default_maxsize = default_maxsize
        self._subs: dict[Topic, list[Subscription]] = {t: [] for t in Topic}
        self._handlers: dict[str, RequestHandler] = {}
        self._tasks: dict[Subscription, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()  # work a handler started and drain() waits for
        self._running = False
        self._stopped = False  # run() has ended: what is published now reaches no handler
        self._published = {t: PUBLISHED.labels(t.value) for t in Topic}  # labels() is slow on a hot path
        # By priority: the consumers a consumer of priority p lets go first (every priority below p).
        self._ahead_of: dict[int, list[Subscription]] = {p: [] for p in Priority}

    # -- topics ---------------------------------------------------------------
    def subscribe(self, topic: Topic, name: str, handler: Handler, maxsize: int | None = None,
                  priority: Priority | None = None, max_batch: int = 0) -> Subscription:
        """Call `handler` for every message on `topic`, in order, from a task the bus owns; `priority` is the
        consumer's level when it is not its topic's (Priority). With `max_batch`, the handler takes a list: the
        messages queued when it is called, up to max_batch (a burst handled together)."""
        sub = self._add(topic, name, maxsize, topic.priority if priority is None else priority)
        sub.handler = handler
        sub.max_batch = max_batch
        if self._running:
            self._start(sub)
        return sub

    def _add(self, topic: Topic, name: str, maxsize: int | None, priority: int | None = None) -> Subscription:
        sub = Subscription(topic, name, asyncio.Queue(maxsize or self.default_maxsize),
                           priority=topic.priority if priority is None else priority)
        sub._drop_counter = DROPPED.labels(topic.value, name)
        QUEUE_DEPTH.labels(topic.value, name).set_function(sub.queue.qsize)
        self._subs[topic].append(sub)
        for level, ahead in self._ahead_of.items():
            if sub.priority < level:
                ahead.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs[sub.topic]:
            self._subs[sub.topic].remove(sub)
        for ahead in self._ahead_of.values():
            if sub in ahead:
                ahead.remove(sub)
        task = self._tasks.pop(sub, None)
        if task is not None:
            task.cancel()

    async def detach(self, sub: Subscription, within_s: float) -> tuple[list[Any], bool]:
        """Stop `sub` once the message in its handler is done (waiting at most `within_s`): returns the messages
        still queued, taken and not handled, and whether its handler finished in time. Unlike cancelling its
        consumer, this never cuts a handler off halfway (a graceful stop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        queued: list[Any] = []
        while True:
            while not sub.queue.empty():
                queued.append(sub.queue.get_nowait())
                sub.queue.task_done()
            finished = not (sub.busy or sub.holding)
            if finished or loop.time() > deadline:
                break
            await asyncio.sleep(0.005)
        self.unsubscribe(sub)
        return queued, finished

    async def publish(self, topic: Topic, msg: Any) -> None:
        """Deliver to every subscriber; order-path topics wait for room (back-pressure). Once the bus has stopped,
        nothing is delivered: a message of a topic that never drops is counted and logged as undelivered."""
        self._published[topic].inc()
        if self._stopped:
            if not topic.lossy:
                self._undelivered(topic, [msg])
            return
        if topic.lossy:
            for sub in self._subs[topic]:
                sub.offer(msg)
            return
        for sub in self._subs[topic]:
            try:
                sub.queue.put_nowait(msg)
            except asyncio.QueueFull:
                await sub.queue.put(msg)

    def publish_nowait(self, topic: Topic, msg: Any) -> None:
        """Hot-path publish for lossy topics (ticks, candles): never waits."""
        if not topic.lossy:
            raise ValueError(f"topic {topic.value} never drops; use `await publish`")
        self._published[topic].inc()
        for sub in self._subs[topic]:
            sub.offer(msg)

    async def stream(self, topic: Topic, name: str, max_batch: int = 1000,
                     maxsize: int | None = None) -> AsyncIterator[list[Any]]:
        """Yield lists of messages as they arrive (what is queued, up to max_batch) until closed."""
        sub = self._add(topic, name, maxsize)
        try:
            while True:
                batch = [await sub.queue.get()]
                while len(batch) < max_batch and not sub.queue.empty():
                    batch.append(sub.queue.get_nowait())
                yield batch
        finally:
            self.unsubscribe(sub)

    def subscriptions(self) -> list[Subscription]:
        return [s for subs in self._subs.values() for s in subs]

    def subscribers(self, topic: Topic) -> tuple[Subscription, ...]:
        """The subscriptions of one topic (no list of every topic's built: for a per-message caller)."""
        return tuple(self._subs[topic])

    # -- requests -------------------------------------------------------------
    def handle(self, method: str, handler: RequestHandler) -> None:
        """Register the one handler for a request name (the full gRPC method name)."""
        if method in self._handlers:
            raise ValueError(f"{method} already has a handler")
        self._handlers[method] = handler

    def has_handler(self, method: str) -> bool:
        return method in self._handlers

    async def call(self, method: str, request: Any) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise NotFound(f"no module serves {method} in this process")
        return await handler(request)

    # -- lifecycle ------------------------------------------------------------
    async def run(self) -> None:
        """Run every subscriber's consumer until cancelled (owned by the process TaskGroup)."""
        self._running, self._stopped = True, False
        for subs in self._subs.values():
            for sub in subs:
                if sub.handler is not None and sub not in self._tasks:
                    self._start(sub)
        try:
            await asyncio.Event().wait()
        finally:
            self._running, self._stopped = False, True
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            self._drop_unhandled()

    def _drop_unhandled(self) -> None:
        """At stop: what is still queued for a handler of a topic that never drops is taken out, counted and logged
        (a message a stopping module published after the last drain; a notification the trader will not get)."""
        for sub in self.subscriptions():
            if sub.handler is None or sub.topic.lossy or sub.queue.empty():
                continue
            left = []
            while not sub.queue.empty():
                left.append(sub.queue.get_nowait())
                sub.queue.task_done()
            self._undelivered(sub.topic, left, sub.name)

    @staticmethod
    def _undelivered(topic: Topic, msgs: list[Any], subscriber: str = "") -> None:
        UNDELIVERED.labels(topic.value).inc(len(msgs))
        log.error("messages not delivered: the bus has stopped", extra={
            "topic": topic.value, "subscriber": subscriber, "count": len(msgs),
            "messages": [getattr(m, "title", "") or type(m).__name__ for m in msgs]})  # a notification: its title

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count `task` (work a handler handed off, e.g. an order placement) as part of handling: drain()
        waits for it. The task must handle its own errors."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def to_the_end(self, work: Coroutine[Any, Any, T], name: str) -> T:
        """Run `work` to its end whatever its caller does: its own task, tracked (drain() waits for it), the caller's
        cancellation not passed on (a gRPC deadline, a request's timeout: in the monolith a handler runs in the
        caller's task). What it raises goes to the caller if one still waits, and is retrieved either way."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.track(task)
        return await asyncio.shield(task)

    async def drain(self, within_s: float = 5.0) -> bool:
        """Wait until every subscriber's queue is empty and tracked work is done (clean shutdown, tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self._background or any(s.queue._unfinished_tasks  # type: ignore[attr-defined]
                                      for s in self.subscriptions() if s.handler is not None):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def quiet(self, turns: int = 3) -> None:
        """Until every subscriber has handled what it was given and what that published in turn, tracked work is
        done, and `turns` loop turns more have queued nothing new (the tasks handlers started have run). A
        backtest's replay waits for this before its next batch: the pipeline at rest, the same ticks give the same
        orders however busy the machine."""
        calm = 0
        while calm < turns:
            busy = [s for s in self.subscriptions()
                    if s.handler is not None and s.queue._unfinished_tasks]  # type: ignore[attr-defined]
            if busy or self._background:
                calm = 0
                for sub in busy:
                    await sub.queue.join()
                if self._background:
                    await asyncio.wait(set(self._background))
            else:
                calm += 1
                await asyncio.sleep(0)

    async def after_order_path(self) -> None:
        """Wait (at most MAX_YIELDS loop turns) while signals or decisions are queued and their consumers free
        to take them, then one loop turn more for the tasks they woke that are not bus consumers (in split mode
        the gRPC stream carrying a signal to risk's process: ~250 µs sooner): for work that can wait, such as
        logging what was just published."""
        await self._let_ahead(self._ahead_of[Priority.SIGNAL_SOURCE])
        await asyncio.sleep(0)

    async def as_follow_up(self) -> None:
        """Wait (at most MAX_YIELDS loop turns) as an order update's consumer would: while the order path or a
        signal source has work. For the bookkeeping of an order already sent (its acknowledgement, its fills)."""
        await self._let_ahead(self._ahead_of[Priority.FOLLOW_UP])

    @staticmethod
    async def _let_ahead(ahead: list[Subscription]) -> None:
        """Wait while a consumer of a higher priority has messages and is free to take them: a signal is
        decided, and a decision placed, before order updates are fanned out and before the next tick batch.
        A consumer inside its handler (awaiting I/O) is not waited for; MAX_YIELDS bounds the wait."""
        for _ in range(MAX_YIELDS):
            for sub in ahead:
                if sub.runnable and sub.handler is not None:
                    break
            else:
                return
            await asyncio.sleep(0)

    def _start(self, sub: Subscription) -> None:
        self._tasks[sub] = asyncio.get_running_loop().create_task(
            self._consume(sub), name=f"bus:{sub.topic.value}:{sub.name}")

    async def _consume(self, sub: Subscription) -> None:
        queue, handler = sub.queue, sub.handler
        assert handler is not None
        errors = HANDLER_ERRORS.labels(sub.topic.value, sub.name)
        ahead = self._ahead_of[sub.priority]
        while True:
            msg = await queue.get()
            if ahead:
                sub.holding = True
                try:
                    await self._let_ahead(ahead)
                finally:
                    sub.holding = False
            taken = 1
            if sub.max_batch:
                msg = [msg]
                while taken < sub.max_batch and queue._queue:  # type: ignore[attr-defined]
                    msg.append(queue.get_nowait())
                    taken += 1
            sub.busy = True
            try:
                await handler(msg)
                sub.handled += taken
            except asyncio.CancelledError:
                raise
            except Exception:
                sub.errors += 1
                errors.inc()
                log.exception("bus handler failed", extra={"topic": sub.topic.value, "subscriber": sub.name})
            finally:
                sub.busy = False
                for _ in range(taken):
                    queue.task_done()


class Sequencer:
    """Monotonic message sequence for one publishing module.

    Starts at the process start time in microseconds, so a restarted module keeps
    numbering above what its consumers have already seen (resume and de-duplication).
    """

    def __init__(self, start: int | None = None) -> None:
        self.value = start if start is not None else time.time_ns() // 1000

    def next(self) -> int:
        self.value += 1
        return self.value
