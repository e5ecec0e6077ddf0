"""Split-mode bridges that make remote modules look local: streams -> topics, requests -> remote RPCs.

Talks to the local Bus and to remote NeoPulse gRPC servers (generic calls, no generated stubs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from prometheus_client import Counter

from shared import errors, rpc
from shared.bus import Bus, Topic
from shared.contracts import notifier_pb2, ops_pb2
from shared.grpc.auth import channel_credentials
from shared.grpc.config import GrpcSettings
from shared.grpc.servicers import (
    CHECKS_RESTARTS_KEY,
    ERROR_KEY,
    FIELD_KEY,
    INCARNATION_KEY,
    OLDEST_KEPT_KEY,
    ORDER_KEY,
    PREVIOUS_KEY,
    REASON_KEY,
    SEQUENCE_KEY,
    SINCE_KEY,
    STARTED_AT_KEY,
    UNKNOWN_BELOW_KEY,
)
from shared.metrics import start_at_zero

log = logging.getLogger(__name__)

RECONNECTS = Counter("neopulse_grpc_bridge_reconnects", "Upstream stream reconnects", ["method"])
GAPS = Counter("neopulse_grpc_bridge_gaps", "Resumes the upstream could not serve: messages lost between them",
               ["method"])
DUPLICATES = Counter("neopulse_grpc_bridge_duplicates_dropped", "Stream messages dropped as already seen", ["method"])
REWINDS = Counter("neopulse_grpc_bridge_rewinds", "Restarted upstreams numbering below the resume point (their clock "
                  "behind the earlier process's): streamed again from where they started", ["method"])
FORWARD_FAILED = Counter("neopulse_grpc_bridge_notifications_failed", "Notifications the notifier did not take")


def method_types(method: str) -> tuple[type[Message], type[Message]]:
    """(request class, response class) of a full method name such as rpc.PLACE_ORDER."""
    _, service_full, name = method.split("/")
    m = rpc.DESCRIPTORS[service_full.split(".")[-1]].methods_by_name[name]
    return GetMessageClass(m.input_type), GetMessageClass(m.output_type)


def open_channel(target: str, settings: GrpcSettings, ca_file: Path | None = None) -> grpc.aio.Channel:
    """A client channel with the server's keepalive and size options; TLS when the settings have it."""
    options = settings.channel_options()
    if settings.tls or ca_file is not None:
        return grpc.aio.secure_channel(target, channel_credentials(ca_file or settings.tls_cert_file), options)
    return grpc.aio.insecure_channel(target, options)


