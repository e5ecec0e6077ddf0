"""Generic servicers built from the service descriptors: unary RPC = bus request, stream = topic hub.

Errors map through shared.errors.grpc_status; unknown exceptions become INTERNAL, logged here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from shared import rpc
from shared.bus import Bus
from shared.contracts import ingestion_pb2
from shared.errors import (
    InvalidInput,
    MessagesLost,
    NeoPulseError,
    OutcomeUnknown,
    RetryableError,
    RiskRejected,
    grpc_status,
    wire_field,
)
from shared.grpc.hub import CLOSE, Listener, TopicHub, sequence_of
from shared.grpc.metrics import STREAM_MESSAGES, RpcTimer

log = logging.getLogger(__name__)

# Trailing metadata that lets a split-mode proxy rebuild the exact shared.errors type.
ERROR_KEY = "neopulse-error"
FIELD_KEY = "neopulse-field"
REASON_KEY = "neopulse-reason-code"
SEQUENCE_KEY = "neopulse-sequence"  # initial metadata of a stream: the highest sequence published before it
# Trailer of a DATA_LOSS, and initial metadata of a stream: the oldest sequence the stream still replays.
OLDEST_KEPT_KEY = "neopulse-oldest-kept"
ORDER_KEY = "neopulse-client-order-id"  # trailer of an OutcomeUnknown: the order to look up
INCARNATION_KEY = "neopulse-incarnation"  # initial metadata of a stream: which server (process) serves it
# Initial metadata of a stream whose server keeps a durable record of its sequences (the OMS: its ledger): the highest
# sequence its earlier incarnations published that this stream would carry. Absent: no record, a loss is not ruled out.
PREVIOUS_KEY = "neopulse-previous-sequence"
# Initial metadata of a stream: every sequence this server (process) publishes is above it.
STARTED_AT_KEY = "neopulse-started-at"
# Initial metadata of a stream whose server keeps a record of its sequences: an earlier process that left none (risk
# after a crash) may have published below it, so the record says nothing of a resume point below it.
UNKNOWN_BELOW_KEY = "neopulse-unknown-below"
# Request metadata of a stream resumed from a point before the client first asked for it (StreamBridge, whose first
# try failed): replay only what was published since then (wall clock, microseconds).
SINCE_KEY = "neopulse-since-us"
# Request metadata of a stream whose client checks a restart of its server itself (StreamBridge: it compares
# INCARNATION_KEY and reads PREVIOUS_KEY, knowing what the server cannot: whether its last stream ended cleanly). Any
# other client resuming from an earlier process's sequence gets DATA_LOSS unless the server's record rules a loss out.
CHECKS_RESTARTS_KEY = "neopulse-checks-restarts"
MAX_BATCH = 1000  # elements per streamed batch message
MAX_BATCH_BYTES = 512 * 1024  # and bytes: below the smallest max_message_bytes (1 MiB) GrpcSettings allows
# Streams filtered by instrument token: an unknown token is INVALID_ARGUMENT, not a stream that stays empty.
TOKEN_FILTERED = frozenset({rpc.method("IngestionService", "StreamTicks"),
                            rpc.method("StrategyService", "StreamCandles")})


def full_name(service: ServiceDescriptor, m: MethodDescriptor) -> str:
    return f"/{service.full_name}/{m.name}"


def error_trailers(exc: BaseException) -> tuple[tuple[str, str], ...]:
    if not isinstance(exc, NeoPulseError):
        return ()
    trailers = [(ERROR_KEY, type(exc).__name__)]
    if isinstance(exc, InvalidInput):
        trailers.append((FIELD_KEY, wire_field(exc.field)))  # metadata must be printable ASCII
    if isinstance(exc, RiskRejected):
        trailers.append((REASON_KEY, wire_field(exc.reason_code)))
    if isinstance(exc, MessagesLost):
        trailers.append((OLDEST_KEPT_KEY, str(exc.oldest_kept)))
    if isinstance(exc, OutcomeUnknown) and exc.client_order_id:
        trailers.append((ORDER_KEY, wire_field(exc.client_order_id)))
    return tuple(trailers)


async def abort_with(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    code, message = grpc_status(exc)
    if not isinstance(exc, NeoPulseError):
        log.error("RPC handler failed", exc_info=exc, extra={"method": method})
    await context.abort(code, message, trailing_metadata=error_trailers(exc))


class CallGate:
    """Lets a service's unary calls in only while it is open (its module serving: started, not stopping), and counts
    those in flight, so that a stopping server waits for them (an acting call cut short is an unknown outcome for
    its caller). Refused calls are UNAVAILABLE, not run: a module not yet started must not answer "no such order"."""

    def __init__(self, open: bool = True) -> None:
        self.open = open
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> bool:
        if not self.open:
            return False
        self.in_flight += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def idle(self, within_s: float) -> bool:
        """Wait until no call is in flight, at most `within_s`; True when none is."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):  # not wait_for: it can swallow a cancel (gh-86296)
                await self._idle.wait()
        return not self.in_flight


