"""The monolith: all five modules in one process over the in-process bus, plus one gRPC server.

Owns start-up order, the process TaskGroup, and shutdown in reverse order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from services.app.config import AppSettings
from shared import config as cfg
from shared import runtime
from shared.bus import Bus, Topic
from shared.clock import (
    MARKET_CLOSE_IST,
    Clock,
    ManualClock,
    RealClock,
    SimClock,
    day_of,
    ist_datetime,
    ist_ns,
    minute_start_ns,
)
from shared.component import Component
from shared.contracts import ops_pb2
from shared.errors import ConfigError
from shared.grpc.config import GrpcSettings

log = logging.getLogger(__name__)
LongLived = Callable[[], Coroutine[Any, Any, Any]]
ORDER_PATH_DRAIN_S = 20.0  # decisions queued at stop are written ahead and placed within this; the rest not sent
COMPONENT_STOP_S = 20.0  # one module's stop (the OMS waits up to 10 s for placements, twice); then it is left
STEP_S = 5.0  # cancelling a task, draining the bus after one module's stop
GRPC_STOP_S = 2.0  # the gRPC server's stop, beyond the grace it gives the calls in progress
MINUTE_NS = 60 * 1_000_000_000
RESUME_AT_LEAST_NS = 5 * MINUTE_NS  # a simulated session resumed with less of it left starts at the open again
CLOSE_S = 10.0  # closing one resource (database, broker session, simulator); kept from the budget for the closing
# Kept from the budget for each module still to stop: a step that waits its full time (every drain does while a
# broker call hangs) cannot leave the notifier, which stops last, no time to send its queue.
MODULE_SHARE_S = 2.0


@dataclass
class Resources:
    """What the monolith opened and must close, in reverse order (Monolith._close)."""

    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    def on_close(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.closers.append(fn)


class Monolith:
    """Builds and runs the whole pipeline. `await Monolith(settings, toml).run(duration)`."""

    def __init__(self, settings: AppSettings, toml: dict[str, Any] | None = None,
                 grpc_port: int | None = None) -> None:
        self.settings = settings
        self.toml = toml or {}
        self.grpc_port = settings.grpc_port if grpc_port is None else grpc_port
        self.bus = Bus()
        self.clock: Clock = RealClock()
        self.components: list[Component] = []
        self.res = Resources()
        self.database: Any = None
        self.grpc: Any = None
        self.bound_port = 0
        self.started = asyncio.Event()
        self.info: dict[str, str] = {}
        self.order_path_drain_s = ORDER_PATH_DRAIN_S
        self._unstopped: list[asyncio.Task[Any]] = []
        self.guard = runtime.StopGuard()  # run() takes the process's, whose budget bounds the stop
        self.left_behind: list[str] = []  # what did not stop in time: the exit code says so (cmd_run)
        self.failed_steps: list[str] = []  # the stop steps that raised: the exit code says so too
        # Notifier settings over the config's and the environment's: a backtest's turns Telegram off.
        self.notifier_overrides: dict[str, Any] = {}
        # A backtest: a replay's next batch waits for the whole pipeline at rest (IngestionModule.settle_batches).
        self.settle_batches = False

    # -- building ------------------------------------------------------------------------------
    async def build(self) -> None:
        s = self.settings
        if s.mode == "live":
            self.clock = RealClock()
        elif s.source in ("synthetic", "simulator"):
            self.clock = SimClock(speed=s.speed)
        if s.source == "replay":
            self.clock = ManualClock(0)  # follows the replayed ticks
        ledger, tick_sink, instrument_sink = await self._persistence()
        if isinstance(self.clock, SimClock) and self.database is not None:
            await self._resume_simulated_session(self.clock)
        source, broker = await self._market_and_broker()
        if s.source == "replay":
            tick_sink = instrument_sink = None  # the ticks are already stored
        self.components = self._modules(source, broker, ledger, tick_sink, instrument_sink)
        if self.settle_batches:  # a backtest: every timer turns after every replayed batch, at its clock
            ingestion = next(c for c in self.components if c.name == "ingestion")
            for comp in self.components:
                comp.clock_driven = True
            ingestion.clock_hooks = [c.on_clock for c in self.components if c is not ingestion]  # type: ignore[attr-defined]
            ingestion.start_gate = self.started  # type: ignore[attr-defined]  # set once every module has started

    async def _resume_simulated_session(self, clock: SimClock) -> None:
        """A simulated session on a database that holds an earlier run's session of the same day goes on a minute
        after that run's last tick, instead of trading its minutes again: their signals would repeat the earlier
        orders' ids (refused by risk as DUPLICATE_ORDER), and the positions restored from the ledger would come from
        a time still to come. Once that session has run to its close, it starts at the open again, with a warning."""
        from shared.db.queries import latest_tick_ns

        assert self.database is not None
        opening = clock.start_ns
        day = day_of(opening)
        latest = await latest_tick_ns(self.database.pool, ist_ns(day, 0, 0), ist_ns(day + timedelta(days=1), 0, 0))
        if latest is None or latest < opening:
            return
        resume, close = minute_start_ns(latest) + MINUTE_NS, ist_ns(day, *MARKET_CLOSE_IST)
        if resume + RESUME_AT_LEAST_NS <= close:
            clock.resume_at(resume)
            log.info("simulated session resumes after the earlier run's last tick", extra={
                "day": day.isoformat(), "at_ist": ist_datetime(resume).strftime("%H:%M")})
        else:
            log.warning("today's simulated session in this database ran to its close; it starts at the open again, "
                        "and the strategies' signals that repeat the earlier run's are refused as duplicates (a "
                        "fresh --data-dir or database gives a fresh session)", extra={"day": day.isoformat()})

    async def _market_and_broker(self) -> tuple[Any, Any]:
        from services.app import wiring

        return await wiring.market_and_broker(self.settings, self.toml, self.clock, self.res, self.info,
                                              self.database)

    async def _persistence(self) -> tuple[Any, Any, Any]:
        from services.app import wiring

        return await wiring.persistence(self, self.settings, self.toml, self.res, self.info)

    def _modules(self, source, broker, ledger, tick_sink, instrument_sink) -> list[Component]:
        from services.ingestion.config import IngestionSettings
        from services.ingestion.module import IngestionModule
        from services.notifier.config import NotifierSettings
        from services.notifier.module import NotifierModule
        from services.oms.config import OmsSettings
        from services.oms.module import OmsModule
        from services.risk.config import RiskSettings
        from services.risk.module import RiskModule
        from services.risk.state import PgRiskState
        from services.strategy.config import StrategySettings
        from services.strategy.module import StrategyModule
        from services.strategy.state import PgStrategyState
        from services.strategy.warmup import StoredCandles

        bus, clock, t = self.bus, self.clock, self.toml
        replay = self.settings.source == "replay"  # its state is its own: never the real ledger's or risk's
        # Start order: the notifier first, so that what the others announce while starting (the OMS's
        # reconciliation and carried positions) is delivered; the instrument master; the OMS, which rebuilds
        # today's orders and positions from the ledger and the broker; then risk and strategy, which ask the OMS
        # for them as they start (started before it, they would take themselves for flat after a restart).
        return [
            NotifierModule(bus, cfg.load(NotifierSettings, t, mode=self.settings.mode, **self.notifier_overrides),
                           clock),
            IngestionModule(bus, cfg.load(IngestionSettings, t), source, clock, tick_sink=tick_sink,
                            instrument_sink=instrument_sink, settle_batches=self.settle_batches),
            OmsModule(bus, cfg.load(OmsSettings, t), broker, ledger, clock),
            RiskModule(bus, cfg.load(RiskSettings, t), clock,
                       PgRiskState(self.database.pool) if self.database is not None and not replay else None),
            # A replay's clock starts at its day's midnight: the warm-up reads the days before it only.
            StrategyModule(bus, cfg.load(StrategySettings, t), clock,
                           StoredCandles(self.database.pool) if self.database is not None else None,
                           PgStrategyState(self.database.pool) if self.database is not None and not replay else None),
        ]

    # -- running -------------------------------------------------------------------------------
    async def run(self, duration: float | None = None, extra: list[LongLived] | None = None,
                  stop: asyncio.Event | None = None, guard: runtime.StopGuard | None = None) -> None:
        """Start everything, run until `duration` seconds pass, `stop` is set or a long-lived task fails, then stop
        cleanly, each step bounded and the whole stop within `guard`'s budget; what did not stop in time is in
        `left_behind`, the steps that failed in `failed_steps`. A task that failed (a module's run(), or one of
        `extra`) is announced as CRITICAL before the stop, and raised after it as runtime.TaskFailed."""
        stop = stop or asyncio.Event()
        self.guard = guard or self.guard
        before = asyncio.all_tasks()
        watch = runtime.FailureWatch()
        try:
            await self.build()
            if stop.is_set():  # asked to stop (a signal) while the database, the login or the warm-up started
                log.warning("stop asked for during start-up: nothing started")
                return
            async with asyncio.TaskGroup() as tg:
                bus_task = tg.create_task(self.bus.run(), name="bus")
                await asyncio.sleep(0)
                runners = await self._start_all(tg, watch)
                runtime.settle_after_start()
                runners.append(tg.create_task(watch.watch("gc-idle", runtime.collect_when_idle()), name="gc-idle"))
                runners.append(tg.create_task(watch.watch("heartbeat", runtime.heartbeat()), name="heartbeat"))
                if self.settings.busy_poll:
                    runners.append(tg.create_task(watch.watch("busy-poll", runtime.busy_poll()), name="busy-poll"))
                for fn in extra or []:
                    name = getattr(fn, "__name__", "extra")
                    runners.append(tg.create_task(watch.watch(name, fn()), name=name))
                self.started.set()
                if not stop.is_set():
                    await self._system_note("NeoPulse started", self._describe())
                failure = await watch.wait(stop, duration)
                if failure is not None:
                    await self._failure_note(f"{failure[0]} failed: {failure[1]}")
                await self._stop_all(runners, self.components)
                bus_task.cancel()
                self.guard.step = "waiting for the cancelled tasks"
        finally:
            await self._close()
        self._name_tasks_left(before)
        watch.raise_if_failed()

    async def _start_all(self, tg: asyncio.TaskGroup, watch: runtime.FailureWatch) -> list[asyncio.Task[Any]]:
        """The gRPC server, then each module in order, its run() a task. A start that fails stops the modules already
        started (the ordered stop, announced as CRITICAL first), then is raised."""
        from services.app import wiring

        ledger = next((getattr(c, "ledger", None) for c in self.components if c.name == "oms"), None)
        self.grpc, self.bound_port = await wiring.start_grpc(self.bus, self.toml, self.grpc_port, ledger=ledger)
        # Stopped by _stop_all; this is for a module that fails to start (stopping it again does nothing).
        self.res.on_close(functools.partial(self.grpc.stop, 0))
        runners: list[asyncio.Task[Any]] = []
        for i, comp in enumerate(self.components):
            try:
                await comp.start()
            except Exception as exc:
                error = runtime.describe_error(exc)  # its traceback, if any, comes with it raised (cmd_run.handle)
                log.error("failed to start; stopping the modules already started", extra={"component": comp.name,
                                                                                           "error": error})
                await self._failure_note(f"{comp.name} failed to start: {error}")
                await self._stop_all(runners, self.components[:i])
                raise
            runners.append(tg.create_task(watch.watch(comp.name, comp.run()), name=f"{comp.name}:run"))
        self.grpc.set_all_serving()
        return runners

    async def _stop_all(self, runners: list[asyncio.Task[Any]], started: list[Component]) -> None:
        """New gRPC calls refused, then sources, the order path drained, then each of the `started` modules in reverse
        start order, and the gRPC streams last (they carry what the stop published), each bounded: the OMS
        records what it will not place and waits for placements in flight; the bus is drained after each stop,
        so the order updates that produced reach risk and the notifier, which stops last (and sends its queue).
        No step runs into the part of the stop budget kept for the modules after it and the closing; a step that
        runs out of time is logged as an error and left behind."""
        self.guard.begin()
        await self._system_note("NeoPulse stopping", "shutting down cleanly")
        if self.grpc is not None:
            from services.app.split import acting_grace_s

            grace = acting_grace_s(self.toml, 0.0)  # calls in progress (a PlaceOrder waiting for the book) finish
            # NOT_SERVING and no new calls; the streams stay open to the end (below): what the order path and the
            # modules publish while they stop (the fills of orders in flight) must reach their followers.
            await self._step("gRPC server", self.grpc.stop_serving(grace), grace + GRPC_STOP_S)
        owned = {f"{comp.name}:run" for comp in started}
        # The feed and everything not a module stop now; a module's own loop (the OMS's broker events, the
        # notifier's sender) runs until that module has stopped.
        keep = CLOSE_S + MODULE_SHARE_S * len(started)
        self.guard.step = "sources"
        await self._cancel([r for r in runners if r.get_name() not in owned or r.get_name() == "ingestion:run"], keep)
        self.guard.step = "order path"
        if not await self.bus.drain(within_s=self.guard.within(self.order_path_drain_s, keep)):
            log.warning("order path not drained in time; the OMS records the decisions left as not sent")
        by_name = {r.get_name(): r for r in runners}
        for comp in reversed(started):
            keep -= MODULE_SHARE_S
            await self._step(comp.name, comp.stop(), COMPONENT_STOP_S, keep)
            runner = by_name.get(f"{comp.name}:run")
            await self._cancel([runner] if runner else [], keep)
            if not await self.bus.drain(within_s=self.guard.within(STEP_S, keep)):
                log.warning("bus not drained after a stop", extra={"component": comp.name})
        if self.grpc is not None:  # the streams take what the hubs hold, then end
            await self._step("gRPC streams", self.grpc.stop(), self.grpc.settings.shutdown_grace_s + GRPC_STOP_S)
        if self._unstopped:
            self.left_behind += [r.get_name() for r in self._unstopped]
            log.error("tasks that would not stop", extra={"tasks": [r.get_name() for r in self._unstopped]})

    async def _step(self, what: str, work: Awaitable[Any], limit_s: float, keep_s: float = CLOSE_S) -> bool:
        """One stop step, bounded by the budget (runtime.stop_step). True when it finished."""
        return await runtime.stop_step(self.guard, what, work, limit_s, keep_s, self.left_behind, self.failed_steps)

    def _name_tasks_left(self, before: set[asyncio.Task[Any]]) -> None:
        """After everything stopped and closed, a task this run started and nobody ended (an order placement whose
        broker call hangs, say) is left behind: named in the log, and in the exit code."""
        self.guard.step = "stopped"
        current = asyncio.current_task()
        left = sorted(t.get_name() for t in asyncio.all_tasks() - before if t is not current and not t.done())
        if left:
            self.left_behind += left
            log.error("did not stop in time; left behind", extra={"step": "tasks", "tasks": left})

    async def _cancel(self, tasks: list[asyncio.Task[Any]], keep_s: float) -> None:
        for task in tasks:
            task.cancel()
        self._unstopped += await runtime.cancel_and_wait(tasks, self.guard.within(STEP_S, keep_s))

    async def _close(self) -> None:
        """What the monolith opened, newest first, each closer bounded (the last CLOSE_S of the budget is theirs)."""
        for fn in reversed(self.res.closers):
            await self._step(f"closing {getattr(fn, '__qualname__', fn)}", fn(), CLOSE_S, keep_s=0.0)

    async def _system_note(self, title: str, text: str, severity: ops_pb2.Severity = ops_pb2.SEVERITY_INFO) -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=severity, title=title, text=text,
            ts_ns=time.time_ns(), source="app"))

    async def _failure_note(self, what: str) -> None:
        """The trader told that trading stops and why, before the ordered stop: the notifier, which stops last,
        sends it then (the urgent first)."""
        await self._system_note(f"{what}; stopping", "NeoPulse stops: decisions not yet placed are recorded as not "
                                "sent, orders in flight are awaited; then it exits. See the log.",
                                ops_pb2.SEVERITY_CRITICAL)

    def _describe(self) -> str:
        s = self.settings
        return f"mode {s.mode}, source {s.source}, {len(s.symbols)} symbols, gRPC :{self.bound_port}"


def check_kotak_source(settings: AppSettings, missing_credentials: list[str]) -> None:
    """source=kotak asks for Kotak's real market: without a login it must not quietly become the simulator's."""
    if settings.source == "kotak" and missing_credentials:
        raise ConfigError(f"source=kotak needs Kotak credentials; not set: {', '.join(missing_credentials)} (the "
                          "environment, or files of those names in NEOPULSE_SECRETS_DIR); for the bundled simulator "
                          "set NEOPULSE_SOURCE=simulator")


def check_live_grpc(settings: AppSettings, grpc: GrpcSettings) -> None:
    """Live, the control API must not be open to the network: PlaceOrder, SetRiskLimits, ReleaseKillSwitch."""
    if settings.mode == "live" and grpc.open_to_the_network():
        raise ConfigError(f"mode=live with gRPC on {grpc.host} (beyond this machine) needs [grpc] auth_token "
                          "(NEOPULSE_GRPC_AUTH_TOKEN, or a secrets file): anyone reaching the port could place orders "
                          "and release the kill switch; or serve on 127.0.0.1")


def check_live_target(settings: AppSettings, stand_ins: list[str]) -> None:
    """A live run goes to Kotak's servers, or to a stand-in on this machine (a rehearsal against `neopulse sim`, its
    database stamped simulated): never to another host, which would take the orders, the MPIN and the TOTP, or the
    session's tokens (a NEOPULSE_KOTAK_BASE_URL or _FEED_URL left set from a simulator run)."""
    if settings.mode != "live":
        return
    for stand_in in stand_ins:
        host = urlsplit(stand_in).hostname or stand_in
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"mode=live with [kotak] {stand_in!r} (base_url, feed_url, order_feed_url or "
                              f"environment): live orders, your MPIN and TOTP or the session would go to {host!r}, "
                              "not Kotak's servers; unset NEOPULSE_KOTAK_BASE_URL, _FEED_URL, _ORDER_FEED_URL (they "
                              "are for `neopulse sim`) and NEOPULSE_KOTAK_ENVIRONMENT")
    if stand_ins:
        log.warning("live run against a Kotak stand-in on this machine, not Kotak: its database is stamped as a "
                    "simulated market", extra={"urls": stand_ins})