class Backoff:
    """Exponential reconnect delay with jitter, reset once a stream delivers."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s, self.max_s, self.next_s = first_s, max_s, first_s
        self._now = asyncio.Event()

    def reset(self) -> None:
        self.next_s = self.first_s

    def retry_now(self) -> None:
        """End the wait under way, or the next one, at once (the upstream is known to serve now)."""
        self._now.set()

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.next_s * random.uniform(0.8, 1.2)):  # not wait_for: gh-86296
                await self._now.wait()
        self._now.clear()
        self.next_s = min(self.max_s, self.next_s * 2)


class _Rewind(Exception):
    """Stream the upstream again from the resume point just set: where its process started (it numbers below our
    resume point, or a first try failed: then only what it published since that try)."""


class StreamBridge:
    """Subscribes to a remote server stream and republishes each message on the local bus.

    Order-path messages carry `sequence`: a reconnect resumes with after_sequence and any
    message at or below the last one seen is dropped, so no order is published twice. The first
    connection is live from now (from the first try, when an earlier try failed: _first_connection), unless
    the caller sets `last_sequence` before run() from a durable resume point (the OMS: the last risk decision
    in its ledger; -1, all the upstream holds, when it has none).

    With `gate`, the stream is opened at once (the server starts keeping messages for it) but nothing is
    published before the gate is set: the local module subscribes to its topics in start(), and a message
    published on a topic before anyone subscribed reaches no one.
    """

    def __init__(self, bus: Bus, channel: grpc.aio.Channel, method: str, request: Any | None = None,
                 metadata: tuple[tuple[str, str], ...] = (), backoff: Backoff | None = None,
                 gate: asyncio.Event | None = None) -> None:
        req_cls, resp_cls = method_types(method)
        self.bus, self.method, self.topic = bus, method, rpc.STREAM_TOPICS[method]
        for counter in (RECONNECTS, GAPS, REWINDS):  # the alerts on them fire from the first one (shared.metrics)
            start_at_zero(counter, method)
        self.request = request if request is not None else req_cls()
        self.metadata = metadata
        self.backoff = backoff or Backoff()
        self.field = resp_cls.DESCRIPTOR.fields[0].name
        self.resumable = "after_sequence" in req_cls.DESCRIPTOR.fields_by_name
        self.last_sequence = 0
        self.published = 0
        self.attempts = 0
        self.gaps = 0  # resumes the upstream could not serve (each one notified)
        self._after_gap = False  # last_sequence was set from a DATA_LOSS, not from a message received
        self.upstream = ""  # the incarnation of the upstream stream last connected to
        self._ended_cleanly = False  # that stream ended OK: its server stopped after sending us all it had
        # Where the upstream process last connected to started (its STARTED_AT_KEY), once checked: all its earlier
        # processes published was received here or reported lost (the OMS keeps it at a clean stop).
        self.accounted_below = 0
        # An attempt before the first connection failed: the first connection streams what the upstream published
        # since this bridge first asked, not live from then (_first_connection).
        self._refused_first = False
        self._first_try_us = 0  # when this bridge first asked (wall clock, microseconds)
        self._since_us = 0  # the rewind after a refused first try streams only what was published since that
        self.last_error = ""  # "CODE: details" of the last failed try, for a caller waiting for `connected`
        self.connected = asyncio.Event()
        self.gate = gate
        self._call = channel.unary_stream(method, request_serializer=req_cls.SerializeToString,
                                          response_deserializer=resp_cls.FromString)

    async def run(self) -> None:
        """Forever: stream, republish, and on any break reconnect with backoff (cancel to stop)."""
        while True:
            was_connected = self.connected.is_set() or not self.attempts
            if not self.attempts:
                self._first_try_us = time.time_ns() // 1000
            self.attempts += 1
            try:
                await self._stream_once()
                log.info("upstream stream ended; reconnecting", extra={"method": self.method})
            except _Rewind:
                continue
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.DATA_LOSS:
                    await self._messages_lost(err)
                    continue
                self._refused_first = self._refused_first or not self.upstream
                self.last_error = f"{err.code().name}: {err.details()}"
                # Warn once per outage; the retries that follow are debug noise.
                log.log(logging.WARNING if was_connected else logging.DEBUG, "upstream stream failed; reconnecting",
                        extra={"method": self.method, "code": err.code().name, "detail": err.details()})
            self.connected.clear()
            RECONNECTS.labels(self.method).inc()
            await self.backoff.wait()

    async def _stream_once(self) -> None:
        request = type(self.request)()
        request.CopyFrom(self.request)
        if self.resumable:
            request.after_sequence = self.last_sequence
        # A restart of the upstream is checked here (_check_incarnation), knowing whether the last stream ended cleanly.
        metadata = (*self.metadata, (CHECKS_RESTARTS_KEY, "1"))
        if self._since_us:
            metadata = (*metadata, (SINCE_KEY, str(self._since_us)))
        call = self._call(request, metadata=metadata)
        try:
            await self._read(call)
            self._ended_cleanly = True
        finally:
            # Stopped (cancelled) while waiting for room on the local bus, the call would stay open until the
            # channel closes: the upstream would keep a listener and queue for a stream nobody reads.
            call.cancel()

    async def _read(self, call: Any) -> None:
        await call.wait_for_connection()
        headers = dict(await call.initial_metadata() or ())
        await self._check_incarnation(headers)
        if self.resumable and self.last_sequence == 0:
            self._first_connection(headers)
        self.connected.set()
        log.info("upstream stream connected", extra={"method": self.method, "after_sequence": self.last_sequence})
        async for batch in call:
            self.backoff.reset()
            self._after_gap = False
            self._since_us = 0  # the rewind's first message is here: from now on by sequence alone
            if self.gate is not None and not self.gate.is_set():
                await self.gate.wait()
            await self._publish(batch)

    def _first_connection(self, headers: dict[str, Any]) -> None:
        """Live from now: remember where now was, so that a reconnect before the first message still replays what
        the upstream published meanwhile (a restarted upstream, say). Nothing published yet: on a reconnect,
        everything the upstream then holds is new to us (-1).

        Not when an earlier try failed: its tries are seconds apart by then (Backoff), and live from now skipped
        what the upstream published in between (the notifier missed the first fills of an OMS that started after
        it). Streamed instead, as a rewind, from the upstream's start (all it holds, when it does not say), but only
        what it published since this bridge first asked (SINCE_KEY): an upstream running all along (the first try
        failed for another reason) would otherwise send its whole ring again, every fill of the day a second
        notification from a restarted notifier. The upstream's clock is this host's (split mode runs on one)."""
        published = _header_int(headers, SEQUENCE_KEY)
        if self._refused_first and published > 0:
            self._refused_first = False
            self.last_sequence = _header_int(headers, STARTED_AT_KEY) or -1
            self._since_us = self._first_try_us
            log.info("a first try failed; streaming what the upstream published since it", extra={
                "method": self.method, "after_sequence": self.last_sequence, "since_us": self._since_us})
            raise _Rewind
        self._refused_first = False
        self.last_sequence = (published or -1) if str(headers.get(SEQUENCE_KEY, "")).isdigit() else 0

    async def _check_incarnation(self, headers: dict[str, Any]) -> None:
        """A stream from another incarnation of the upstream (it restarted) replays only what the new process
        published: if the old one did not end our stream cleanly (a crash, a stop that could not wait for us, an
        outage across the restart), what it published after our resume point and did not send died with its ring,
        unless the new ring reaches back to that point. So too on a first connection from a resume point of our own
        records (the OMS: its ledger) that the upstream's earlier process gave: all this one publishes is above
        STARTED_AT_KEY. The new process says how far its earlier ones got where it keeps a record (PREVIOUS_KEY; the
        OMS: its ledger; risk: what it saved at a clean stop): a loss is reported only when they got past our
        resume point. Where it keeps none, a loss cannot be ruled out: said loudly, as for a DATA_LOSS. A process
        that numbers below our resume point, which it never got to, is streamed again from its start (_rewind)."""
        incarnation = str(headers.get(INCARNATION_KEY, ""))
        previous, self.upstream = self.upstream, incarnation or self.upstream
        ended_cleanly, self._ended_cleanly = self._ended_cleanly, False
        resume = self.last_sequence
        if not self.resumable:
            return
        started_at = _header_int(headers, STARTED_AT_KEY)
        # This process numbers from its start, below our resume point, which it never got to: an earlier one, its
        # clock ahead of this one's, gave that point (a clock stepped back, another host).
        overlap = 0 < started_at < resume and resume > _header_int(headers, SEQUENCE_KEY)
        accounted = True  # all the processes before this one published up to its start arrived or were reported
        if resume <= 0 or (0 < _header_int(headers, OLDEST_KEPT_KEY) <= resume and not overlap):
            pass  # nothing to resume from, or the new ring reaches back to it
        elif not previous:
            if resume <= started_at or overlap:
                await self._restarted_past(resume, headers, "the upstream restarted after this process took that "
                                           "resume point from its own records")
        elif incarnation and incarnation != previous:
            if not ended_cleanly:
                await self._restarted_past(resume, headers, "the upstream restarted without ending this stream "
                                           "cleanly")
            elif _header_int(headers, PREVIOUS_KEY) > resume or _header_int(headers, UNKNOWN_BELOW_KEY) > resume:
                # The earlier processes' record goes past our point, or says one after it crashed.
                await self._restarted_past(resume, headers, "the upstream restarted after a process between the two, "
                                           "started and gone while this stream was away")
            else:
                # All the process before sent us is here, and the earlier ones' record says no more (nor that one
                # crashed after our point); one keeping no record at all is not ruled out: the next process of ours
                # checks again from where we are accounted.
                accounted = False
        if accounted:
            self.accounted_below = max(self.accounted_below, started_at)
        if overlap:
            self._rewind(resume, started_at)

    async def _restarted_past(self, resume: int, headers: dict[str, Any], how: str) -> None:
        """Report what an upstream's earlier incarnation published after `resume` that its new ring does not hold:
        how far it got is its PREVIOUS_KEY header, absent when it keeps no record."""
        recorded = str(headers.get(PREVIOUS_KEY, ""))
        if not recorded.isdigit():
            await self._report_lost(resume, f"{how}, and it keeps no record of what it published before (its "
                                    "sequences are not durable): whether it published anything after that point "
                                    "that never arrived here cannot be ruled out.", "unrecorded")
        elif int(recorded) > resume:
            await self._report_lost(resume, f"{how}; its earlier process got to sequence {recorded}: what it "
                                    "published after this point never arrived here, and the new one does not hold "
                                    "it.", "restarted")
        else:
            log.info("upstream restarted; everything it published before had arrived", extra={
                "method": self.method, "after_sequence": resume, "previous_sequence": int(recorded)})

    def _rewind(self, resume: int, started_at: int) -> None:
        """The upstream's process numbers from its start time, below our resume point: all it published up to that
        point would be dropped here as already seen, orders and fills among them. Stream it again from where it
        started: none of that was received from it (its own sequences never got as far as our resume point)."""
        REWINDS.labels(self.method).inc()
        log.warning("upstream restarted numbering below this stream's resume point (its clock is behind the one "
                    "before it); streaming it again from where it started", extra={
                        "method": self.method, "after_sequence": resume, "started_at": started_at})
        self.last_sequence = started_at
        raise _Rewind

    async def _messages_lost(self, err: grpc.aio.AioRpcError) -> None:
        """The upstream no longer has what came after our resume point: count it and say so loudly, then go on
        from the oldest message it still keeps (that much is not lost), or live when it keeps none."""
        lost_after = self.last_sequence
        oldest = _oldest_kept(err)
        # Once only: a second DATA_LOSS from that point (the ring turned again meanwhile) goes live, no loop. Never
        # below what was received: that would publish it twice.
        if oldest > 1 and not self._after_gap:
            self.last_sequence, self._after_gap = max(lost_after, oldest - 1), True
        else:
            self.last_sequence, self._after_gap = 0, False
        await self._report_lost(lost_after, err.details() or "", "evicted")

    async def _report_lost(self, lost_after: int, details: str, cause: str) -> None:
        self.gaps += 1
        GAPS.labels(self.method).inc()
        certain = cause != "unrecorded"
        log.critical("upstream stream lost messages; resuming with what it still keeps" if certain else
                     "upstream stream may have lost messages; resuming with what it keeps", extra={
                         "method": self.method, "after_sequence": lost_after, "resume_after": self.last_sequence,
                         "detail": details, "cause": cause})
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_CRITICAL, source="grpc-bridge",
            title="Order-path messages lost between processes" if certain else
                  "Order-path messages may have been lost between processes",
            text=(f"{self.method} could not resume after sequence {lost_after}: {details} " + (
                "Restart this module so it reloads orders and positions." if certain else
                "To be sure of orders and positions, restart this module so it reloads them.")),
            fields={"method": self.method, "after_sequence": str(lost_after), "cause": cause}))

    async def _publish(self, batch: Any) -> None:
        if self.topic.lossy:  # ticks and candles travel on the bus as batches
            self.bus.publish_nowait(self.topic, batch)
            self.published += 1
            return
        for msg in getattr(batch, self.field):
            if self.resumable:
                if msg.sequence <= self.last_sequence:
                    DUPLICATES.labels(self.method).inc()
                    continue
                self.last_sequence = msg.sequence
            await self.bus.publish(self.topic, msg)
            self.published += 1


# Unary RPCs that change orders or trading state: a timeout, a stop or a crash mid-call leaves their outcome unknown.
ACTING_METHODS = frozenset({rpc.SUBMIT_ORDER, rpc.CHECK_MODIFY, rpc.PLACE_ORDER, rpc.CANCEL_ORDER,
                            rpc.MODIFY_ORDER, rpc.SQUARE_OFF,
                            rpc.SET_KILL_SWITCH, rpc.SET_RISK_LIMITS})
_ACTING_NAMES = frozenset(m.rsplit("/", 1)[-1] for m in ACTING_METHODS)
# The call reached the server, which may have acted before it ended: the server stopping or crashing mid-call gives
# UNAVAILABLE or CANCELLED just as a deadline gives DEADLINE_EXCEEDED.
_UNKNOWN_OUTCOME = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                              grpc.StatusCode.CANCELLED})


def is_acting(method: str) -> bool:
    """`method` (full name or bare, as "PlaceOrder") changes orders or trading state."""
    return method.rsplit("/", 1)[-1] in _ACTING_NAMES


def error_from_rpc(method: str, err: grpc.aio.AioRpcError, client_order_id: str = "") -> errors.NeoPulseError:
    """The shared.errors exception a remote handler raised, rebuilt from status and trailers. `client_order_id`:
    the order an acting call was about, named in an outcome-unknown error."""
    trailers = dict(err.trailing_metadata() or ())
    kind, details, code = trailers.get(ERROR_KEY, ""), err.details() or "", err.code()
    if kind == "InvalidInput" or (not kind and code == grpc.StatusCode.INVALID_ARGUMENT):
        field = trailers.get(FIELD_KEY, "request")
        return errors.InvalidInput(field, details.removeprefix(f"{field}: "))
    if kind in ("RiskRejected", "TradingHalted"):
        cls = errors.TradingHalted if kind == "TradingHalted" else errors.RiskRejected
        return cls(trailers.get(REASON_KEY, ""), details)
    simple = {"NotFound": errors.NotFound, "BrokerRejected": errors.BrokerRejected, "NotSent": errors.NotSent,
              "OrderStateError": errors.OrderStateError,
              "RetryableError": errors.RetryableError, "SessionExpired": errors.SessionExpired,
              "ConfigError": errors.ConfigError}
    if kind in simple:  # said by the server's code: a RetryableError there (not serving yet) did not act
        return simple[kind](details)
    if kind == "MessagesLost":
        return errors.MessagesLost(details, _oldest_kept(err))  # where the stream may go on from
    if kind == "OutcomeUnknown":  # said by the server's code: it acted, or may have
        return errors.OutcomeUnknown(details, trailers.get(ORDER_KEY, "") or client_order_id)
    if code in _UNKNOWN_OUTCOME and is_acting(method):
        # The remote may have acted before the call ended: a blind retry could place a second order.
        order = f"order {client_order_id}: " if client_order_id else ""
        lookup = (f"look it up with GetOrder/ListOrders by client_order_id {client_order_id}" if client_order_id
                  else "check GetOrder/ListOrders")
        return errors.OutcomeUnknown(
            f"{order}{method} ended without an answer ({code.name}); its outcome is unknown: {lookup} before "
            "trying again, and retry only with the same client_order_id", client_order_id)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.RetryableError(f"{method} is unreachable ({code.name}); it is retried or try again later")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
        return errors.NotFound(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return errors.RiskRejected("REMOTE_PRECONDITION", details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return errors.ConfigError(f"{method} refused our token; set the same [grpc].auth_token in every process")
    return errors.NeoPulseError(details or "remote internal error")


def install_unary_proxy(bus: Bus, channel: grpc.aio.Channel, method: str,
                        metadata: tuple[tuple[str, str], ...] = (), timeout_s: float = 10.0) -> None:
    """Register `method` on the local bus as a call to the remote server that owns it."""
    req_cls, resp_cls = method_types(method)
    call = channel.unary_unary(method, request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)

    async def proxy(request: Any) -> Any:
        try:
            return await call(request, metadata=metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            order = getattr(request, "order", None)  # SubmitOrder, PlaceOrder: the order an unknown outcome is about
            raise error_from_rpc(method, err, getattr(order, "client_order_id", "")) from None

    bus.handle(method, proxy)


class NotificationForwarder:
    """Local Topic.NOTIFICATIONS -> remote NotifierService/Notify, in order, one at a time.

    A notifier that is down (UNAVAILABLE: restarting, not started yet) is waited for: what was published meanwhile
    (a fill, a rejection, a risk state change) is held and delivered once it serves again, oldest first. A notifier
    that takes the call but does not answer in time (DEADLINE_EXCEEDED) gets `attempts` tries, and one that refuses
    it (any other code) none more: each such notification is dropped and counted. One held longer than `max_age_s`
    is dropped and counted too: an alert that late would mislead more than its absence. The bus handler only queues
    (at most `max_pending`, the oldest shed and counted), so an outage never back-pressures the order path; a task
    of its own does the sending."""

    def __init__(self, bus: Bus, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = (),
                 attempts: int = 3, timeout_s: float = 2.0, max_pending: int = 1_000,
                 backoff: tuple[float, float] = (0.2, 2.0), max_age_s: float = 600.0) -> None:
        req_cls, resp_cls = method_types(rpc.NOTIFY)
        self._call = channel.unary_unary(rpc.NOTIFY, request_serializer=req_cls.SerializeToString,
                                         response_deserializer=resp_cls.FromString)
        self.metadata, self.attempts, self.timeout_s = metadata, attempts, timeout_s
        self.forwarded = 0
        self.failed = 0
        self.down = False  # the last try found the notifier unavailable; what is pending waits for it
        self._backoff, self.max_age_s = backoff, max_age_s
        self._pending: deque[tuple[Any, float]] = deque(maxlen=max_pending)  # (notification, when it was queued)
        self._sender: asyncio.Task[None] | None = None
        self._bus = bus
        bus.subscribe(Topic.NOTIFICATIONS, "grpc:notify-forwarder", self._queue)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _queue(self, notification: Any) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.failed += 1
            FORWARD_FAILED.inc()  # the oldest is shed: a notifier that far behind is down
        self._pending.append((notification, time.monotonic()))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_pending(), name="grpc:notify-sender")
            self._bus.track(self._sender)  # drain() waits for what was handed over

    async def _send_pending(self) -> None:
        while self._pending:
            await self._forward(*self._pending.popleft())

    def _too_old(self, notification: Any, queued: float) -> bool:
        held = time.monotonic() - queued
        if held <= self.max_age_s:
            return False
        self.failed += 1
        FORWARD_FAILED.inc()
        log.warning("notification dropped: held longer than max_age_s while the notifier was away",
                    extra={"title": notification.title, "held_s": round(held)})
        return True

    async def _forward(self, notification: Any, queued: float) -> None:
        request = notifier_pb2.NotifyRequest(notification=notification)
        backoff = Backoff(*self._backoff)
        timeouts = 0
        while not self._too_old(notification, queued):
            try:
                await self._call(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    if not self.down:
                        self.down = True
                        log.warning("notifier unavailable: holding notifications until it serves again",
                                    extra={"pending": len(self._pending)})
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED and (timeouts := timeouts + 1) < self.attempts:
                    pass
                else:
                    self.failed += 1
                    FORWARD_FAILED.inc()
                    log.warning("notification not delivered to the notifier",
                                extra={"code": code.name, "title": notification.title})
                    return
                await backoff.wait()
                continue
            self.forwarded += 1
            if self.down:
                self.down = False
                log.info("notifier serves again: delivering held notifications", extra={"pending": len(self._pending)})
            return


def _header_int(headers: dict[str, Any], key: str) -> int:
    """A number the upstream sent in its initial metadata; 0 when it did not."""
    value = str(headers.get(key, ""))
    return int(value) if value.isdigit() else 0


def _oldest_kept(err: grpc.aio.AioRpcError) -> int:
    """The oldest sequence a DATA_LOSS stream still replays (its OLDEST_KEPT_KEY trailer); 0 when not said."""
    for key, value in err.trailing_metadata() or ():
        if key == OLDEST_KEPT_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return 0
