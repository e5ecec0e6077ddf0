"""The strategy module: ticks in, candles and signals out, strategies controlled over the bus.

Consumes TICKS, ORDER_UPDATES and rejections on ORDERS; publishes CANDLES and SIGNALS; serves StrategyService.
At start it reads the stored candles (warmup.py) when it has a database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from services.strategy import restore, warmup
from services.strategy.config import StrategySettings
from services.strategy.engine import NOT_RESTORED, Output, StrategyEngine, build_strategies
from services.strategy.orders import Change
from services.strategy.state import MemoryStrategyState, StrategyStateStore
from shared import rpc
from shared.bus import Bus, Priority, Sequencer, Topic
from shared.clock import Clock, ist_datetime, ist_day_number, minute_start_ns
from shared.component import Component
from shared.contracts import market_pb2, oms_pb2, ops_pb2, strategy_pb2, trading_pb2
from shared.errors import InvalidInput, NotFound, RetryableError
from shared.instruments import InstrumentBook
from shared.metrics import start_at_zero
from shared.money import fmt_inr
from shared.positions import SQUAREOFF_TAG

log = logging.getLogger(__name__)

CANDLES = Counter("neopulse_strategy_candles", "Candles closed")
SIGNALS = Counter("neopulse_strategy_signals", "Signals published", ["strategy"])
STALE_CANCELS = Counter("neopulse_strategy_stale_order_cancels", "Working orders cancelled for age (stale signals)")
CANCEL_RETRY_NS = 10 * 1_000_000_000  # a stale order whose cancel was refused is offered again after this (clock)
MAX_QUOTES = 200  # GetQuotesRequest.symbols
MAX_REASON_CHARS = 500  # PauseStrategyRequest.reason: kept, and shown in every ListStrategies and /strategies
ORDER_CHANGES = Counter("neopulse_strategy_order_changes", "Strategies' changes and cancels of their working orders "
                        "sent to the OMS, by its answer (made, or refused)", ["strategy", "kind", "outcome"])
LATE_TICKS = Counter("neopulse_strategy_late_ticks", "Out-of-order ticks ignored (older than the open minute)")
STATE_SAVE_ERRORS = Counter("neopulse_strategy_state_save_errors", "Strategy states (pause, run-time params) not saved")


class StrategyModule(Component):
    name = "strategy"

    def __init__(self, bus: Bus, settings: StrategySettings, clock: Clock,
                 history: warmup.CandleHistory | None = None, state: StrategyStateStore | None = None) -> None:
        super().__init__(bus)
        self.settings = settings
        self.clock = clock
        self.history = history  # the stored candles to warm up from; None: no database
        # Each strategy's pause, run-time params and loss-limit day (state.py); in memory without a database.
        self.state_store: StrategyStateStore = state if state is not None else MemoryStrategyState()
        self._saving = asyncio.Lock()  # one save at a time, each of the state as it is then: the last one holds
        self.instruments = InstrumentBook()
        self.sequencer = Sequencer()  # the signals', taken as they are published (_publish)
        # Held while signals are numbered and published: the numbers rise in the order they go out, which split
        # mode's StreamSignals bridge relies on (it drops a sequence at or below the last it saw).
        self._publishing = asyncio.Lock()
        self.engine: StrategyEngine | None = None
        self._late_reported = 0
        self._loaded = asyncio.Event()  # the OMS's orders are read (start)
        # Strategies' order changes, sent by run(). Bounded by the working orders: one change of an order at a time.
        self._changes: asyncio.Queue[Change] = asyncio.Queue()

    async def start(self) -> None:
        await self.instruments.load_from(self.bus)
        strategies = build_strategies(self.settings, self.instruments)
        self.engine = StrategyEngine(strategies, self.instruments, self.clock)
        refused = ((s, what, "refused") for s in self.engine.strategies for what in ("change", "cancel"))
        start_at_zero(ORDER_CHANGES, *refused)  # NeoPulseStrategyOrderChangesRefused counts from the first one
        await self._restore_state()  # run-time params first: they may change what the warm-up reads
        # Warm before its positions come back (a warm-up sees flat strategies, and order updates need not wait).
        await self._warm_up()
        # As in risk: subscribed before the OMS's orders are read, applied after, so none published meanwhile is
        # lost and those the read includes count once.
        # Its own fills at its ticks' level: it must know what filled before it acts on later prices.
        self.bus.subscribe(Topic.ORDER_UPDATES, self.name, self._on_order_update, priority=Priority.SIGNAL_SOURCE)
        await self._load_orders()
        self._loaded.set()
        self.bus.subscribe(Topic.TICKS, self.name, self._on_ticks, priority=Priority.SIGNAL_SOURCE)
        # Risk's answers to its signals at its ticks' level too: the OMS places an order before the strategy notes
        # that it was accepted (as the ORDER_PATH it would run first, between the decision and its order).
        self.bus.subscribe(Topic.ORDERS, self.name, self._on_decision, priority=Priority.SIGNAL_SOURCE)
        self.bus.handle(rpc.LIST_STRATEGIES, self._list)
        self.bus.handle(rpc.PAUSE_STRATEGY, self._pause)
        self.bus.handle(rpc.RESUME_STRATEGY, self._resume)
        self.bus.handle(rpc.SET_STRATEGY_PARAMS, self._set_params)
        self.bus.handle(rpc.GET_QUOTES, self._quotes)
        exits = self.engine.exits_due()  # a restored position whose exit is due goes out now, through risk
        if exits:
            log.info("exits due at start", extra={"signals": len(exits)})
            await self._publish(([], exits))
        for name in sorted(self._take_saves()):  # what the warm-up rebuilt (ORB's ranges), for the next restart
            await self._save_state(name)
        log.info("strategy ready", extra={"strategies": list(self.engine.strategies),
                                          "instruments": len(self.instruments)})
        self.ready.set()

    async def _restore_state(self) -> None:
        """Each strategy's pause, run-time params and loss-limit day as saved before the restart
        (StrategyEngine.restore_state). The database not answering: the strategies start as the config says, and a
        CRITICAL notification says so (a pause set before would not hold)."""
        engine = self.engine
        assert engine is not None
        try:
            saved = await self.state_store.load()
        except Exception as exc:
            log.exception("strategy states not read: the strategies start as the config says")
            await self._critical("Strategy states not read", "The pauses and parameters set on the strategies "
                                 f"before this start could not be read ({type(exc).__name__}): they start as the "
                                 "config says, none paused. Check them (/strategies) and the database.")
            return
        for name, state in saved.items():
            if name not in engine.strategies or not isinstance(state, dict):
                continue
            done = engine.restore_state(name, state, self.clock.now_ns())
            extra = {"strategy": name, "params": done.params, "paused": done.paused}
            if done.params or done.paused:
                log.info("strategy state restored", extra=extra)
            for key, why in done.dropped.items():
                log.warning("strategy parameter set at run time not restored", extra={
                    "strategy": name, "param": key, "reason": why})
            if done.invalid:
                log.error("strategy starts paused: its run-time parameters are not valid now", extra={
                    "strategy": name, "reason": done.invalid})
                await self._critical("Strategy paused at start", f"Strategy {name}: {done.invalid}. Set them again "
                                     "(/params) and resume it.", name)
                await self._save_state(name)

    async def _save_state(self, name: str) -> None:
        """Save what of strategy `name` outlives a restart. A failed save (the database down) leaves it in force
        here, said loudly: it would not survive a restart."""
        assert self.engine is not None
        try:
            # In turn, and the state read once this save's turn comes: two saves in flight (a pause, then a resume
            # at once) could otherwise commit out of order, the older last, and a restart bring the pause back.
            async with self._saving:
                await self.state_store.save(name, self.engine.durable_state(name))
        except Exception as exc:
            STATE_SAVE_ERRORS.inc()
            log.exception("strategy state not saved; it will not survive a restart", extra={"strategy": name})
            await self._critical("Strategy state not saved", f"Strategy {name}: its pause and parameters are in force "
                                 f"here, but saving them failed ({type(exc).__name__}): a restart now would not keep "
                                 "them. Check the database.", name)

    async def _critical(self, title: str, text: str, name: str = "") -> None:
        await self._notify(ops_pb2.SEVERITY_CRITICAL, title, text, name)

    async def _notify(self, severity: ops_pb2.Severity, title: str, text: str, name: str = "") -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=severity, source=self.name,
            title=title, text=text, ts_ns=self.clock.now_ns(), fields={"strategy": name} if name else {}))

    async def _warm_up(self) -> None:
        """Feed the strategies the candles their tokens closed before now, from the stored ticks, so that after a
        restart they decide (exits of restored positions included) at once rather than after a whole warm-up of
        live candles. Bounded by warm_up_timeout_s; without a database, or when the read is slow or fails, they
        start cold and warm up on live candles. The candle of the current minute is still open: the live ticks carry
        on from its stored ones (without a database, it is built from the live ticks alone). A backtest's replay
        (clock_driven) waits for no market: it reads for as long as that takes, and a read that fails fails the day
        (RetryableError, its reason said): cold, the strategies would trade other days than the data's, silently."""
        engine, limit = self.engine, self.settings.warm_up_timeout_s
        assert engine is not None
        needs = engine.closes_needed()
        if self.history is None or not limit:  # no strategy (needs empty): the minute in progress is read still
            why = "no stored ticks to read (no database)" if self.history is None \
                else "warm_up_timeout_s = 0"
            log.info("strategies start cold: their indicators warm up on live candles", extra={"reason": why})
            return
        started, cutoff = time.monotonic(), minute_start_ns(self.clock.now_ns())
        try:
            async with asyncio.timeout(None if self.clock_driven else limit):
                candles = await warmup.read(self.history, needs, cutoff)
                later = minute_start_ns(self.clock.now_ns())
                if later > cutoff:  # a minute closed while reading: its candles too, or the builder misses them
                    candles += await warmup.read_since(self.history, needs, cutoff, later)
                    cutoff = later
                # Every instrument's, not just the traded ones': the OMS's paper fills work from every candle.
                open_now, day_volumes = await warmup.read_open(self.history, [i.token for i in self.instruments],
                                                               cutoff)
        except Exception as exc:
            first = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc  # one token's read failed
            if self.clock_driven:
                raise RetryableError(f"the strategies' warm-up could not read the stored candles before "
                                     f"{ist_datetime(cutoff):%Y-%m-%d %H:%M} IST ({type(first).__name__}: {first}); "
                                     "a backtest day does not start cold: check the database and run it again"
                                     ) from exc
            if isinstance(exc, TimeoutError):
                log.warning("strategies start cold: reading the stored candles took longer than warm_up_timeout_s",
                            extra={"timeout_s": limit, "tokens": len(needs)})
            else:
                log.warning("strategies start cold: the stored candles could not be read",
                            extra={"error": f"{type(first).__name__}: {first}", "tokens": len(needs)})
            return
        engine.warm_up(candles, needs, cutoff, open_now, day_volumes)
        elapsed = time.monotonic() - started
        extra = {"tokens": len(needs), "candles": len(candles), "open_candles": len(open_now),
                 "elapsed_s": round(elapsed, 3)}
        if elapsed > limit / 2 and not self.clock_driven:
            log.warning("strategies warmed up from the stored candles, close to warm_up_timeout_s", extra=extra)
        else:
            log.info("strategies warmed up from the stored candles", extra=extra)

    async def _load_orders(self) -> None:
        """After a restart each strategy gets back its positions and working orders from the OMS: without them
        it would take itself for flat, enter again and never exit what it holds. No OMS reachable: none. A
        strategy whose positions cannot be restored exactly (restore.py) starts paused, with the reason."""
        engine = self.engine
        assert engine is not None
        try:
            own = {name: await self._list_orders(name) for name in engine.strategies}
            squareoffs = await self._list_orders(SQUAREOFF_TAG)
        except (NotFound, RetryableError):
            log.info("no order service to ask for orders; strategies start flat")
            return
        today = ist_day_number(self.clock.now_ns())
        chosen = restore.plan(engine.strategies.values(), own, squareoffs, SQUAREOFF_TAG, today, restore.RESTORE_LIMIT)
        applied = engine.load_orders(chosen.orders)
        refused = {**restore.ambiguous(engine.strategies.values(), self.instruments, self.clock, chosen.orders,
                                       SQUAREOFF_TAG), **chosen.refused}
        if applied:
            log.info("strategy positions restored from the order service", extra={"orders": applied})
            await self._restore_extremes()
        for name, reason in refused.items():
            await self._start_paused(name, reason)
        for name, tokens in engine.unguarded().items():
            if name not in refused:  # paused to send nothing: its own notice says to check and close what it holds
                await self._start_unguarded(name, tokens)

    async def _restore_extremes(self) -> None:
        """The restored positions' highest and lowest prices since their entries, from the stored ticks, for the
        strategies that want them (Strategy.since_entries: a trailing stop would otherwise trail from the entry
        price again, looser than before the restart). Bounded by warm_up_timeout_s; failing, they trail from the
        entry, said in the log."""
        engine, history, limit = self.engine, self.history, self.settings.warm_up_timeout_s
        assert engine is not None
        wanted = engine.since_entries()
        if not wanted or history is None or not limit:
            return
        now = self.clock.now_ns()
        try:
            async with asyncio.timeout(limit):
                for name, since in wanted.items():
                    for token, start_ns in since.items():
                        extremes = await history.price_range(token, start_ns, now + 1)
                        if extremes is not None:
                            engine.restore_extremes(name, token, *extremes)
        except Exception as exc:  # the database down or slow: the stops trail from the entries
            log.warning("the best prices since the restored entries could not be read: trailing stops trail from "
                        "the entry prices", extra={"error": f"{type(exc).__name__}: {exc}", "strategies": list(wanted)})

    async def _list_orders(self, strategy_tag: str) -> list[trading_pb2.OrderUpdate]:
        request = oms_pb2.ListOrdersRequest(strategy_tag=strategy_tag, limit=restore.RESTORE_LIMIT)
        return list((await self.bus.call(rpc.LIST_ORDERS, request)).orders)

    async def _start_paused(self, name: str, reason: str) -> None:
        assert self.engine is not None
        # Over a pause put back from before the restart: this one holds back even exits (engine.sends_nothing).
        self.engine.set_paused(name, True, f"{NOT_RESTORED}: {reason}", by=strategy_pb2.PAUSED_BY_NEOPULSE,
                               replace=True)
        closing = self.engine.end_close_out(name)  # its exits would be sized from positions it cannot trust
        text = (f"Strategy {name} starts paused: {reason}. Check its positions at the broker (the OMS's "
                "ListPositions) and close or adopt them, then resume it.")
        if closing:
            text += (" Its daily-loss close-out was under way and is stopped: close what it holds by hand (risk's "
                     "intraday square-off still closes MIS positions at its time).")
        log.error("strategy starts paused: its positions cannot be restored exactly",
                  extra={"strategy": name, "reason": reason})
        await self._critical("Strategy paused at start", text, name)
        await self._save_state(name)

    async def _start_unguarded(self, name: str, tokens: list[int]) -> None:
        """A restored position whose stop the strategy cannot tell (Strategy.unguarded: ORB's range neither saved
        nor rebuilt by the warm-up) would ride any fall until the square-off: a CRITICAL notification names it, the
        operator's to watch or close. No stop is made up for it, and the strategy is not paused: its other
        positions keep their stops."""
        assert self.engine is not None
        strategy = self.engine.strategies[name]
        held = ", ".join(f"{self._symbol(token)} ({strategy.position(token):+d} at "
                         f"{fmt_inr(strategy.entry_price(token))})" for token in tokens)
        log.error("a restored position has no stop", extra={"strategy": name, "tokens": tokens})
        await self._critical("Position without a stop", (
            f"Strategy {name} holds {held} and cannot tell its stop (what gives it was neither saved nor read back "
            "from the stored candles, or its indicators start cold). Nothing guards it until the intraday square-off "
            "or, for an indicator's exit, until the indicators are warm: watch it or close it at the broker. The "
            "strategy's other positions keep their stops."), name)

    def _symbol(self, token: int) -> str:
        inst = self.instruments.get(token)
        return inst.symbol if inst is not None else str(token)

    def _take_saves(self) -> set[str]:
        """The strategies whose own state changed since the last call (StrategyEngine.saves_due)."""
        assert self.engine is not None
        names, self.engine.saves_due = self.engine.saves_due, set()
        return names

    def _save_changed(self) -> None:
        """Save the strategies whose own state changed (an opening range completed), each in a task of its own: the
        ticks wait for no database."""
        for name in sorted(self._take_saves()):
            self.bus.track(asyncio.create_task(self._save_state(name), name=f"strategy:save:{name}"))

    async def run(self) -> None:
        """The candle-close timer: a quiet instrument's candle closes soon after its minute ends."""
        interval = self.settings.close_check_ms / 1000
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._send_changes(tasks), name="strategy:changes")
            while True:
                await asyncio.sleep(interval)
                if not self.clock_driven:
                    await self._timer_turn(tasks.create_task)

    async def on_clock(self) -> None:
        await self._timer_turn(lambda work, name: self.bus.track(asyncio.create_task(work, name=name)))

    async def _timer_turn(self, spawn: Callable[..., Any]) -> None:
        """Close the candles whose minute is over (with close_grace_ms for late ticks), cancel the orders left
        working past cancel_working_after_s (each in a task of its own, from `spawn`), and stop and close out the
        strategies past their max_daily_loss (StrategyEngine.loss_turn), lifting an earlier day's stop."""
        if self.engine is None:
            return
        now = self.clock.now_ns()
        await self._publish(self.engine.close_due(now - self.settings.close_grace_ms * 1_000_000))
        if self.engine.blocked_stops or self.engine.released:
            await self._tell_blocked_stops()
        if self.engine.saves_due:
            self._save_changed()
        self._count_late()
        max_age_ns = int(self.settings.cancel_working_after_s * 1e9)
        if max_age_ns:
            for order_id in self.engine.orders.stale(now, max_age_ns, CANCEL_RETRY_NS):
                spawn(self._cancel_stale(order_id), name=f"strategy:cancel:{order_id}")
        losses = self.engine.loss_turn(now)
        if losses.signals:  # the close-out's exits first: they wait for no notification or database
            await self._publish(([], losses.signals))
        for name, text in losses.stopped:
            log.error("strategy stopped: daily loss limit reached", extra={"strategy": name, "reason": text})
            await self._critical("Strategy stopped: daily loss limit",
                                 f"{name}: {text}. Resume it to trade it again today.", name)
            await self._save_state(name)
        for order_id in losses.cancels:
            spawn(self._cancel_stale(order_id, stale=False), name=f"strategy:close-out:{order_id}")
        for name in losses.finished:
            log.info("strategy closed out for its daily loss limit: flat", extra={"strategy": name})
            await self._save_state(name)
        for name, text in losses.new_day:
            log.info("strategy's daily loss stop lifted: a new day", extra={"strategy": name, "reason": text})
            await self._notify(ops_pb2.SEVERITY_INFO, "Daily loss limit: a new day", f"{name}: {text}.", name)
            await self._save_state(name)

    async def _cancel_stale(self, order_id: str, stale: bool = True) -> None:
        """Cancel an order left working past cancel_working_after_s (or, not `stale`, one of a strategy its loss limit
        stopped); refused for now (not yet acknowledged by the broker, the OMS unreachable) it is offered again
        after CANCEL_RETRY_NS. Housekeeping: it waits, as an order update does, while signals, decisions or the
        ticks that make signals are queued (stale orders come due together, often at a minute's close, when those
        are busy)."""
        await self.bus.as_follow_up()
        try:
            await self.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=order_id))
        except Exception as exc:  # refused, not yet cancellable, or the OMS unreachable: never fatal to the timer
            log.info("working order not cancelled yet", extra={"order_id": order_id, "error": str(exc)})
            return
        if stale:
            STALE_CANCELS.inc()
        log.info("working order cancelled: " + ("unfilled past cancel_working_after_s" if stale
                                                else "its strategy's daily loss limit"),
                 extra={"order_id": order_id, "after_s": self.settings.cancel_working_after_s})

    async def _send_changes(self, tasks: asyncio.TaskGroup) -> None:
        """Each strategy's change of its working order goes to the OMS as a ModifyOrder of its own (a slow answer
        holds no other change up); the OMS has risk check it."""
        while True:
            change = await self._changes.get()
            tasks.create_task(self._send_change(change), name=f"strategy:change:{change.request.order_id}")

    async def _send_change(self, change: Change) -> None:
        """A change or cancel refused (by risk, the broker, or an order that ended meanwhile) is logged and counted:
        the strategy sees its order unchanged and may ask again at its next decision (one a price level made, at
        the level's next tick after a wait: StrategyEngine.level_refused)."""
        assert self.engine is not None
        request = change.request
        cancel = isinstance(request, oms_pb2.CancelOrderRequest)
        what = "cancel" if cancel else "change"
        try:
            if cancel:  # two calls, not one with the method chosen: split mode's wiring check reads them from here
                await self.bus.call(rpc.CANCEL_ORDER, request)
            else:
                await self.bus.call(rpc.MODIFY_ORDER, request)
        except Exception as exc:  # refused, its outcome unknown, or the OMS unreachable: its updates will tell
            self.engine.level_refused(change.strategy, change.token)
            ORDER_CHANGES.labels(change.strategy, what, "refused").inc()
            log.info(f"strategy's order {what} not made", extra={
                "strategy": change.strategy, "order_id": request.order_id, "error": str(exc), "reason": change.reason})
            return
        finally:
            self.engine.orders.change_sent(request.order_id)
        ORDER_CHANGES.labels(change.strategy, what, "made").inc()
        if cancel:
            log.info("strategy's order cancelled", extra={
                "strategy": change.strategy, "order_id": request.order_id, "reason": change.reason})
            return
        log.info("strategy's order changed", extra={
            "strategy": change.strategy, "order_id": request.order_id, "quantity": request.quantity,
            "price_paise": request.price_paise, "trigger_price_paise": request.trigger_price_paise,
            "reason": change.reason})

    # -- topics ----------------------------------------------------------------
    async def _on_ticks(self, batch: market_pb2.TickBatch) -> None:
        engine = self.engine
        assert engine is not None
        candles, signals = engine.on_ticks(batch.ticks)
        if candles or signals or engine.orders.has_changes:
            await self._publish((candles, signals))
        if engine.saves_due:
            self._save_changed()
        if engine.blocked_stops or engine.released:
            await self._tell_blocked_stops()

    async def _tell_blocked_stops(self) -> None:
        """Stops reached whose exit an order the trader changed by hand blocks (Strategy.stop_exit): the position
        rides on until that order ends, so the trader is told at once, once per position. And tokens let go from an
        order of unknown outcome that ended with its day (a WARNING: the day's CRITICAL said to check the broker)."""
        assert self.engine is not None
        blocked, self.engine.blocked_stops = self.engine.blocked_stops, []
        released, self.engine.released = self.engine.released, []
        await self.bus.after_order_path()
        for name, token, text in blocked:
            await self._critical("Stop reached, exit blocked", f"{name}: {self._symbol(token)}: {text}", name)
        for name, token, text in released:
            await self._notify(ops_pb2.SEVERITY_WARNING, "Order of unknown outcome let go",
                               f"{name}: {self._symbol(token)}: {text}", name)

    async def _on_decision(self, decision: trading_pb2.RiskDecision) -> None:
        assert self.engine is not None
        self.engine.on_decision(decision)

    async def _on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        if not self._loaded.is_set():
            await self._loaded.wait()
        assert self.engine is not None
        self.engine.on_order_update(update)

    async def _publish(self, output: Output) -> None:
        engine = self.engine
        assert engine is not None
        candles, signals = output
        # Signals first: the order path is woken before the candle consumers (the OMS's paper fills). Numbered here,
        # not when made: some are made before an await (a database write) and go out after later ones.
        if signals:
            async with self._publishing:
                for signal in signals:
                    signal.sequence = self.sequencer.next()
                    SIGNALS.labels(signal.strategy).inc()
                    await self.bus.publish(Topic.SIGNALS, signal)
        if engine.orders.has_changes:
            for change in engine.orders.take_changes():
                self._changes.put_nowait(change)
        if candles:
            CANDLES.inc(len(candles))
            batch = engine.candles.take_batch()  # the closed candles were built inside it
            if self.settings.publish_candles:
                self.bus.publish_nowait(Topic.CANDLES, batch)
        if signals:
            await self.bus.after_order_path()  # the log lines must not delay the orders
        for signal in signals:
            log.info("signal", extra={"strategy": signal.strategy, "token": signal.token,
                                      "side": trading_pb2.Side.Name(signal.side), "quantity": signal.quantity,
                                      "price_paise": signal.limit_price_paise, "reason": signal.reason})

    def _count_late(self) -> None:
        assert self.engine is not None
        late = self.engine.candles.late_ticks
        if late > self._late_reported:
            LATE_TICKS.inc(late - self._late_reported)
            self._late_reported = late

    # -- requests --------------------------------------------------------------
    def _engine(self) -> StrategyEngine:
        assert self.engine is not None, "strategy module not started"
        return self.engine

    async def _list(self, request: strategy_pb2.ListStrategiesRequest) -> strategy_pb2.ListStrategiesResponse:
        engine = self._engine()
        return strategy_pb2.ListStrategiesResponse(strategies=[engine.info(s) for s in engine.strategies.values()])

    async def _quotes(self, request: strategy_pb2.GetQuotesRequest) -> strategy_pb2.GetQuotesResponse:
        """The latest tick of each instrument asked for (every one, the indices first, when none is named)."""
        engine = self._engine()
        if len(request.symbols) > MAX_QUOTES:
            raise InvalidInput("symbols", f"{len(request.symbols)} of them; ask for at most {MAX_QUOTES} at a time")
        if request.symbols:
            chosen = []
            for symbol in request.symbols:
                inst = self.instruments.by_symbol(symbol)
                if inst is None:
                    raise NotFound(f"no instrument {symbol!r}; ListInstruments shows the symbols NeoPulse follows")
                chosen.append(inst)
        else:
            chosen = sorted(self.instruments, key=lambda i: (not i.is_index, i.exchange_segment, i.symbol))
        out = strategy_pb2.GetQuotesResponse()
        for inst in chosen:
            quote = out.quotes.add()
            quote.instrument.CopyFrom(inst)
            tick = engine.candles.last_tick(inst.token)
            if tick is not None:
                quote.tick.CopyFrom(tick)
        return out

    async def _pause(self, request: strategy_pb2.PauseStrategyRequest) -> strategy_pb2.PauseStrategyResponse:
        engine = self._engine()
        if len(request.reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"is longer than {MAX_REASON_CHARS} characters; say why in fewer words")
        strategy = engine.set_paused(request.name, True, request.reason)
        log.info("strategy paused", extra={"strategy": strategy.name, "reason": strategy.pause_reason})
        await self.bus.to_the_end(self._save_state(strategy.name), f"strategy:pause:{strategy.name}")
        return strategy_pb2.PauseStrategyResponse(strategy=engine.info(strategy))

    async def _resume(self, request: strategy_pb2.ResumeStrategyRequest) -> strategy_pb2.ResumeStrategyResponse:
        engine = self._engine()
        strategy = engine.set_paused(request.name, False)
        log.info("strategy resumed", extra={"strategy": strategy.name})
        await self.bus.to_the_end(self._save_state(strategy.name), f"strategy:resume:{strategy.name}")
        return strategy_pb2.ResumeStrategyResponse(strategy=engine.info(strategy))

    async def _set_params(self, request: strategy_pb2.SetStrategyParamsRequest
                          ) -> strategy_pb2.SetStrategyParamsResponse:
        engine = self._engine()
        strategy, exits = engine.set_params(request.name, dict(request.params))
        log.info("strategy params set", extra={"strategy": strategy.name, "params": dict(request.params)})
        await self.bus.to_the_end(self._params_set(strategy.name, exits), f"strategy:params:{strategy.name}")
        return strategy_pb2.SetStrategyParamsResponse(strategy=engine.info(strategy))

    async def _params_set(self, name: str, exits: list[trading_pb2.Signal]) -> None:
        """Send the exits new params call for (marked sent: not sent, the strategy would wait PENDING_EXPIRY_NS for
        them), before the database write that saves the params."""
        if exits:
            await self._publish(([], exits))
        await self._save_state(name)

