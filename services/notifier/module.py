"""NotifierModule: turns notifications, rejections, fills and changed orders into log lines and Telegram messages.

Subscribes NOTIFICATIONS, ORDERS and ORDER_UPDATES; serves NotifierService/Notify and GetSystemStatus on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date

from prometheus_client import Counter
from telegram.error import InvalidToken

from services.notifier import messages, replies
from services.notifier.config import NotifierSettings
from services.notifier.control import Control
from services.notifier.sender import TelegramSender
from services.notifier.summary import next_summary_due
from services.notifier.telegram_bot import TelegramBot
from services.notifier.terms_watch import TermsWatch
from shared import rpc
from shared.bus import Bus, Priority, Topic
from shared.clock import Clock, day_of, ist_ns, parse_hhmm
from shared.component import Component
from shared.contracts import notifier_pb2, ops_pb2, trading_pb2
from shared.errors import InvalidInput, NeoPulseError

log = logging.getLogger(__name__)
# Rejections that ask nothing of the trader: a replayed signal (after a restart) for an order already placed.
QUIET_REJECTIONS = frozenset({"DUPLICATE_ORDER"})

NOTIFICATIONS = Counter("neopulse_notifier_notifications", "Notifications handled", ["kind"])
# Notification field names that would clash with LogRecord attributes are left out of the log extras.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_LEVELS = {ops_pb2.SEVERITY_WARNING: logging.WARNING, ops_pb2.SEVERITY_CRITICAL: logging.ERROR}
STOP_SEND_S = 5.0  # at stop, what is queued is sent within this (the bot opened for it first, if it had not started)


class NotifierModule(Component):
    name = "notifier"

    def __init__(self, bus: Bus, settings: NotifierSettings, clock: Clock) -> None:
        super().__init__(bus)
        self.settings = settings
        self.clock = clock
        self.control = Control(bus, clock, settings.mode, settings.request_timeout_seconds)
        self.bot: TelegramBot | None = None
        self.sender: TelegramSender | None = None
        self.bot_rejected = False  # Telegram refused the token: the bot is off for this run
        if settings.telegram_enabled:
            self.bot = TelegramBot(settings, self.control)
            self.sender = TelegramSender(self.bot.send, settings.notify_chat_ids,
                                         window_seconds=settings.batch_window_seconds,
                                         queue_size=settings.queue_size, attempts=settings.send_attempts,
                                         backoff_seconds=settings.retry_backoff_seconds,
                                         group_interval_seconds=settings.group_interval_seconds,
                                         on_migrated=self.bot.follow_migration)
        self.bot_started = asyncio.Event()
        self.handled = 0
        self._last_sequence = {Topic.ORDERS: 0, Topic.ORDER_UPDATES: 0}
        self.terms = TermsWatch()  # each working order's terms, to tell a change made from a same-state update

    async def start(self) -> None:
        self.bus.subscribe(Topic.NOTIFICATIONS, self.name, self._on_notification)
        # Told after the order is placed: a decision's observer, not a step on the way to the order.
        self.bus.subscribe(Topic.ORDERS, self.name, self._on_decision, priority=Priority.FOLLOW_UP)
        self.bus.subscribe(Topic.ORDER_UPDATES, self.name, self._on_order_update)
        self.bus.handle(rpc.NOTIFY, self._notify)
        self.bus.handle(rpc.GET_SYSTEM_STATUS, self._system_status)
        if self.bot is None:
            log.info("telegram bot off (no token); notifications are only logged")
        self.ready.set()

    async def run(self) -> None:
        """The bot's polling, the send queue and the daily summary; Telegram trouble never ends the process."""
        async with asyncio.TaskGroup() as tg:
            if self.settings.daily_summary_time_ist:
                tg.create_task(self._summary_loop(), name="notifier:summary")
            if self.bot is not None and self.sender is not None:
                await self._start_bot(self.bot)  # notices queue up meanwhile (bounded)
                if self.bot_started.is_set():
                    tg.create_task(self.sender.run(), name="notifier:sender")

    async def stop(self) -> None:
        """End the send loop and send what it had and what is still queued (the "stopping" notice), then stop
        polling; safe if run() never started (what was queued for a bot that never started is counted)."""
        if self.sender is not None:
            deadline = asyncio.get_running_loop().time() + STOP_SEND_S
            opened = self.bot_started.is_set() or await self._open_for_sending(deadline)
            await self.sender.stop(seconds=max(deadline - asyncio.get_running_loop().time(), 0.0) if opened else 0.0)
        if self.bot is not None:
            try:
                await self.bot.stop()
            except Exception:
                log.exception("telegram bot did not stop cleanly")
            self.bot_started.clear()

    async def _open_for_sending(self, deadline: float) -> bool:
        """A stop while the bot was still starting (a module failed in the first second; Telegram slow or away at
        start): what is queued is the trader's CRITICAL notice of it and the stopping one, worth one try. Sending
        needs the bot initialised (getMe), not polling. True when it is; a refused token is not tried again."""
        if self.bot is None or self.bot_rejected:
            return False
        try:
            async with asyncio.timeout_at(deadline):
                await self.bot.open_for_sending()
        except Exception as exc:  # Telegram away: the notices stay in the log, counted as not sent
            log.warning("telegram bot could not be opened at stop to send what was queued",
                        extra={"error": repr(exc)})
            return False
        return True

    async def _start_bot(self, bot: TelegramBot) -> None:
        while True:
            try:
                await bot.start()
                self.bot_started.set()
                return
            except InvalidToken:
                log.error("telegram bot token rejected; the bot stays off, notifications are only logged")
                self.bot_rejected = True
                return
            except Exception as exc:  # network down at start-up: keep trading, try again later
                log.warning("telegram bot did not start; retrying", extra={"error": repr(exc)})
                with contextlib.suppress(Exception):
                    await bot.stop()
                await asyncio.sleep(self.settings.bot_start_retry_seconds)

    # -- what arrives ----------------------------------------------------------------
    async def _on_notification(self, note: ops_pb2.Notification) -> None:
        if note.kind == ops_pb2.NOTIFICATION_KIND_KILL_SWITCH and self.bot is not None:
            self.bot.halt_changed()  # an /unkill asked before it releases no later halt
        self.deliver(note)

    async def _on_decision(self, decision: trading_pb2.RiskDecision) -> None:
        if decision.accepted or not self._fresh(Topic.ORDERS, decision.sequence):
            return
        if decision.reason_code in QUIET_REJECTIONS:
            log.info("rejection not sent to Telegram", extra={"reason_code": decision.reason_code,
                                                               "signal_id": decision.signal_id})
            return
        self.deliver(messages.risk_rejection_notification(decision))

    async def _on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        if not self._fresh(Topic.ORDER_UPDATES, update.sequence):
            return
        if update.last_fill_quantity > 0:
            self.deliver(messages.fill_notification(update))
        if update.status == trading_pb2.ORDER_STATUS_REJECTED != update.previous_status:
            self.deliver(messages.broker_rejection_notification(update))
        if update.reason_code == messages.CANCELLED_AT_BROKER and update.status == trading_pb2.ORDER_STATUS_CANCELLED:
            self.deliver(messages.cancelled_elsewhere_notification(update))
        replaced = self.terms.changed(update)
        if replaced is not None:
            routine = (bool(update.request.signal_id) and not update.changed_by_hand
                       and not self.settings.strategy_order_changes)
            self.deliver(messages.modified_notification(update, replaced), telegram=not routine)

    def _fresh(self, topic: Topic, sequence: int) -> bool:
        """False for a replayed message (a bridge resuming a stream); unsequenced ones always pass."""
        if sequence and sequence <= self._last_sequence[topic]:
            return False
        self._last_sequence[topic] = max(sequence, self._last_sequence[topic])
        return True

    def deliver(self, note: ops_pb2.Notification, telegram: bool = True) -> None:
        """Log it (fields as structured extras) and queue it for Telegram (unless `telegram` is False); never waits."""
        self.handled += 1
        kind = messages.enum_label(ops_pb2.NotificationKind, note.kind, "NOTIFICATION_KIND_")
        NOTIFICATIONS.labels(kind).inc()
        extra = {k: v for k, v in note.fields.items() if k not in _RESERVED}
        extra |= {"kind": kind, "title": note.title, "text": note.text, "source": note.source}
        log.log(_LEVELS.get(note.severity, logging.INFO), "notification", extra=extra | {"telegram": telegram})
        if telegram and self.sender is not None and not self.sender.offer(messages.notification_html(note),
                                                                          urgent=messages.is_urgent(note)):
            log.error("notification not sent to Telegram: it came after the notifier stopped", extra=extra)

    # -- bus requests ------------------------------------------------------------------
    async def _notify(self, request: notifier_pb2.NotifyRequest) -> notifier_pb2.NotifyResponse:
        note = request.notification
        if not (note.title or note.text):
            raise InvalidInput("notification", "needs a title or a text; an empty notification says nothing")
        await self.bus.publish(Topic.NOTIFICATIONS, request.notification)
        return notifier_pb2.NotifyResponse(accepted=True)

    async def _system_status(self, request: notifier_pb2.GetSystemStatusRequest
                             ) -> notifier_pb2.GetSystemStatusResponse:
        sender = self.sender
        return notifier_pb2.GetSystemStatusResponse(
            mode=self.settings.mode, uptime_seconds=self.control.uptime_seconds,
            telegram_enabled=self.bot is not None and not self.bot_rejected,
            notifications_sent=sender.sent if sender else 0,
            notifications_failed=(sender.failed + sender.dropped + sender.late) if sender else 0)

    # -- daily summary -----------------------------------------------------------------
    async def _summary_loop(self) -> None:
        hhmm = self.settings.daily_summary_time_ist
        due, second = next_summary_due(self.clock.now_ns(), hhmm)
        while True:
            await asyncio.sleep(self.settings.summary_check_seconds)
            now = self.clock.now_ns()
            if now < due:
                continue
            day = day_of(due)
            try:
                if not second:
                    await self.publish_summary(day)
                elif day_of(now) == day:  # past midnight the OMS's positions, its totals, are the next day's
                    await self.publish_summary(day, since_ns=ist_ns(day, *parse_hhmm(hhmm)))
                else:
                    log.warning("the day's second summary is due past midnight; not sent", extra={"day": str(day)})
            except Exception:  # a summary bug must not end the process
                log.exception("daily summary failed")
            due, second = next_summary_due(now, hhmm)

    async def publish_summary(self, day: date | None = None, since_ns: int = 0) -> None:
        """Fetch the day's orders and positions and publish the summary as a notification. With `since_ns` (the time
        of the day's first summary), it is the day's second, after its last session closed, and goes only when the
        day traded after the first (MCX's evening): those trades would otherwise be in no summary."""
        try:
            summary = await self.control.daily_summary(day)
        except NeoPulseError as exc:  # the trader waits for it: say it is not coming, and why
            day = day or day_of(self.clock.now_ns())
            log.warning("daily summary unavailable", extra={"error": str(exc)})
            await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
                kind=ops_pb2.NOTIFICATION_KIND_DAILY_SUMMARY, severity=ops_pb2.SEVERITY_WARNING,
                title=f"Daily summary {day.isoformat()} unavailable", text=f"{exc}. /pnl shows the totals.",
                ts_ns=self.clock.now_ns(), source=messages.SOURCE))
            return
        if summary.last_trade_ns < since_ns:
            return  # nothing traded after the first summary: it said it all
        whole_day = " (the whole day, after its last close)" if since_ns else ""
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_DAILY_SUMMARY, severity=ops_pb2.SEVERITY_INFO,
            title=f"Daily summary {summary.day.isoformat()}{whole_day}", text=replies.summary_text(summary),
            ts_ns=self.clock.now_ns(), source=messages.SOURCE))
