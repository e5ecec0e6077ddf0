"""Split mode: one module per process, its gRPC server, and bridges that make the others look local.

Builds the Bus, the one module, the bridges of "Who needs what" (docs/architecture.md) and the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.app.config import AppSettings
from services.app.monolith import CLOSE_S, COMPONENT_STOP_S, GRPC_STOP_S, STEP_S
from services.app.split_build import build_module
from shared import config as cfg
from shared import rpc, runtime
from shared.bus import Bus, Sequencer, Topic
from shared.clock import MARKET_OPEN_IST, Clock, RealClock, day_of, ist_ns, last_trading_day
from shared.config import ModuleSettings
from shared.contracts import ops_pb2
from shared.errors import ConfigError
from shared.grpc.bridge import NotificationForwarder, StreamBridge, install_unary_proxy, method_types, open_channel
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer

log = logging.getLogger(__name__)

MODULES = ("ingestion", "strategy", "risk", "oms", "notifier")
SERVICE_OF = {module: service for service, module in rpc.SERVICES.items()}
DRAIN_S = 2.0  # the bus drained at stop: the decisions queued are placed (paper fills at once); the rest not sent


class SplitSettings(ModuleSettings):
    """[split]: where each module's gRPC server listens, and the shared simulated session start."""

    model_config = SettingsConfigDict(env_prefix="NEOPULSE_SPLIT_", extra="forbid", validate_default=True)
    section = "split"

    # Ports below the kernel's ephemeral range (32768+): a client retrying a not-yet-listening
    # loopback port can otherwise connect to itself and steal the port.
    ingestion_addr: str = "127.0.0.1:18061"
    strategy_addr: str = "127.0.0.1:18062"
    risk_addr: str = "127.0.0.1:18063"
    oms_addr: str = "127.0.0.1:18064"
    notifier_addr: str = "127.0.0.1:18065"
    # Paper runs at speed != 1 need one session clock in all five processes: the wall-clock time
    # (unix ns) at which the simulated 09:15 IST began. 0 = real time.
    session_wall_start_ns: int = Field(default=0, ge=0)
    # Seconds to wait for each upstream a module starts after (STARTS_AFTER) to serve, then for the order-update
    # streams from it to open.
    upstream_wait_s: float = Field(default=60.0, gt=0)

    @field_validator("ingestion_addr", "strategy_addr", "risk_addr", "oms_addr", "notifier_addr")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        return host_and_port(value)

    def addr(self, module: str) -> str:
        return str(getattr(self, f"{module}_addr"))


def host_and_port(value: str) -> str:
    """`value` when it is host:port with a port 1-65535 (ASCII digits); else ValueError saying so."""
    host, colon, port = value.rpartition(":")
    if not (colon and host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"expected host:port with a port 1-65535, got {value!r}")
    return value


class SessionClock:
    """SimClock with an agreed start: sim time = 09:15 IST of the session day + (now - wall_start) * speed. The
    session day is that of wall_start (its last trading day), not of the process's own start: processes started
    either side of midnight IST run one session, not two a day apart (a market order found no tick of its day)."""

    def __init__(self, wall_start_ns: int, speed: float) -> None:
        day = last_trading_day(day_of(wall_start_ns))
        self.start_ns = ist_ns(day, *MARKET_OPEN_IST)
        self.wall_start_ns, self.speed = wall_start_ns, speed

    def now_ns(self) -> int:
        return self.start_ns + int((time.time_ns() - self.wall_start_ns) * self.speed)


S = rpc.method
TICKS, CANDLES = S("IngestionService", "StreamTicks"), S("StrategyService", "StreamCandles")
SIGNALS, DECISIONS = S("StrategyService", "StreamSignals"), S("RiskService", "StreamDecisions")
UPDATES = S("OrderService", "StreamOrderUpdates")
# What the notifier's Control asks (Telegram's commands, and the feed and instruments /status and /buy read).
COMMANDS = tuple(rpc.method(s, m.name) for s in ("IngestionService", "StrategyService", "RiskService", "OrderService")
                 for m in rpc.DESCRIPTORS[s].methods if not m.server_streaming)


