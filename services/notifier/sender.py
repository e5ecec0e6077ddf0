"""The outgoing Telegram queue: bounded with urgent notices first, batched under a burst, retried through a Telegram
incident without holding up other chats, and 429-aware; what is given up is told in the chat with the next message.

Talks to the Bot API only through the `send(chat_id, html)` function it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import httpx
from prometheus_client import Counter
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError, TimedOut

from services.notifier.messages import BLOCK_SEP, MAX_MESSAGE_CHARS, group_blocks, plain_fallback, utf16_len

log = logging.getLogger(__name__)

SENT = Counter("neopulse_notifier_telegram_sent_messages", "Telegram messages delivered")
FAILED = Counter("neopulse_notifier_telegram_failed_messages", "Telegram messages given up on")
DROPPED = Counter("neopulse_notifier_dropped_notifications", "Notifications dropped from a full send queue")
LATE = Counter("neopulse_notifier_late_notifications", "Notifications offered after the send queue stopped: not sent")
RETRIED = Counter("neopulse_notifier_telegram_retries", "Telegram sends retried", ["reason"])

Send = Callable[[int, str], Awaitable[object]]
MAX_BATCH = 50
MAX_BACKOFF_S = 15.0  # while Telegram is unreachable, look again at least this often
# A message failing this long is given up (counted, and told in the chat with its next message): Telegram's incidents
# (5xx, timeouts) last minutes, and an alert an hour late would mislead more than its absence, which is told.
GIVE_UP_S = 600.0
NOTICE_ROOM = 200  # left free in each message for the line saying how many notifications were not delivered
# The request never left this machine (connection refused, no route, pool full): resending cannot duplicate.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Telegram's descriptions of a text it cannot send ("can't parse entities: ...", "message is too long", ...).
_TEXT_TROUBLE = ("parse entities", "too long", "text is empty", "must be non-empty")


class Outcome(enum.Enum):
    SENT = "sent"
    REFUSED = "refused"  # a 400 about the text (its HTML, its length): it will never go through as it is
    FAILED = "failed"  # given up: the chat is gone, or Telegram kept failing for GIVE_UP_S (or, for an ordinary
    # message, timed out `attempts` times: each resend may have reached the chat)
    DEFERRED = "deferred"  # a 429, or a back-off after a failure that may pass: the chat takes nothing until then
    # (its retry_after, the back-off) and the message is tried again; the other chats' messages go meanwhile


class Outgoing(NamedTuple):
    """One message in hand: its chat, its blocks, whether they are urgent (a message holds urgent blocks or ordinary
    ones, never both: an ordinary one is not resent through timeouts), when its batch was released (loop time: it is
    given up give_up_seconds after), how many notifications beyond its blocks it stands for (the full queue's line
    says how many were shed), and whether it only tells what was lost."""

    chat_id: int
    blocks: list[str]
    urgent: bool = False
    released: float = 0.0
    extra: int = 0
    notice: bool = False


@dataclass
class Trouble:
    """A chat's first message in hand while it keeps failing: since when (loop time), how often, and how many of
    those tries may have reached the chat all the same (a timeout after the request went out)."""

    since: float
    tries: int = 0
    doubtful: int = 0


class Lanes:
    """The waiting HTML blocks in two FIFO lanes; urgent ones leave first and are shed last."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.urgent: deque[str] = deque()
        self.ordinary: deque[str] = deque()
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.urgent) + len(self.ordinary)

    def empty(self) -> bool:
        return not len(self)

    def put(self, html: str, urgent: bool) -> bool:
        """Queue a block; when full, shed the oldest ordinary block, or with none queued an ordinary newcomer
        itself (urgent blocks are shed last), or for an urgent newcomer the oldest urgent block. Returns True
        when a block was shed."""
        full = len(self) >= self.size
        if full and not urgent and not self.ordinary:
            return True  # every queued block is urgent: the ordinary newcomer is the one shed
        if full:
            (self.ordinary or self.urgent).popleft()
        (self.urgent if urgent else self.ordinary).append(html)
        self.changed.set()
        return full

    def take(self, limit: int) -> tuple[list[str], list[str]]:
        """Up to `limit` blocks, urgent ones first: (urgent, ordinary)."""
        urgent = [self.urgent.popleft() for _ in range(min(limit, len(self.urgent)))]
        ordinary = [self.ordinary.popleft() for _ in range(min(limit - len(urgent), len(self.ordinary)))]
        return urgent, ordinary

    async def wait_changed(self) -> None:
        self.changed.clear()
        await self.changed.wait()


