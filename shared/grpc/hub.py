"""One bus subscription per streamed topic, fanned out to gRPC streams, with a replay ring.

Attaching a stream and snapshotting the ring happen together, so a resumed stream misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from shared.bus import DROPPED, Bus, Topic
from shared.errors import MessagesLost

log = logging.getLogger(__name__)

CLOSE = object()  # end-of-stream marker put into a listener's queue on shutdown


def sequence_of(msg: Any) -> int:
    return int(getattr(msg, "sequence", 0))


class Listener:
    """One open gRPC stream's queue. Market data sheds the oldest; an order-path stream whose queue is full is cut
    off at once (it resumes from the ring, which keeps twice its queue): one stuck client never holds the fan-out,
    so never delays the others (the OMS's decisions bridge) by even a moment."""

    def __init__(self, lossy: bool, maxsize: int, topic: str = "") -> None:
        self.lossy = lossy
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.closed = False
        self.overflowed = False
        self.detached = False
        self.dropped = 0
        self.topic = topic
        # Shed batches count with the bus's own drops: a process streaming from a shed stream works from partial data.
        self._drop_counter = DROPPED.labels(topic, "grpc-streams")

    def put(self, msg: Any) -> None:
        """Queue `msg` without waiting; an order-path queue that is full marks the stream `overflowed` instead."""
        if self.detached:
            return
        if self.queue.full():
            if not self.lossy:
                self.overflowed = True
                return
            self.queue.get_nowait()
            self._dropped()
        self.queue.put_nowait(msg)

    def _dropped(self) -> None:
        self.dropped += 1
        self._drop_counter.inc()
        if self.dropped == 1:  # once per stream: a client that stays slow would flood the log
            log.warning("a gRPC stream is too slow for its market data; shedding its oldest batches (counted in "
                        "neopulse_bus_dropped_messages, subscriber grpc-streams)", extra={"topic": self.topic})

    def close(self) -> None:
        self.closed = True
        try:
            self.queue.put_nowait(CLOSE)
        except asyncio.QueueFull:
            pass  # the stream drains what is queued, then sees `closed`


class TopicHub:
    """Subscribes once to `topic`; keeps the last `replay_size` sequenced messages for resume."""

    def __init__(self, bus: Bus, topic: Topic, replay_size: int, listener_maxsize: int | None = None) -> None:
        self.topic = topic
        # An order-path stream's queue is half the ring: what a cut-off stream loses (its queue and a batch in
        # flight) is still in the ring when it resumes, unless it stays away long enough for the ring to turn.
        if listener_maxsize is None:
            listener_maxsize = max(1, replay_size // 2) if replay_size and not topic.lossy else 10_000
        self.listener_maxsize = listener_maxsize
        self.ring: deque[Any] = deque(maxlen=replay_size if not topic.lossy else 0)
        # When each message of the ring was published (wall clock, microseconds): a client that first asked at some
        # time and connected later streams only what came since (attach's since_us; StreamBridge).
        self.ring_us: deque[int] = deque(maxlen=self.ring.maxlen)
        self.evicted_sequence = 0  # highest sequence pushed out of the ring
        self.evicted_rejection = 0  # of those, the highest rejected decision (accepted false)
        self.evicted_acceptance = 0  # and the highest accepted one
        self.evicted_by_strategy: dict[str, int] = {}  # and the highest of each strategy's messages
        self.last_sequence = 0  # highest sequence published on the topic
        self._listeners: list[Listener] = []
        # Which incarnation of the stream this is: a ring dies with its process, so a client resuming from a point
        # an earlier incarnation gave it cannot be told here what it missed (StreamBridge compares the two).
        self.incarnation = uuid.uuid4().hex
        # The highest sequence earlier incarnations published, by kind of stream (see previous_for); None when they
        # kept no record, so a client whose resume point an earlier one gave it cannot be told whether it missed any.
        self.previous: Mapping[str, int] | None = None
        self.unknown_below = 0  # an earlier one that kept no record may have published below it (risk after a crash)
        # Every sequence this incarnation publishes is above it (0: not said): a resume point at or below it came
        # from an earlier one.
        self.started_at = 0
        self._sub = bus.subscribe(topic, f"grpc:{topic.value}", self._on_message)
        self._bus = bus

    async def _on_message(self, msg: Any) -> None:
        ring = self.ring
        if not self.topic.lossy:
            sequence = sequence_of(msg)
            self.last_sequence = max(self.last_sequence, sequence)
            if len(ring) == ring.maxlen:  # full: the oldest goes; a ring of 0 (replay_size = 0) keeps not even this
                self._evicted(ring[0] if ring else msg)
            ring.append(msg)
            self.ring_us.append(time.time_ns() // 1000)
        # Those attached now: one attaching from here on has `msg` in its replay or (live only) counted as before it.
        listeners = list(self._listeners)
        if any(not listener.lossy and listener.queue.full() for listener in listeners):
            # The bus hands over what it queued without a loop turn in between: give the streams' readers one turn
            # to take their queues (up to MAX_BATCH each) before calling a stream stuck. One turn, never slow_s.
            await asyncio.sleep(0)
        for listener in listeners:
            listener.put(msg)  # never waits; nothing once detached
            if listener.overflowed:
                log.warning("order-path stream fell behind; cutting it off (it may resume with after_sequence)",
                            extra={"topic": self.topic.value})
                self.detach(listener)
                # Its reader may be waiting for the next message: wake it so its stream ends (RESOURCE_EXHAUSTED)
                # instead of hanging open. detach() just emptied the queue, so there is room.
                with contextlib.suppress(asyncio.QueueFull):
                    listener.queue.put_nowait(CLOSE)

    def _evicted(self, msg: Any) -> None:
        # The highest ever pushed out: a repeated old message leaving last must not hide newer ones that left. Also
        # per stream filter, so a filtered stream (rejections only, some strategies), whose resume point moves only
        # with what passes its filter, is not told of a loss when all that left was filtered out for it.
        sequence = sequence_of(msg)
        self.evicted_sequence = max(self.evicted_sequence, sequence)
        accepted = getattr(msg, "accepted", None)
        if accepted is False:
            self.evicted_rejection = max(self.evicted_rejection, sequence)
        elif accepted:
            self.evicted_acceptance = max(self.evicted_acceptance, sequence)
        strategy = getattr(msg, "strategy", None)
        if isinstance(strategy, str):
            self.evicted_by_strategy[strategy] = max(self.evicted_by_strategy.get(strategy, 0), sequence)

    def evicted_for(self, request: Any) -> int:
        """The highest evicted sequence a stream of `request` (its rejections_only, accepted_only, strategies) would
        have sent."""
        if getattr(request, "rejections_only", False):
            return self.evicted_rejection
        if getattr(request, "accepted_only", False):
            return self.evicted_acceptance
        strategies = list(getattr(request, "strategies", ()))
        if strategies:
            return max(self.evicted_by_strategy.get(name, 0) for name in strategies)
        return self.evicted_sequence

    def previous_for(self, request: Any) -> int | None:
        """The highest sequence earlier incarnations published that a stream of `request` would have got: "all", or
        "rejections" for rejections_only, "accepted" for accepted_only; None when not recorded (for a `strategies`
        filter, never), or not for all after its resume point (it is below `unknown_below`)."""
        after = int(getattr(request, "after_sequence", 0))
        if self.previous is None or list(getattr(request, "strategies", ())) or 0 < after < self.unknown_below:
            return None
        if getattr(request, "rejections_only", False):
            return self.previous.get("rejections")
        return self.previous.get("accepted" if getattr(request, "accepted_only", False) else "all")

    def attach(self, after_sequence: int = 0, evicted: int | None = None, since_us: int = 0,
               request: Any = None) -> tuple[list[Any], Listener]:
        """Register a stream; returns the ring's messages after `after_sequence` (0 = live only, -1 = all), and with
        `since_us` only those published since then (wall clock, microseconds). Raises MessagesLost when messages it
        would return are already gone from the ring; `evicted`: the highest gone that the stream's filter passes
        (evicted_for), when not all of them. With the stream's `request`, also when they died with an earlier process
        (_check_restart); without, the client checks that itself (StreamBridge)."""
        replay: list[Any] = []
        evicted = self.evicted_sequence if evicted is None else evicted
        if after_sequence:  # -1: everything the ring holds
            # Those gone were published before the oldest kept: none since `since_us` when that one is older.
            before_since = bool(since_us and self.ring_us and self.ring_us[0] < since_us)
            if evicted and after_sequence < evicted and not before_since:
                self._lost(after_sequence, "are no longer kept")
            if request is not None:
                self._check_restart(after_sequence, self.previous_for(request))
            replay = [m for m, at in zip(self.ring, self.ring_us, strict=True)
                      if sequence_of(m) > after_sequence and at >= since_us]
        listener = Listener(self.topic.lossy, self.listener_maxsize, self.topic.value)
        self._listeners.append(listener)
        return replay, listener

    def _check_restart(self, after_sequence: int, previous: int | None) -> None:
        """Raises MessagesLost when `after_sequence` came from an earlier process (every sequence this one publishes
        is above started_at), the ring does not reach back to it, and that process's record (`previous`: previous_for)
        does not show it published nothing after it: what it did died with its ring (a crash, or a stop that ended the
        client's stream before all arrived), and a client not told so would go on with a silent gap."""
        if not 0 < after_sequence < self.started_at or 0 < self.oldest_kept <= after_sequence:
            return
        if previous is not None and previous <= after_sequence:
            return
        how_far = f"got to {previous}" if previous is not None else "kept no record of how far it got"
        # A warning: this process lost nothing of its own (the ring did not turn too fast); the client is told.
        self._lost(after_sequence, f"were published by an earlier process of this server, which {how_far}; this "
                   f"one numbers from {self.started_at} and does not hold them", logging.WARNING)

    def _lost(self, after_sequence: int, why: str, level: int = logging.ERROR) -> None:
        oldest = self.oldest_kept
        log.log(level, "resume point is older than the replay ring; messages are gone", extra={
            "topic": self.topic.value, "after_sequence": after_sequence, "oldest_kept": oldest, "detail": why})
        raise MessagesLost(f"messages after sequence {after_sequence} {why} (the oldest kept is {oldest}): reload "
                           "the state (ListOrders, ListPositions), then stream live (after_sequence 0) or from the "
                           "oldest kept", oldest_kept=oldest)

    @property
    def oldest_kept(self) -> int:
        """The sequence of the oldest message in the ring; 0 when it is empty."""
        return sequence_of(self.ring[0]) if self.ring else 0

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def detach(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        # Nothing reads this queue any more: empty it.
        listener.closed = listener.detached = True
        while not listener.queue.empty():
            listener.queue.get_nowait()

    def close(self) -> None:
        """Ask every open stream to flush and end (graceful shutdown)."""
        for listener in self._listeners:
            listener.close()

    def unsubscribe(self) -> None:
        self._bus.unsubscribe(self._sub)