def unary_handler(bus: Bus, method: str,
                  gate: CallGate | None = None) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    gate = gate or CallGate()

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        timer = RpcTimer(method)
        if not gate.enter():
            timer.done(grpc.StatusCode.UNAVAILABLE)
            await abort_with(context, method, RetryableError(
                f"{method} was not run: this process is starting or stopping; call again once it serves "
                "(health SERVING)"))
        try:
            if not bus.has_handler(method):
                timer.done(grpc.StatusCode.UNIMPLEMENTED)
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by this process")
            try:
                response = await bus.call(method, request)
            except Exception as exc:
                timer.done(grpc_status(exc)[0])
                await abort_with(context, method, exc)
        finally:
            gate.leave()
        timer.done(grpc.StatusCode.OK)
        return response

    return handle


def element_filter(request: Any) -> Callable[[Any], bool] | None:
    """The request's filters (tokens, strategies, rejections_only, accepted_only, after_sequence) as one predicate;
    None when the request filters nothing (the hot path passes batches through untouched)."""
    fields = request.DESCRIPTOR.fields_by_name
    tokens = set(request.tokens) if "tokens" in fields else set()
    strategies = set(request.strategies) if "strategies" in fields else set()
    rejections_only = bool(getattr(request, "rejections_only", False))
    accepted_only = bool(getattr(request, "accepted_only", False))
    after = int(getattr(request, "after_sequence", 0))
    if not (tokens or strategies or rejections_only or accepted_only or after):
        return None

    def keep(msg: Any) -> bool:
        if tokens and msg.token not in tokens:
            return False
        if strategies and msg.strategy not in strategies:
            return False
        if (rejections_only and msg.accepted) or (accepted_only and not msg.accepted):
            return False
        return not (after and sequence_of(msg) <= after)

    return keep


class StreamPacker:
    """Turns bus messages into the RPC's batch messages (TickBatch, SignalBatch, ...)."""

    def __init__(self, batch_cls: type[Message], batched_topic: bool) -> None:
        self.batch_cls = batch_cls
        self.field = batch_cls.DESCRIPTOR.fields[0].name
        self.batched_topic = batched_topic  # ticks/candles travel on the bus as batches already

    def batches(self, msgs: list[Any], keep: Callable[[Any], bool] | None) -> list[Any]:
        """The wire batches for these bus messages, filtered by `keep` (None = everything)."""
        if self.batched_topic:
            if keep is None:
                return msgs  # already TickBatch/CandleBatch: no copy
            return self._pack([e for m in msgs for e in getattr(m, self.field) if keep(e)])
        return self._pack(msgs if keep is None else [m for m in msgs if keep(m)])

    def _pack(self, elements: list[Any]) -> list[Any]:
        """At most MAX_BATCH elements and (unless one element alone is bigger) MAX_BATCH_BYTES per batch: elements
        echo client text (a 400 kB strategy_tag), and one batch past max_message_bytes would fail the stream."""
        batches, start, size = [], 0, 0
        for i, element in enumerate(elements):
            n = element.ByteSize()
            if i > start and (i - start >= MAX_BATCH or size + n > MAX_BATCH_BYTES):
                batches.append(self.batch_cls(**{self.field: elements[start:i]}))
                start, size = i, 0
            size += n
        if start < len(elements):
            batches.append(self.batch_cls(**{self.field: elements[start:]}))
        return batches


async def _next_messages(listener: Listener) -> list[Any] | None:
    """Everything queued (at least one message), or None when the stream should end."""
    queue = listener.queue
    if listener.closed and queue.empty():
        return None
    msgs = [await queue.get()]
    while not queue.empty() and len(msgs) < MAX_BATCH:
        msgs.append(queue.get_nowait())
    if any(m is CLOSE for m in msgs):
        msgs = [m for m in msgs if m is not CLOSE]
        listener.closed = True
    return msgs


Validator = Callable[[Any], Awaitable[None]]


def token_validator(bus: Bus) -> Validator:
    """A token filter must name instruments ingestion knows (where this process can ask it)."""
    async def validate(request: Any) -> None:
        if not request.tokens or not bus.has_handler(rpc.LIST_INSTRUMENTS):
            return
        reply = await bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        unknown = sorted(set(request.tokens) - {i.token for i in reply.instruments})
        if unknown:
            raise InvalidInput("tokens", f"unknown instrument token(s) {unknown}; "
                                         "IngestionService/ListInstruments lists the subscribed ones")
    return validate