@dataclass(frozen=True)
class Needs:
    """Remote streams (method, request fields) and remote requests a module uses."""

    streams: tuple[tuple[str, dict[str, Any]], ...] = ()
    requests: tuple[str, ...] = ()


NEEDS = {
    "ingestion": Needs(),
    # Its orders at start (positions after a restart), cancels of orders left working too long, and its strategies'
    # changes of their working orders.
    "strategy": Needs(((TICKS, {}), (UPDATES, {}), (DECISIONS, {"rejections_only": True})),
                      (rpc.LIST_INSTRUMENTS, rpc.LIST_ORDERS, rpc.CANCEL_ORDER, rpc.MODIFY_ORDER)),
    "risk": Needs(((SIGNALS, {}), (TICKS, {}), (UPDATES, {})),
                  (rpc.LIST_INSTRUMENTS, rpc.CANCEL_ORDER, rpc.LIST_ORDERS, rpc.LIST_POSITIONS)),
    # Only accepted decisions: the ledger's last one is where a restarted OMS resumes.
    "oms": Needs(((DECISIONS, {"accepted_only": True}), (CANDLES, {}), (TICKS, {})),
                 (rpc.SUBMIT_ORDER, rpc.CHECK_MODIFY, rpc.LIST_INSTRUMENTS)),
    "notifier": Needs(((DECISIONS, {"rejections_only": True}), (UPDATES, {})), COMMANDS),
}


# The upstreams a module reads as it starts, waited for (health SERVING) before it starts: the instrument master,
# and the OMS's orders and positions (risk and the strategy started without them take themselves for flat after a
# restart). No cycle: ingestion waits for none, the OMS only for ingestion.
STARTS_AFTER: dict[str, tuple[str, ...]] = {
    "strategy": ("ingestion", "oms"), "risk": ("ingestion", "oms"), "oms": ("ingestion",)}


def acting_grace_s(toml: dict[str, Any], shutdown_grace_s: float) -> float:
    """Seconds a stopping gRPC server gives the calls in flight: at least the slowest acting handler (the OMS's
    PlaceOrder waits up to [oms] place_order_wait_s for the book) and a second to answer. Cut short, a call that
    acted answers UNAVAILABLE, an unknown outcome for its caller."""
    from services.oms.config import OmsSettings

    return max(shutdown_grace_s, cfg.load(OmsSettings, toml).place_order_wait_s + 1.0)


def owner(method: str) -> str:
    """The module whose server answers `method`."""
    return rpc.SERVICES[method.split("/")[1].split(".")[-1]]


