"""The risk module: feeds the RiskEngine from SIGNALS, TICKS and ORDER_UPDATES, publishes decisions on ORDERS.

Serves RiskService requests on the bus, notifies state changes, asks the OMS to cancel orders on a kill switch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Counter, Gauge

from services.risk.config import Limits, RiskSettings
from services.risk.engine import HALTED, RiskEngine, StateChange, state_name
from services.risk.orders import manual_order
from services.risk.state import MemoryRiskState, Published, RiskStateStore, stopped_cleanly
from shared import rpc
from shared.bus import Bus, Sequencer, Topic
from shared.clock import Clock
from shared.component import Component
from shared.contracts import market_pb2, oms_pb2, ops_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput, NotFound, NotSent, RetryableError, RiskRejected, TradingHalted
from shared.instruments import InstrumentBook
from shared.money import fmt_inr

log = logging.getLogger(__name__)

DECISIONS = Counter("neopulse_risk_decisions", "Risk decisions", ["accepted", "reason_code"])
CANCEL_FAILURES = Counter("neopulse_risk_cancel_failures",
                          "Orders a kill switch could not cancel, even after retrying")
TRADING_STATE = Gauge("neopulse_risk_trading_state", "Trading state: 1 ACTIVE, 2 REDUCING, 3 HALTED (TradingState)")
KILL_SWITCH = Gauge("neopulse_risk_kill_switch_engaged", "1 while the kill switch is engaged")
DAILY_PNL = Gauge("neopulse_risk_daily_pnl_paise", "Today's P&L as the loss limits count it (realised + marks - "
                  "charges), in paise")
SIGNAL_ERRORS = Counter("neopulse_risk_signal_errors", "Signals dropped because deciding them raised (a bug; logged)")
STATE_SAVE_ERRORS = Counter("neopulse_risk_state_save_errors",
                            "Kill switch / trading state changes not saved (they would not survive a restart)")
MAX_CANCEL_BACKOFF_S = 2.0
SAVE_RETRY_S = 1.0  # a failed state save is tried again at most this often, off the timer
MAX_BURST = 100  # signals decided in one handler call at most

SEVERITY: dict[int, ops_pb2.Severity] = {risk_pb2.TRADING_STATE_ACTIVE: ops_pb2.SEVERITY_INFO,
            risk_pb2.TRADING_STATE_REDUCING: ops_pb2.SEVERITY_WARNING, HALTED: ops_pb2.SEVERITY_CRITICAL}
HALT_CODES = frozenset({"TRADING_HALTED"})
# Denials that mean the order itself is malformed (INVALID_ARGUMENT), not that a limit refused it.
INPUT_FIELDS = {"INVALID_QUANTITY": "order.quantity", "LOT_SIZE": "order.quantity",
                "INVALID_PRICE": "order.price_paise", "TICK_SIZE": "order.price_paise",
                "UNKNOWN_INSTRUMENT": "order.token", "NOT_TRADABLE": "order.token", "INVALID_ORDER": "order"}


@functools.cache
def _decisions_counter(accepted: bool, reason_code: str) -> Any:
    return DECISIONS.labels(str(accepted).lower(), reason_code)  # labels() costs more than a decision's checks


class RiskModule(Component):
    name = "risk"

    def __init__(self, bus: Bus, settings: RiskSettings, clock: Clock, state: RiskStateStore | None = None) -> None:
        """`state`: where the kill switch and the day's trading state are kept across restarts (the database's
        risk_state table when there is one; in memory otherwise)."""
        super().__init__(bus)
        self.settings = settings
        self.state_store: RiskStateStore = state if state is not None else MemoryRiskState()
        self.clock = clock
        self.instruments = InstrumentBook()
        self.engine = RiskEngine(settings.limits(), clock, self.instruments,
                                 square_off_retry_s=settings.square_off_retry_s, sessions=settings.market_sessions(),
                                 square_off_times=settings.square_off_hhmm_by_segment())
        self.sequencer = Sequencer()
        self.published = Published(self.sequencer.value)  # saved with the state: where the decisions got to
        # Held from deciding an order until its decision is on ORDERS: publish order is sequence order (a consumer
        # that drops a sequence <= the last one seen never loses a decision), and an order waiting for its turn
        # is decided by the state and limits of the moment it goes out (a kill switch engaged meanwhile halts it).
        self._publish_lock = asyncio.Lock()
        # Set by stop() under the publish lock: no decision goes out after the state is saved as a clean stop.
        self._stopping = False
        # Held from taking state changes until they are on NOTIFICATIONS: announced in the order they happened.
        self._notify_lock = asyncio.Lock()
        # The durable state changed without a state change to carry it (limits set), or its last save failed: the
        # next _notify_changes(save=True) saves it (the timer's, at the latest).
        self._unsaved = False
        self._save_failing = False  # the last save failed (said once, not at every retry)
        self._save_retry: asyncio.Task[None] | None = None  # the background retry of a failed save (_retry_save_later)
        self._next_save_retry = 0.0  # monotonic: no retry before this
        # Counts kill-switch engagements and releases: cancels started under one stop when it is over.
        self._kill_epoch = 0
        self._loss_interval_s = settings.loss_check_interval_ms / 1000
        self._next_loss_check = 0.0
        self._tasks: asyncio.TaskGroup | None = None  # run()'s TaskGroup: background work it owns
        self._loaded = asyncio.Event()  # the OMS's positions and orders are read (start)
        engine = self.engine  # read at each scrape
        TRADING_STATE.set_function(lambda: engine.state)
        KILL_SWITCH.set_function(lambda: engine.kill_switch_engaged)
        DAILY_PNL.set_function(engine.daily_pnl_paise)

    async def start(self) -> None:
        # Subscribed before the OMS's snapshots are read, applied after: an update published while they are read
        # (the OMS runs meanwhile in the monolith) is queued, not lost, and what they include counts once.
        self.bus.subscribe(Topic.ORDER_UPDATES, "risk", self._on_order_update)
        await self.instruments.load_from(self.bus)
        saved = await self.state_store.load()
        self._restore_limits(saved)  # before the positions: the limits in force decide the loss state they give
        await self._load_positions()
        await self._load_orders()
        await self._restore_state(saved)
        self._loaded.set()
        self.bus.subscribe(Topic.SIGNALS, "risk", self._on_signals, max_batch=MAX_BURST)
        self.bus.subscribe(Topic.TICKS, "risk", self._on_ticks)
        self.bus.handle(rpc.SUBMIT_ORDER, self.submit_order)
        self.bus.handle(rpc.CHECK_MODIFY, self.check_modify)
        self.bus.handle(rpc.GET_RISK_STATE, self.get_risk_state)
        self.bus.handle(rpc.SET_RISK_LIMITS, self.set_risk_limits)
        self.bus.handle(rpc.SET_KILL_SWITCH, self.set_kill_switch)
        log.info("risk started", extra={"instruments": len(self.instruments)})
        self.ready.set()

    async def _load_orders(self) -> None:
        """After a restart the OMS's open orders count again, and every order it holds (the newest 10,000, open
        or not) is a DUPLICATE_ORDER when a replayed signal asks for it: accepted again, the OMS would ignore it
        and it would stay counted as open here. No OMS reachable yet means none to count. Read after the
        positions, so that an update landing between the two reads is neither lost nor counted twice."""
        try:
            working = await self.bus.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(open_only=True, limit=10_000))
            recent = await self.bus.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(limit=10_000))
        except (NotFound, RetryableError):
            log.info("no order service to ask for open orders; starting with none")
            return
        self.engine.load_orders([*recent.orders, *working.orders])

    def _restore_limits(self, saved: dict[str, Any] | None) -> None:
        """After a restart: the limits changed at run time hold again, said in the log (those the config file has
        changed since, or no longer takes, are left at the config's, said as a warning)."""
        if saved is None:
            return
        restored = self.engine.restore_limits(saved)
        if restored.applied:
            log.warning("risk limits changed at run time restored over the config's",
                        extra={"limits": restored.applied})
        for name, why in restored.dropped.items():
            log.warning("risk limit changed at run time not restored", extra={"limit": name, "why": why})
        if restored.dropped:
            self._unsaved = True  # the record holds them no more (saved with the next save)

    async def _restore_state(self, saved: dict[str, Any] | None) -> None:
        """After a restart: an engaged kill switch stays engaged, and a daily-loss REDUCING or HALTED holds for the
        rest of its day, as if risk had not restarted (announced, as any state change)."""
        self._carry_over(saved)
        if saved is not None:
            self.engine.restore_durable_state(saved)
            log.info("risk state restored", extra={"state": state_name(self.engine.state),
                                                   "kill_switch": self.engine.kill_switch_engaged})
            if stopped_cleanly(saved):  # the record is this process's from now on: a crash must not pass for a stop
                await self.state_store.save(self.published.saved_with(self.engine.durable_state(), stopped=False))
        elif not self.state_store.durable:
            log.info("no database: the kill switch and the day's trading state last until this process stops")
        await self._notify_changes(save=True)

    async def _load_positions(self) -> None:
        """After a restart, today's positions and P&L count again against the position and loss limits."""
        try:
            reply = await self.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        except (NotFound, RetryableError):
            log.info("no order service to ask for positions; starting flat")
            return
        self.engine.restore_positions(reply.positions, reply.as_of_sequence)

    async def run(self) -> None:
        """The clock timer (daily loss from marks, day roll-over, square-off); owns background retries."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                while True:
                    if not self.clock_driven:
                        await self.tick_timer()
                    await asyncio.sleep(self.settings.timer_interval_ms / 1000)
            finally:
                self._tasks = None

    async def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in run()'s TaskGroup; awaited here when run() is not running (a module only started)."""
        if self._tasks is None:
            await work
        else:
            self._tasks.create_task(work)

    async def on_clock(self) -> None:
        await self.tick_timer()

    async def tick_timer(self) -> None:
        if self._stopping:  # run() outlives stop() (the loop is cancelled after it): it must not decide any more
            return
        self.engine.evaluate_loss()
        for order_id in self.engine.square_off_cancels():
            log.warning("square-off: cancelling a working MIS order", extra={"order_id": order_id})
            await self._cancel(order_id)  # refused or failed: offered again after square_off_retry_s
        for order_id in self.engine.loss_cancels():
            log.warning("daily loss: cancelling a working order that would grow a position",
                        extra={"order_id": order_id, "state": state_name(self.engine.state)})
            await self._cancel(order_id)  # likewise
        for order in self.engine.square_off_due():
            try:
                decision = await self._decide_and_publish(functools.partial(self.engine.decide, order))
            except NotSent:  # stop() came in between: the next process squares it off
                return
            log.warning("square-off order", extra={"order_id": order.client_order_id, "token": order.token,
                                                   "accepted": decision.accepted, "reason": decision.reason})
        for alert in self.engine.left_open.pop():
            log.error("MIS position left open after the close", extra=dict(alert.fields))
            await self.bus.publish(Topic.NOTIFICATIONS, alert)
        await self._notify_changes()  # a state change: saved and announced now
        if self._unsaved:
            self._retry_save_later()

    def _retry_save_later(self) -> None:
        """A save that failed (the database away), or limits whose save failed, is tried again in a task of its own,
        at most every SAVE_RETRY_S: the timer (the square-off, its cancels, the loss cancels) never waits on a
        database that hangs or takes its connect timeout to fail."""
        now = time.monotonic()
        if (self._save_retry is not None and not self._save_retry.done()) or now < self._next_save_retry:
            return
        self._next_save_retry = now + SAVE_RETRY_S
        self._save_retry = asyncio.get_running_loop().create_task(self._notify_changes(save=True),
                                                                  name="risk:state-retry")

    # -- topics ---------------------------------------------------------------
    async def _on_signals(self, signals: list[trading_pb2.Signal]) -> None:
        """The signals queued (a minute's close publishes several at once), decided and published in their order
        under one hold of the publish lock; counting and logging the decisions waits until all are out. A signal
        whose decision fails is logged and counted, and the others go on (as when each was its own message)."""
        decided = []
        async with self._publish_lock:
            if self._stopping:
                log.warning("signals not decided: risk is stopping", extra={"signals": len(signals)})
                return
            for signal in signals:
                try:
                    decision = self.engine.decide_signal(signal)
                except Exception:
                    SIGNAL_ERRORS.inc()
                    log.exception("risk decision failed; signal dropped", extra={"signal_id": signal.signal_id,
                                                                               "strategy": signal.strategy})
                    continue
                await self._publish_decision(decision)
                decided.append(decision)
        for decision in decided:
            self._count(decision)
        await self._notify_changes()

    async def _on_ticks(self, batch: market_pb2.TickBatch) -> None:
        self.engine.on_ticks(batch.ticks)
        # Marks move the loss; live, it is evaluated at most every loss_check_interval. A backtest's (clock_driven)
        # every batch: it decides whether the batch's own prices move the state before the signals made from them
        # are decided, and that must follow the data, not how many wall-clock ms the machine took since the last.
        if not self.clock_driven:
            now = time.monotonic()
            if now < self._next_loss_check:
                return
            self._next_loss_check = now + self._loss_interval_s
        self.engine.evaluate_loss()
        await self._notify_changes()

    async def _on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        if not self._loaded.is_set():
            await self._loaded.wait()
        self.engine.on_order_update(update)
        await self._notify_changes()

    # -- requests -------------------------------------------------------------
    async def submit_order(self, request: risk_pb2.SubmitOrderRequest) -> risk_pb2.SubmitOrderResponse:
        """A manual order: malformed -> InvalidInput; denied -> published rejection + RiskRejected/TradingHalted."""
        order = manual_order(request.order, self.instruments, self.sequencer)
        decision = await self._decide_uncancelled(functools.partial(self.engine.decide, order))
        await self._notify_changes()
        _raise_denial(decision)
        return risk_pb2.SubmitOrderResponse(decision=decision)

    async def check_modify(self, request: risk_pb2.CheckModifyRequest) -> risk_pb2.CheckModifyResponse:
        """A change of a working order (the OMS's ModifyOrder asks): denied -> RiskRejected/TradingHalted, or
        InvalidInput for a malformed one; nothing is published either way (the OMS's updates carry the change)."""
        if not request.HasField("order") or not request.order.client_order_id:
            raise InvalidInput("order", "the order with its new terms is required, client_order_id naming it")
        if request.filled_quantity < 0:
            raise InvalidInput("filled_quantity", f"must be 0 or more, got {request.filled_quantity}")
        decision = self.engine.decide_modify(request.order, request.filled_quantity)
        self._count(decision)
        await self._notify_changes()
        _raise_denial(decision)
        return risk_pb2.CheckModifyResponse(decision=decision)

    async def get_risk_state(self, request: risk_pb2.GetRiskStateRequest) -> risk_pb2.GetRiskStateResponse:
        return self.engine.snapshot()

    async def set_risk_limits(self, request: risk_pb2.SetRiskLimitsRequest) -> risk_pb2.SetRiskLimitsResponse:
        if not request.HasField("limits"):
            raise InvalidInput("limits", "missing; send every limit (GetRiskState shows the current ones)")
        limits = Limits.from_proto(request.limits)  # all or nothing: raises before anything changes
        self.engine.set_limits(limits)
        self._unsaved = True  # kept across a restart, though no state change may come of it
        log.warning("risk limits replaced", extra={"limits": limits.model_dump()})
        await self._notify_changes(save=True)  # saved (and any state change announced) even if the caller leaves
        return risk_pb2.SetRiskLimitsResponse(limits=limits.to_proto())

    async def set_kill_switch(self, request: risk_pb2.SetKillSwitchRequest) -> risk_pb2.SetKillSwitchResponse:
        """Engaged (or released) here at once; the rest (the cancel round asked for, the save, the announcement)
        runs to its end even if the caller gives up (a request timeout, an RPC deadline: in the monolith the
        handler runs in the caller's task): cut halfway, it left the switch engaged in memory only, unannounced,
        and the orders working."""
        self.engine.set_kill_switch(request.engaged, request.reason)
        self._kill_epoch += 1
        log.warning("kill switch", extra={"engaged": request.engaged, "reason": request.reason})
        cancel = request.engaged and request.cancel_open_orders
        await self.bus.to_the_end(self._kill_switch_set(cancel), "risk:kill-switch")
        return risk_pb2.SetKillSwitchResponse(state=self.engine.state)

    async def _kill_switch_set(self, cancel: bool) -> None:
        """The cancel round starts before the save, not after it: stopping the orders must not wait for a slow
        database. The reply still waits for the save, so a switch answered engaged survives a restart."""
        if cancel:
            await asyncio.gather(self._cancel_open_orders(), self._notify_changes())
        else:
            await self._notify_changes()

    async def _cancel_open_orders(self) -> None:
        """Cancel every open order now; those the OMS refuses (not yet at the broker) are retried in the background.
        Square-off orders are left working: HALTED admits them because they only close intraday positions."""
        epoch, failed = self._kill_epoch, []
        for order_id in [cid for cid, o in self.engine.open_orders.items() if not o.square_off]:
            if self._kill_epoch != epoch:
                return  # released (or engaged anew) while cancelling: the rest stay as the operator now wants
            if not await self._cancel(order_id):
                failed.append(order_id)
        if failed:
            await self._in_background(self._retry_cancels(failed, epoch))

    async def _cancel(self, order_id: str) -> bool:
        try:
            await self.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=order_id))
        except Exception as exc:  # one failed cancel must not stop the others
            log.warning("cancel failed; will retry", extra={"order_id": order_id, "error": str(exc)})
            return False
        return True

    async def _retry_cancels(self, order_ids: list[str], epoch: int) -> None:
        """Retry with a doubling delay until each order is cancelled or terminal, the engagement `epoch` is over
        (released, even if engaged again since: that one cancels what it asked for) or cancel_retry_window_ms is
        over; what is left is counted, logged and a CRITICAL notification. Cut short by a stop, so is what is left
        then (the notifier stops last and sends it)."""
        loop = asyncio.get_running_loop()
        window_s = self.settings.cancel_retry_window_ms / 1000
        deadline = loop.time() + window_s
        delay = self.settings.cancel_retry_backoff_ms / 1000
        left = order_ids
        try:
            while left and loop.time() < deadline and self._kill_epoch == epoch:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, MAX_CANCEL_BACKOFF_S)
                still: list[str] = []
                for order_id in left:
                    if self._kill_epoch != epoch:
                        return
                    if order_id in self.engine.open_orders and not await self._cancel(order_id):
                        still.append(order_id)
                left = still
        except asyncio.CancelledError:
            await self._not_cancelled(left, epoch, "NeoPulse stopped while retrying them")
            raise
        await self._not_cancelled(left, epoch, f"the OMS refused to cancel them for {window_s:g} s")

    async def _not_cancelled(self, order_ids: list[str], epoch: int, why: str) -> None:
        left = [o for o in order_ids if o in self.engine.open_orders]
        if not left or self._kill_epoch != epoch:
            return
        CANCEL_FAILURES.inc(len(left))
        log.error("kill switch could not cancel orders", extra={"order_ids": left, "count": len(left), "why": why})
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, severity=ops_pb2.SEVERITY_CRITICAL,
            title=f"Kill switch: {len(left)} open order(s) NOT cancelled",
            text=f"{', '.join(left)}: {why}; check the broker's order book and cancel them by hand",
            ts_ns=self.clock.now_ns(), source="risk", fields={"order_ids": ",".join(left)}))

    # -- publishing -----------------------------------------------------------
    async def _decide_uncancelled(self, decide: Callable[[], trading_pb2.RiskDecision]) -> trading_pb2.RiskDecision:
        """_decide_and_publish for a caller that may give up (an RPC deadline), which must not stop it: a decided
        order left unpublished would count as open here all day, and a half-sent one would break sequence order.
        Not for signals: their consumer is not cancelled while running, and a task would cost the order path a
        loop turn."""
        return await self.bus.to_the_end(self._decide_and_publish(decide), "risk:manual-order")

    async def _decide_and_publish(self, decide: Callable[[], trading_pb2.RiskDecision]) -> trading_pb2.RiskDecision:
        """Decide when it is this order's turn to go out, not before: no other decision, kill switch or limit
        change can come between the checks and the publish but one that is already on its way."""
        async with self._publish_lock:
            if self._stopping:
                raise NotSent("risk is stopping: the order was not decided")
            decision = decide()
            await self._publish_decision(decision)
        self._count(decision)
        return decision

    async def _publish_decision(self, decision: trading_pb2.RiskDecision) -> None:
        """Sequence and publish; the caller holds self._publish_lock (publish order is sequence order)."""
        decision.sequence = self.sequencer.next()
        self.published.note(decision.sequence, decision.accepted)
        await self.bus.publish(Topic.ORDERS, decision)

    @staticmethod
    def _count(decision: trading_pb2.RiskDecision) -> None:
        _decisions_counter(decision.accepted, decision.reason_code).inc()
        if not decision.accepted:
            log.info("order rejected", extra={"order_id": decision.order.client_order_id,
                                              "strategy": decision.strategy, "reason_code": decision.reason_code,
                                              "reason": decision.reason})

    async def _notify_changes(self, save: bool = False) -> None:
        """Save the state (before anyone is told of it), then announce each change, in the order they happened;
        `save`: save it also with no change to announce when it is due (limits set; a save that failed). To the end
        even if the caller gives up (a request's deadline): a change taken and not saved nor announced would be lost
        for good, as later calls find nothing to do."""
        if self.engine.state_changes_pending or (save and self._unsaved):
            await self.bus.to_the_end(self._save_and_announce(), "risk:state")

    async def _save_and_announce(self) -> None:
        async with self._notify_lock:
            pending = self.engine.state_changes_pending
            if not pending and not self._unsaved:
                return  # another call saved and announced them meanwhile
            self._unsaved, saved = False, False  # this save covers every change so far; one made during it is due
            try:
                saved = await self._save_state(retry=not pending)
            finally:
                self._unsaved = self._unsaved or not saved
            # Taken only now that the save is done (those that came meanwhile are the next save's). A failed save
            # still announces them (the trader must know the state in force here), and is retried by the timer.
            for change in self.engine.pop_state_changes(pending):
                await self.bus.publish(Topic.NOTIFICATIONS, self._notification(change))

    async def restore_published(self, started_at: int = 0) -> Published | None:
        """How far the decisions of this module's earlier processes got, from the record they left; None without a
        database. Split mode asks before its server starts, to tell the OMS's bridge (start() takes it over too);
        `started_at`, where its streams say this process starts: one that crashed before published below it (a
        resume point the OMS took at it is this process's)."""
        if not self.state_store.durable:
            return None
        if started_at:
            self.published.unknown_below = min(self.published.unknown_below, started_at)
        self._carry_over(await self.state_store.load())
        return self.published

    def _carry_over(self, saved: dict[str, Any] | None) -> None:
        """Take over the earlier processes' record, and number the decisions above all they published: the sequence
        starts at this process's start time, and a clock stepped back since would number below them, where a
        consumer resuming after their last drops a decision as already seen."""
        self.published.carry_over(saved)
        self.sequencer.value = max(self.sequencer.value, self.published.highest["all"])

    async def stop(self) -> None:
        """Save the state with how far the decisions went: none are published from here on (split mode has stopped
        the inputs), so the next process can tell the OMS whether any it never received are gone."""
        async with self._publish_lock:  # what is on its way goes out first; nothing after it
            self._stopping = True
        async with self._notify_lock:
            await self._save_state(stopped=True)

    async def _save_state(self, stopped: bool = False, retry: bool = False) -> bool:
        """Whether it was saved. A failed save (the database down) leaves the state in force here, said loudly: it
        would not survive a restart. `retry`: no state change rides on it (the timer trying again, limits set), said
        only if the last save had succeeded."""
        try:
            await self.state_store.save(self.published.saved_with(self.engine.durable_state(), stopped))
        except Exception as exc:
            STATE_SAVE_ERRORS.inc()
            if retry and self._save_failing:
                return False
            self._save_failing = True
            log.exception("risk state not saved; it will not survive a restart")
            await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
                kind=ops_pb2.NOTIFICATION_KIND_RISK_BREACH, severity=ops_pb2.SEVERITY_CRITICAL,
                title="Risk state not saved", source="risk", ts_ns=self.clock.now_ns(),
                text=f"Trading is {state_name(self.engine.state)} here, but saving it failed ({type(exc).__name__}): "
                     "a restart now would not keep it. Check the database."))
            return False
        if self._save_failing:
            self._save_failing = False
            log.warning("risk state saved again after failed saves", extra={"state": state_name(self.engine.state)})
        return True

    def _notification(self, change: StateChange) -> ops_pb2.Notification:
        if change.kind == ops_pb2.NOTIFICATION_KIND_KILL_SWITCH:
            title = f"Kill switch: trading {state_name(change.state)}"
        else:
            title = f"Risk: trading {state_name(change.previous)} -> {state_name(change.state)}"
        pnl = self.engine.daily_pnl_paise()
        return ops_pb2.Notification(
            kind=change.kind, severity=SEVERITY.get(change.state, ops_pb2.SEVERITY_WARNING), title=title,
            text=change.reason, ts_ns=self.clock.now_ns(), source="risk",
            fields={"state": state_name(change.state), "previous_state": state_name(change.previous),
                    "daily_pnl": fmt_inr(pnl)})


def _raise_denial(decision: trading_pb2.RiskDecision) -> None:
    """A denied order request as the error its caller gets: InvalidInput for a malformed order, TradingHalted,
    or RiskRejected with the reason code."""
    if decision.accepted:
        return
    if decision.reason_code in INPUT_FIELDS:
        raise InvalidInput(INPUT_FIELDS[decision.reason_code], decision.reason)
    error = TradingHalted if decision.reason_code in HALT_CODES else RiskRejected
    raise error(decision.reason_code, decision.reason)