def check_stream_request(request: Any) -> None:
    """Raises InvalidInput for a resume point or filters no stream serves."""
    after = int(getattr(request, "after_sequence", 0))
    if after < -1:
        raise InvalidInput("after_sequence",
                           f"must be 0 (from now), -1 (all buffered) or a sequence received, got {after}")
    if getattr(request, "accepted_only", False) and getattr(request, "rejections_only", False):
        raise InvalidInput("accepted_only",
                           "cannot be combined with rejections_only: set one of them, or neither for all")


def stream_headers(hub: TopicHub, request: Any, oldest: int) -> tuple[tuple[str, str], ...]:
    """A stream's initial metadata: what a client needs to resume it, and to tell whether a restart lost anything."""
    # Never below where this process numbers from: a client that connected before anything was published resumes
    # from there after a restart, and the restart check (TopicHub.attach) sees it, not a silent 0.
    sequence = max(hub.last_sequence, hub.started_at)
    headers = [(SEQUENCE_KEY, str(sequence)), (OLDEST_KEPT_KEY, str(oldest)),
               (INCARNATION_KEY, hub.incarnation)]
    previous = hub.previous_for(request)
    if previous is not None:
        headers.append((PREVIOUS_KEY, str(previous)))
    if hub.started_at:
        headers.append((STARTED_AT_KEY, str(hub.started_at)))
    if hub.previous is not None and hub.unknown_below:
        headers.append((UNKNOWN_BELOW_KEY, str(hub.unknown_below)))
    return tuple(headers)


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    value = next((v for k, v in context.invocation_metadata() or () if k == key), "")
    return value if isinstance(value, str) else ""


def _since_us(context: grpc.aio.ServicerContext) -> int:
    value = _metadata(context, SINCE_KEY)
    return int(value) if value.isdigit() else 0


def stream_handler(hub: TopicHub, method: str, batch_cls: type[Message],
                   validate: Validator | None = None) -> Callable[..., AsyncIterator[Any]]:
    packer = StreamPacker(batch_cls, hub.topic.lossy)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        timer = RpcTimer(method)
        try:
            check_stream_request(request)
            if validate is not None:
                await validate(request)
        except Exception as exc:
            timer.done(grpc_status(exc)[0])
            await abort_with(context, method, exc)
        after = int(getattr(request, "after_sequence", 0))
        keep = element_filter(request)
        try:
            checks_restarts = _metadata(context, CHECKS_RESTARTS_KEY) == "1"
            replay, listener = hub.attach(after, hub.evicted_for(request), since_us=_since_us(context),
                                          request=None if checks_restarts else request)
            oldest = hub.oldest_kept
        except MessagesLost as exc:
            timer.done(grpc.StatusCode.DATA_LOSS)
            await abort_with(context, method, exc)
        sent = STREAM_MESSAGES.labels(method)
        code = grpc.StatusCode.CANCELLED
        try:
            # Headers now, so a client knows the stream is live before the first message arrives; with the
            # highest sequence published so far, where a first-time client resumes from after a reconnect.
            await context.send_initial_metadata(stream_headers(hub, request, oldest))
            msgs: list[Any] | None = replay
            while msgs is not None:
                for batch in packer.batches(msgs, keep):
                    yield batch
                    sent.inc()
                msgs = await _next_messages(listener)
            code = grpc.StatusCode.OK
        finally:
            hub.detach(listener)
            if listener.overflowed:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
            timer.done(code)
        if listener.overflowed:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "this stream fell too far behind and was cut "
                                "off; reconnect with after_sequence set to the last sequence you received")

    return handle


def service_handler(bus: Bus, service: str, hubs: dict[str, TopicHub],
                    gate: CallGate | None = None) -> grpc.GenericRpcHandler:
    """The generic handler for one service of shared.rpc.DESCRIPTORS; its unary calls pass `gate`."""
    gate = gate or CallGate()
    desc = rpc.DESCRIPTORS[service]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in desc.methods:
        name = full_name(desc, m)
        req_cls, resp_cls = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
        ser = {"request_deserializer": req_cls.FromString, "response_serializer": resp_cls.SerializeToString}
        if m.server_streaming:
            validate = token_validator(bus) if name in TOKEN_FILTERED else None
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                stream_handler(hubs[name], name, resp_cls, validate), **ser)
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(unary_handler(bus, name, gate), **ser)
    return grpc.method_handlers_generic_handler(desc.full_name, handlers)