class TelegramSender:
    """offer() never waits (the trading path calls it); run() drains the queue at the Bot API's pace."""

    def __init__(self, send: Send, chat_ids: Sequence[int], *, window_seconds: float, queue_size: int,
                 attempts: int, backoff_seconds: float, group_interval_seconds: float = 0.0,
                 give_up_seconds: float = GIVE_UP_S, on_migrated: Callable[[int, int], object] | None = None) -> None:
        self._send = send
        # The Bot API takes about 20 messages a minute in one group: a group's messages go this far apart (a
        # private chat's are paced by the batch window). Negative chat ids are groups.
        self.group_interval_seconds = group_interval_seconds
        # chat id -> loop time before which nothing more goes to it: a group's pace, a 429's retry_after
        self._next_at: dict[int, float] = {}
        self.chat_ids = list(chat_ids)
        self.window_seconds = window_seconds
        self.attempts = attempts  # tries of an ordinary message that may each have reached the chat (timeouts)
        self.backoff_seconds = backoff_seconds
        self.give_up_seconds = give_up_seconds
        self.queue = Lanes(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.late = 0  # offered after stop(): never sent
        self.closed = False  # stop() has ended: nothing more goes out
        self._untold = 0  # notifications shed since the trader was last told so
        self._lost: dict[int, int] = {}  # chat id -> its notifications given up since it was last told so
        self._trouble: dict[int, Trouble] = {}  # chat id -> the failures of its first message in hand
        self._held: tuple[list[str], list[str]] = ([], [])  # (urgent, ordinary) blocks of the batch being gathered
        # the messages of the batches in hand, each until it is delivered or given up, a chat's in order: what stop()
        # sends when it ends run() mid-batch
        self._pending: deque[Outgoing] = deque()
        self._runner: asyncio.Task[Any] | None = None
        self._wire = asyncio.Lock()  # held while a request is on its way to Telegram
        self._migrated: dict[int, int] = {}  # a group upgraded to a supergroup: configured id -> its new id
        self._on_migrated = on_migrated  # told (old id, new id) when Telegram says a chat moved

    def offer(self, html: str, urgent: bool = False) -> bool:
        """Queue one HTML block; a full queue sheds instead of waiting (counted, and the trader is told). False once
        stop() has ended: the block is not sent, only counted (the caller logs what it was)."""
        if self.closed:
            self.late += 1
            LATE.inc()
            return False
        if self.queue.put(html, urgent):
            self.dropped += 1
            self._untold += 1
            DROPPED.inc()
        return True

    async def run(self) -> None:
        """Forever, as its own task (stop() ends that task): wait for a block, gather what arrives within the
        window (an urgent one ends it at once), send it as few messages."""
        self._runner = asyncio.current_task()
        while True:
            if not self._pending or not self.queue.empty():  # else: messages a chat's wait holds back, none new
                while self.queue.empty():
                    await self.queue.wait_changed()
                await self._gather()
                self._enqueue(self._messages(*self._release()))
            try:
                await self._send_pending(until_offered=True)
            except Exception:  # a bug in sending must not end the process; the messages are lost, counted
                lost = len(self._pending)
                for message in self._pending:
                    lost_here = len(message.blocks) + message.extra
                    self._lost[message.chat_id] = self._lost.get(message.chat_id, 0) + lost_here
                self._pending.clear()
                self._trouble.clear()
                self.failed += lost
                FAILED.inc(lost)
                log.exception("telegram send loop failed", extra={"messages": lost})

    async def stop(self, seconds: float) -> None:
        """At shutdown: end run() and wait until it has ended, then send what it had in hand, what it held for its
        next batch, the whole queue and what is offered meanwhile (the last alerts of modules stopping before the
        notifier); all within `seconds` (0: the bot is not running, send nothing). Then the sender is closed. What
        does not go out is counted as failed and logged."""
        deadline = asyncio.get_running_loop().time() + seconds
        await self._end_run(deadline)
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while self._take_all():
                        await self._send_pending()
        self.closed = True
        if self._take_all():
            left = len(self._pending)
            self.failed += left
            FAILED.inc(left)
            log.error("telegram messages left unsent at shutdown", extra={
                "messages": left, "blocks": sum(len(message.blocks) for message in self._pending)})
            self._pending.clear()

    def _take_all(self) -> bool:
        """Move the queue and the held blocks into the messages to send; True when there is any to send."""
        urgent, ordinary = self.queue.take(len(self.queue))
        self._held[0].extend(urgent)
        self._held[1].extend(ordinary)
        self._enqueue(self._messages(*self._release()))
        return bool(self._pending)

    async def _end_run(self, deadline: float) -> None:
        """Cancel run() and wait for it. A request it has on the wire is let finish first (until the deadline), so
        that message is neither lost nor sent twice; a wait (a 429's, a back-off, the batch window) is cut short."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        holding = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                holding = await self._wire.acquire()  # FIFO: run() cannot start another request meanwhile
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        if holding:
            self._wire.release()

    async def _gather(self) -> None:
        """Hold blocks for the next batch until the window closes, the batch is full or an urgent one is held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_seconds
        self._hold(MAX_BATCH)
        while len(self._held[0]) + len(self._held[1]) < MAX_BATCH and not self._held[0]:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._offered_within(remaining):
                return
            self._hold(MAX_BATCH)

    async def _offered_within(self, seconds: float) -> bool:
        """Whether a block is offered within `seconds` (False: the time ran out first)."""
        try:
            async with asyncio.timeout(seconds):  # not wait_for: it can swallow a cancel (gh-86296)
                await self.queue.wait_changed()
        except TimeoutError:
            return False
        return True

    def _hold(self, limit: int) -> None:
        urgent, ordinary = self.queue.take(limit - len(self._held[0]) - len(self._held[1]))
        self._held[0].extend(urgent)
        self._held[1].extend(ordinary)

    def _release(self) -> tuple[list[str], list[str], int]:
        """The held blocks: (urgent ones, the rest led by a line saying how many were shed since the last such line,
        how many that line stands for)."""
        (urgent, ordinary), self._held = self._held, ([], [])
        shed, self._untold = self._untold, 0
        if shed:
            ordinary.insert(0, f"⚠️ <b>{shed} notifications dropped</b>\nThe send queue was full; /orders and "
                               "/positions show the current state.")
        return urgent, ordinary, shed

    def _messages(self, urgent: list[str], ordinary: list[str], shed: int) -> list[Outgoing]:
        """The batch packed into messages (room left in each for the line on what was not delivered), urgent blocks
        apart from ordinary ones, each message for every chat, in sending order."""
        released = asyncio.get_running_loop().time()
        room = MAX_MESSAGE_CHARS - NOTICE_ROOM
        messages: list[Outgoing] = []
        for blocks, is_urgent in ((urgent, True), (ordinary, False)):
            for n, group in enumerate(group_blocks(blocks, room) if blocks else []):
                extra = shed - 1 if shed and not is_urgent and n == 0 else 0  # the line is the first ordinary block
                messages += [Outgoing(chat_id, group, is_urgent, released, extra) for chat_id in self.chat_ids]
        return messages

    def _enqueue(self, messages: list[Outgoing]) -> None:
        """Add new messages to those in hand: an ordinary one last, an urgent one before its chat's first ordinary
        message (not yet delivered, so it can be passed): a kill-switch alert must not wait out a 429's retry_after
        or the group pace once for each message of an earlier batch. Each chat's urgent messages keep their order,
        and so do its ordinary ones."""
        for message in messages:
            at = self._urgent_place(message.chat_id) if message.urgent else None
            if at is None:
                self._pending.append(message)
            else:
                self._pending.insert(at, message)

    def _urgent_place(self, chat_id: int) -> int | None:
        """Where an urgent message for the chat goes in hand: before its first ordinary message, unless that one
        leads the chat's messages and its last try may have reached Telegram (a timeout): it is in flight, its next
        try settles it, and its count of such tries must not be reset by another message going through first.
        None: after all the chat's messages."""
        trouble = self._trouble.get(chat_id)
        in_flight = trouble is not None and trouble.doubtful > 0
        leading = True
        for i, message in enumerate(self._pending):
            if message.chat_id != chat_id:
                continue
            if not message.urgent and not (leading and in_flight):
                return i
            leading = False
        return None

    async def _send_pending(self, until_offered: bool = False) -> None:
        """Send the messages in hand, each chat's in order; a chat that may take none yet (a 429's retry_after, a
        back-off after a failure, a group's pace) does not hold up the others': a kill-switch alert to one chat never
        waits out another's. `until_offered` (the send loop): when every message left waits for its chat, return as
        soon as a block is offered and a chat could take it, so that its batch is gathered and sent (the messages
        left keep their place, first for their chat). While no chat could, blocks stay in the bounded queue, which
        sheds and says so, rather than piling up here through a Telegram incident; but an urgent block is gathered at
        once all the same, to go ahead of its chats' ordinary messages in hand."""
        loop = asyncio.get_running_loop()
        while self._pending:
            now, waiting = loop.time(), set()
            for i, message in enumerate(self._pending):
                target = self._target(message.chat_id)
                if target in waiting or self._next_at.get(target, 0.0) > now:
                    waiting.add(target)  # and its later messages wait behind it
                    continue
                await self._send_at(i)
                break
            else:
                free = until_offered and any(self._next_at.get(self._target(c), 0.0) <= now for c in self.chat_ids)
                if free and not self.queue.empty():
                    return
                wake = min(at for at in self._next_at.values() if at > now) - now
                if not until_offered:
                    await asyncio.sleep(wake)
                elif await (self._offered_within(wake) if free else self._urgent_offered_within(wake)):
                    return

    async def _urgent_offered_within(self, seconds: float) -> bool:
        """Whether an urgent block is queued within `seconds` (False: the time ran out first)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not self.queue.urgent:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await self._offered_within(remaining):
                return False
        return True

    async def _send_at(self, i: int) -> None:
        """Try the i-th message in hand once. Delivered or given up, it leaves; deferred, it keeps its place; refused,
        its blocks take its place one by one, and a block refused alone its plain text: one bad block must not
        silence the others, and the trader still reads it."""
        message = self._pending[i]
        outcome = await self._send_telling_lost(message)
        if outcome is Outcome.DEFERRED:
            return
        del self._pending[i]  # not before: a cancel keeps it
        if outcome is Outcome.FAILED:
            self._give_up_stale(message.chat_id)
            if not message.notice and not any(m.chat_id == message.chat_id for m in self._pending):
                # Nothing else on its way to tell it with: a message of its own says what was lost, tried as long.
                self._pending.append(Outgoing(message.chat_id, [], True, asyncio.get_running_loop().time(),
                                              notice=True))
        if outcome is not Outcome.REFUSED:
            return
        if len(message.blocks) > 1:
            instead = [message._replace(blocks=[block]) for block in message.blocks]
        elif (plain := plain_fallback(message.blocks[0])) != message.blocks[0]:
            instead = [message._replace(blocks=[plain])]
        else:  # refused as plain text too
            instead = []
            self._lost[message.chat_id] = self._lost.get(message.chat_id, 0) + 1
        for retry in reversed(instead):
            self._pending.insert(i, retry)

    async def _send_telling_lost(self, message: Outgoing) -> Outcome:
        """Deliver one message; after its news, when it fits, how many of the chat's notifications were given up since
        it was last told (a full queue's are told with the batch, by _release). Given up, its own are counted."""
        chat_id = message.chat_id
        lost = self._lost.get(chat_id, 0)
        blocks = message.blocks
        if lost:
            notice = (f"⚠️ <b>{lost} notifications could not be delivered</b>\nTelegram did not take them; /orders "
                      "and /positions show the current state.")
            fits = utf16_len(BLOCK_SEP.join([*blocks, notice])) <= MAX_MESSAGE_CHARS
            blocks, lost = ([*blocks, notice], lost) if fits else (blocks, 0)  # no room: the next message tells
        if not blocks:  # a notice of its own, and nothing left to tell
            return Outcome.SENT
        outcome = await self.deliver(chat_id, BLOCK_SEP.join(blocks), urgent=message.urgent,
                                     released=message.released)
        if outcome is Outcome.SENT and lost:
            self._lost[chat_id] -= lost
        elif outcome is Outcome.FAILED:
            self._lost[chat_id] = self._lost.get(chat_id, 0) + len(message.blocks) + message.extra
        return outcome

    def _give_up_stale(self, chat_id: int) -> None:
        """The chat's other messages in hand released give_up_seconds ago or more: given up with the one that just
        was, rather than each waiting out its own tries (a chat down for an hour would otherwise get its backlog an
        hour late)."""
        limit = asyncio.get_running_loop().time() - self.give_up_seconds
        stale = [m for m in self._pending if m.chat_id == chat_id and not m.notice and m.released <= limit]
        if not stale:
            return
        self._pending = deque(m for m in self._pending if m not in stale)
        self._lost[chat_id] = self._lost.get(chat_id, 0) + sum(len(m.blocks) + m.extra for m in stale)
        self.failed += len(stale)
        FAILED.inc(len(stale))
        log.error("telegram messages given up with the chat's last one: too old", extra={
            "chat_id": self._target(chat_id), "messages": len(stale)})

    def _target(self, chat_id: int) -> int:
        return self._migrated.get(chat_id, chat_id)

    async def deliver(self, chat_id: int, text: str, urgent: bool = False, released: float | None = None) -> Outcome:
        """Try one message once, following a group upgraded to a supergroup. DEFERRED: the chat takes nothing until
        self._next_at (a 429's retry_after, or the back-off after a failure that may pass); then it is tried again."""
        while True:
            target = self._target(chat_id)
            try:
                async with self._wire:
                    await self._send(target, text)
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                RETRIED.labels("rate_limited").inc()
                log.warning("telegram rate limit, waiting", extra={"chat_id": target, "retry_after_s": wait})
                self._next_at[target] = asyncio.get_running_loop().time() + wait
                return Outcome.DEFERRED
            except ChatMigrated as exc:
                if self._migrated.get(chat_id) == exc.new_chat_id:
                    return self._give_up(chat_id, exc, Outcome.FAILED)
                self._migrated[chat_id] = exc.new_chat_id
                if self._on_migrated is not None:
                    self._on_migrated(chat_id, exc.new_chat_id)
                log.warning("telegram group became a supergroup; replace its id in the notifier's chat ids",
                            extra={"chat_id": chat_id, "new_chat_id": exc.new_chat_id})
            except BadRequest as exc:  # a NetworkError subclass, but resending the same text fails the same way
                return self._give_up(chat_id, exc, Outcome.REFUSED if _text_refused(exc) else Outcome.FAILED)
            except NetworkError as exc:  # includes TimedOut and 5xx
                return self._retry_later(chat_id, exc, urgent, released)
            except TelegramError as exc:  # Forbidden, InvalidToken: retrying will not help
                return self._give_up(chat_id, exc, Outcome.FAILED)
            else:
                self._trouble.pop(chat_id, None)
                self.sent += 1
                SENT.inc()
                if target < 0 and self.group_interval_seconds:
                    self._next_at[target] = asyncio.get_running_loop().time() + self.group_interval_seconds
                return Outcome.SENT

    def _retry_later(self, chat_id: int, exc: NetworkError, urgent: bool, released: float | None) -> Outcome:
        """A failure that may pass (Telegram's 5xx, a timeout, the network): the chat backs off, doubling up to
        MAX_BACKOFF_S (kept from one message to the next until one goes through), and the message is tried again
        until give_up_seconds after its batch was released (an alert that late would mislead more than its absence,
        which is told). An ordinary message is also given up after `attempts` tries that may each have reached the
        chat (a timeout once the request went out): a fill told twice reads as two fills. An urgent one is not: a
        kill-switch alert twice is only noise."""
        now = asyncio.get_running_loop().time()
        trouble = self._trouble.setdefault(chat_id, Trouble(since=now))
        trouble.tries += 1
        trouble.doubtful += _may_have_arrived(exc)
        age = now - (trouble.since if released is None else released)
        if age >= self.give_up_seconds or (trouble.doubtful >= self.attempts and not urgent):
            trouble.doubtful = 0  # the next message's own tries; the back-off goes on
            return self._give_up(chat_id, exc, Outcome.FAILED, keep_backoff=True)
        if trouble.tries == 1:
            log.warning("telegram send failed; retrying", extra={"chat_id": chat_id, "error": str(exc)})
        RETRIED.labels("network").inc()
        self._next_at[self._target(chat_id)] = now + min(MAX_BACKOFF_S,
                                                         self.backoff_seconds * 2 ** min(trouble.tries - 1, 16))
        return Outcome.DEFERRED

    def _give_up(self, chat_id: int, exc: Exception, outcome: Outcome, keep_backoff: bool = False) -> Outcome:
        """Count and log a message given up; the chat's back-off starts again unless `keep_backoff` (Telegram still
        failing: the next message waits as this one did)."""
        if not keep_backoff:
            self._trouble.pop(chat_id, None)
        self.failed += 1
        FAILED.inc()
        log.error("telegram message not delivered", extra={"chat_id": self._target(chat_id), "error": str(exc)})
        return outcome


def _may_have_arrived(exc: NetworkError) -> bool:
    """Whether Telegram may have the message despite the error: not when the request never left (connection refused)
    nor when Telegram answered with an error status (a 5xx: PTB raises it without a transport cause)."""
    cause = exc.__cause__
    answered = not isinstance(exc, TimedOut) and (cause is None or isinstance(cause, TelegramError))
    return not answered and not isinstance(cause, _NOT_SENT)


def _text_refused(exc: BadRequest) -> bool:
    return any(words in exc.message.lower() for words in _TEXT_TROUBLE)


def retry_after_seconds(exc: RetryAfter) -> float:
    """The wait a 429 asks for, whether PTB hands it out as int seconds or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