def check_live_mode(settings: AppSettings, live_flag: bool, has_credentials: bool) -> None:
    if live_flag and settings.mode != "live":
        # A trader who asked for live and got paper would take paper fills (and Telegram's "Filled") for real ones.
        raise ConfigError(f"--live needs mode=live (NEOPULSE_MODE=live or mode = \"live\" in the config file); mode "
                          f"is {settings.mode!r}, which would only paper-trade")
    if settings.mode == "live" and not live_flag:
        raise ConfigError("mode=live needs the explicit --live flag; without it NeoPulse only paper-trades")
    if settings.mode == "live" and not settings.use_database:
        # Real orders need their write-ahead, the kill switch and the day's loss state to outlive the process: in
        # memory, a restart would forget the orders at Kotak (and place a replayed decision again) and release both.
        raise ConfigError("mode=live needs the database (the order ledger, the kill switch and the daily-loss state "
                          "must survive a restart); drop --no-db, or set DATABASE_URL for an external PostgreSQL")
    if settings.mode == "live" and not has_credentials:
        raise ConfigError("mode=live needs Kotak credentials: set NEOPULSE_KOTAK_CONSUMER_KEY, _MOBILE, _UCC, "
                          "_MPIN and _TOTP_SECRET (or a secrets file)")
    if settings.mode == "live" and settings.source != "kotak":
        # Otherwise a "live" run would trade against the bundled simulator (or paper-fill a synthetic market)
        # while announcing itself live: square-offs and kill-switch cancels would never reach Kotak.
        raise ConfigError(f"mode=live trades through Kotak: set NEOPULSE_SOURCE=kotak (source is {settings.source!r})")