@dataclass
class SplitProcess:
    """`await SplitProcess(...).run(stop)` runs one module until `stop` is set or a long-lived task (the module's
    run(), a bridge) fails: stopped in order either way, then runtime.TaskFailed for the latter. `guard` bounds the
    stop; what did not stop in time is in `left_behind`, the stop steps that raised in `failed_steps`."""

    module: str
    app: AppSettings
    split: SplitSettings
    grpc_settings: GrpcSettings
    toml: dict[str, Any]
    grpc_port: int
    bus: Bus = field(default_factory=Bus)
    bound_port: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    bridges: list[StreamBridge] = field(default_factory=list)
    guard: runtime.StopGuard = field(default_factory=runtime.StopGuard)
    watch: runtime.FailureWatch = field(default_factory=runtime.FailureWatch)
    left_behind: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)  # one per upstream module

    def clock(self) -> Clock:
        if self.app.mode == "live" or not self.split.session_wall_start_ns:
            return RealClock()
        return SessionClock(self.split.session_wall_start_ns, self.app.speed)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            self.guard.begin()  # a start-up that failed closes within the budget too
            for close in reversed(self._closers):  # the last CLOSE_S of the budget is theirs
                await self._step(f"closing {getattr(close, '__qualname__', close)}", close(), CLOSE_S, keep_s=0.0)
        self.watch.raise_if_failed()

    async def _run(self, stop: asyncio.Event) -> None:
        clock = self.clock()
        # A module's Sequencer starts at its start time (microseconds): all it publishes is above this.
        started_at = Sequencer().value
        component = await self._build_module(clock)
        server = GrpcServer(self.bus, [SERVICE_OF[self.module]], self.grpc_settings, port=self.grpc_port)
        await self._declare_previous(server, component, started_at)
        forwarder_needed = self.module != "notifier"
        async with asyncio.TaskGroup() as tg:
            bus_task = tg.create_task(self.bus.run(), name="bus")
            self.bound_port = await server.start()
            module_started = asyncio.Event()  # streams are opened now, published once the module subscribed
            bridge_tasks = self._connect(tg, forwarder_needed, module_started, await self._resume_points(component))
            try:
                for upstream in STARTS_AFTER.get(self.module, ()):
                    await self._wait_serving(upstream, stop)
                await self._wait_streams_open(stop)
            except Exception:  # not serving, a stream refused: the server too stops before the loop closes
                await server.stop(0)
                raise
            if stop.is_set():  # asked to stop while waiting for ingestion: nothing started yet
                await server.stop(0)
                for task in (*bridge_tasks, bus_task):
                    task.cancel()
                return
            await component.start()
            module_started.set()
            runtime.settle_after_start()
            # No collect_when_idle here: five processes share the cores, and its wakeups cost them more than it saves
            # (bench: split p99 5.2-7.5 ms without, 6.7-8.1 ms with).
            module_tasks = [tg.create_task(self.watch.watch(self.module, component.run()), name=f"{self.module}:run")]
            module_tasks.append(tg.create_task(self.watch.watch("heartbeat", runtime.heartbeat()), name="heartbeat"))
            if self.app.busy_poll:
                busy = self.watch.watch("busy-poll", runtime.busy_poll())
                module_tasks.append(tg.create_task(busy, name="busy-poll"))
            server.set_serving(SERVICE_OF[self.module], True)
            self.started.set()
            failure = await self.watch.wait(stop)
            await self._stop(server, component, module_tasks, bridge_tasks, failure)
            bus_task.cancel()

    async def _stop(self, server: GrpcServer, component: Any, module_tasks: list[asyncio.Task[Any]],
                    bridge_tasks: list[asyncio.Task[Any]], failure: tuple[str, str] | None = None) -> None:
        """In the monolith's order (Monolith._stop_all), each step bounded and all within the guard's budget however
        the stop began (a signal, --duration, a `failure`: the task's name and error): no new calls, no more input,
        the order path drained, the module stopped, and only then its own loop (the OMS's broker events: the fills
        of what the drain placed). The streams out stay open to the end: what the module publishes while it stops
        (risk: the decision of a SubmitOrder in flight; the OMS: NOT_SENT settles, fills) is in the hubs' rings,
        which die with this process."""
        self.guard.begin()
        if failure is not None:
            await self._step("failure notice", self._failure_note(f"{failure[0]} failed: {failure[1]}"), STEP_S)
        # NOT_SERVING, no new calls; those in flight finish (an OMS PlaceOrder needs its decisions bridge for that).
        grace = acting_grace_s(self.toml, self.grpc_settings.shutdown_grace_s)
        await self._step("gRPC server", server.stop_serving(grace), grace + GRPC_STOP_S)
        # No more input: the streams in, busy polling, and ingestion's feed (its run is the source).
        run = f"{self.module}:run"
        sources = [t for t in module_tasks if t.get_name() != run or self.module == "ingestion"]
        await self._cancel("inputs", [*bridge_tasks, *sources])
        await self._drain("order path")  # what is left of it, the OMS records as not sent
        await self._step(self.module, component.stop(), COMPONENT_STOP_S)
        await self._step("decisions accounted", self._keep_accounted(component), STEP_S)
        await self._cancel(run, module_tasks)
        await self._drain("after the stop")  # what the stop published reaches the hubs and the forwarder
        # The streams take what the hubs hold (within [grpc] shutdown_grace_s), then end.
        await self._step("gRPC streams", server.stop(), self.grpc_settings.shutdown_grace_s + GRPC_STOP_S)

    async def _step(self, what: str, work: Awaitable[Any], limit_s: float, keep_s: float = CLOSE_S) -> None:
        """One stop step, bounded by the budget (runtime.stop_step), as the monolith's."""
        await runtime.stop_step(self.guard, what, work, limit_s, keep_s, self.left_behind, self.failed_steps)

    async def _drain(self, what: str) -> None:
        if not await self.bus.drain(within_s=self.guard.within(DRAIN_S, CLOSE_S)):
            log.warning("bus not drained in time", extra={"step": what, "within_s": DRAIN_S})

    async def _cancel(self, what: str, tasks: list[asyncio.Task[Any]]) -> None:
        """Cancel `tasks` and wait for them within STEP_S, cancelling again a task that swallowed its cancel."""
        self.guard.step = what
        left = [t.get_name() for t in await runtime.cancel_and_wait(tasks, self.guard.within(STEP_S, CLOSE_S))]
        if left:
            self.left_behind += left
            log.error("did not stop in time; left behind", extra={"step": what, "tasks": left})

    async def _failure_note(self, what: str) -> None:
        """The trader told that this process stops and why (the notifier's process, through the forwarder, which
        the drains wait for); as the monolith's."""
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_CRITICAL, title=f"{what}; stopping",
            text=f"The {self.module} process stops the ordered way (the OMS: decisions not yet placed recorded as not "
                 "sent, orders in flight awaited), then exits; a supervisor starts it again. See its log.",
            ts_ns=time.time_ns(), source="app"))

    async def _keep_accounted(self, component: Any) -> None:
        """The OMS, stopped cleanly (every decision it took is in its ledger, placed or not sent): keep where risk's
        process started, once its bridge checked what the earlier ones published (StreamBridge.accounted_below).
        Not after a crash, nor a stop that left a decision half-handled: one not yet written ahead would be
        skipped."""
        if self.module != "oms" or not component.ledger.durable or not component.decisions_settled:
            return
        accounted = max((b.accounted_below for b in self.bridges if b.method == DECISIONS), default=0)
        if not accounted:
            return
        try:
            await component.ledger.save_decisions_accounted(accounted)
        except Exception:
            log.warning("where risk's decisions were accounted for was not kept; the next start may report a loss "
                        "again", exc_info=True)

    async def _declare_previous(self, server: GrpcServer, component: Any, started_at: int) -> None:
        """Before any stream is served: where this process's sequences start, and how far its module's earlier
        processes got where it keeps a record, so that a bridge whose resume point an earlier process gave reports a
        loss only when there was one (StreamBridge). The OMS records every order update in its ledger, under its
        sequence, before publishing it; not so a REJECTED NOT_SENT for an order whose write-ahead the ledger refused
        (never in the ledger, nor sent), nor a write found committed after its reply was lost (published under a new
        sequence): a crash just after one of those, unreceived, goes unreported. Risk saves how far its decisions
        went when it stops cleanly."""
        recorded: dict[str, int] | None = None
        if self.module == "oms" and component.ledger.durable:
            recorded = {"all": await component.ledger.max_sequence()}
            server.hubs[UPDATES].previous = recorded
        elif self.module == "risk" and (published := await component.restore_published(started_at)) is not None:
            recorded = server.hubs[DECISIONS].previous = dict(published.highest)
            server.hubs[DECISIONS].unknown_below = published.unknown_below
        # Numbered above what the earlier processes recorded, should this host's clock be behind theirs (the module
        # does so too: Book.start_sequence, RiskModule._carry_over).
        started_at = max([started_at, *(recorded or {}).values()])
        for hub in server.hubs.values():
            hub.started_at = started_at
        if recorded is not None:
            log.info("earlier processes of this module got to these sequences", extra={"previous_sequence": recorded})

    async def _resume_points(self, component: Any) -> dict[str, int]:
        """Streams to take from after a sequence instead of live from now. The OMS: risk's decisions after the last
        one in its ledger, so that those risk made while the OMS was down (or restarting) are not lost; the
        replay's duplicates are refused by the ledger, and a decision too old to place is recorded as not sent
        ([oms] max_decision_age_s). A durable ledger with none: every decision risk still holds (-1), as none was
        ever taken; an OMS without a database forgets what it took, so it takes only what comes from now on."""
        if self.module != "oms":
            return {}
        # Or after where the OMS that stopped last had every earlier decision received or reported lost: a loss
        # already reported is not reported again at every start until the next order.
        last = max(await component.ledger.last_decision_sequence(), await component.ledger.decisions_accounted())
        if last:
            log.info("risk's decisions resume after the last one in the ledger", extra={"after_sequence": last})
            return {DECISIONS: last}
        return {DECISIONS: -1} if component.ledger.durable else {}

    def _connect(self, tg: asyncio.TaskGroup, forward_notifications: bool,
                 gate: asyncio.Event, resume: dict[str, int]) -> list[asyncio.Task[None]]:
        needs, metadata, channel = NEEDS[self.module], self.grpc_settings.client_metadata(), self._channel
        for method in needs.requests:
            install_unary_proxy(self.bus, channel(owner(method)), method, metadata)
        if forward_notifications:
            NotificationForwarder(self.bus, channel("notifier"), metadata)
        tasks = []
        for method, fields in needs.streams:
            bridge = StreamBridge(self.bus, channel(owner(method)), method, method_types(method)[0](**fields),
                                  metadata, gate=gate)
            bridge.last_sequence = resume.get(method, 0)
            self.bridges.append(bridge)
            name = f"bridge:{method}"  # a bridge that fails stops the process the ordered way too
            tasks.append(tg.create_task(self.watch.watch(name, bridge.run()), name=name))
        return tasks

    def _channel(self, module: str) -> grpc.aio.Channel:
        if module not in self._channels:
            self._channels[module] = open_channel(self.split.addr(module), self.grpc_settings)
            self._closers.append(self._channels[module].close)
        return self._channels[module]

    async def _wait_serving(self, module: str, stop: asyncio.Event) -> None:
        """Poll the upstream's health until SERVING (STARTS_AFTER has no cycle), on the channel the bridges use: it
        is connected when this returns."""
        target, service = self.split.addr(module), rpc.DESCRIPTORS[SERVICE_OF[module]].full_name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.split.upstream_wait_s
        stub = health_pb2_grpc.HealthStub(self._channel(module))
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if loop.time() > deadline:
                raise ConfigError(f"{module} at {target} is not serving after {self.split.upstream_wait_s}s; "
                                  f"start it or fix [split].{module}_addr")
            await asyncio.sleep(0.2)

    async def _wait_streams_open(self, stop: asyncio.Event) -> None:
        """The order-path streams from the upstreams the module starts after (risk's and the strategy's order
        updates) open before it starts. Their first connection is live from that point, and the module reads
        the OMS's orders and positions as it starts: updates published in between, before a stream's next try
        (seconds apart after an upstream that was slow to listen), reached neither, and the module counted
        those orders as working and their fills as never made."""
        waited = [b for b in self.bridges if b.resumable and owner(b.method) in STARTS_AFTER.get(self.module, ())]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.split.upstream_wait_s
        for bridge in waited:
            while not (bridge.connected.is_set() or stop.is_set()):
                bridge.backoff.retry_now()  # the upstream serves: no need to sit out the backoff
                if loop.time() > deadline:
                    raise ConfigError(f"{bridge.method} did not open within {self.split.upstream_wait_s}s though "
                                      f"{owner(bridge.method)} serves ({bridge.last_error or 'no answer'}); check "
                                      "that [grpc] auth_token and TLS are the same in every process")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await bridge.connected.wait()

    async def _build_module(self, clock: Clock) -> Any:
        return await build_module(self.module, self.bus, self.app, self.toml, clock, self._closers)
