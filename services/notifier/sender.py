"""The outgoing Telegram queue: bounded with urgent notices first, batched under a burst, retried, and 429-aware.

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
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import Counter
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError

from services.notifier.messages import BLOCK_SEP, group_blocks, plain_fallback

log = logging.getLogger(__name__)

SENT = Counter("neopulse_notifier_telegram_sent_messages", "Telegram messages delivered")
FAILED = Counter("neopulse_notifier_telegram_failed_messages", "Telegram messages given up on")
DROPPED = Counter("neopulse_notifier_dropped_notifications", "Notifications dropped from a full send queue")
LATE = Counter("neopulse_notifier_late_notifications", "Notifications offered after the send queue stopped: not sent")
RETRIED = Counter("neopulse_notifier_telegram_retries", "Telegram sends retried", ["reason"])

Send = Callable[[int, str], Awaitable[object]]
MAX_BATCH = 50
MAX_BACKOFF_S = 15.0  # while Telegram is unreachable, look again at least this often
# The request never left this machine (connection refused, no route, pool full): resending cannot duplicate.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Telegram's descriptions of a text it cannot send ("can't parse entities: ...", "message is too long", ...).
_TEXT_TROUBLE = ("parse entities", "too long", "text is empty", "must be non-empty")


class Outcome(enum.Enum):
    SENT = "sent"
    REFUSED = "refused"  # a 400 about the text (its HTML, its length): it will never go through as it is
    FAILED = "failed"  # given up: the chat is gone, or the network kept failing in ways that may duplicate
    DEFERRED = "deferred"  # a 429: the chat takes nothing until its retry_after; the other chats' messages go first


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
                 attempts: int, backoff_seconds: float, group_interval_seconds: float = 0.0) -> None:
        self._send = send
        # The Bot API takes about 20 messages a minute in one group: a group's messages go this far apart (a
        # private chat's are paced by the batch window). Negative chat ids are groups.
        self.group_interval_seconds = group_interval_seconds
        # chat id -> loop time before which nothing more goes to it: a group's pace, a 429's retry_after
        self._next_at: dict[int, float] = {}
        self.chat_ids = list(chat_ids)
        self.window_seconds = window_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.queue = Lanes(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.late = 0  # offered after stop(): never sent
        self.closed = False  # stop() has ended: nothing more goes out
        self._untold = 0  # notifications shed since the trader was last told so
        self._held: tuple[list[str], list[str]] = ([], [])  # (urgent, ordinary) blocks of the batch being gathered
        # (chat_id, blocks) messages of the batch in hand, each until it is delivered or given up: what stop() sends
        # when it ends run() mid-batch
        self._pending: deque[tuple[int, list[str]]] = deque()
        self._runner: asyncio.Task[Any] | None = None
        self._wire = asyncio.Lock()  # held while a request is on its way to Telegram
        self._migrated: dict[int, int] = {}  # a group upgraded to a supergroup: configured id -> its new id

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
                self._pending.extend(self._messages(self._release()))
            try:
                await self._send_pending(until_offered=True)
            except Exception:  # a bug in sending must not end the process; the messages are lost, counted
                lost = len(self._pending)
                self._pending.clear()
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
                "messages": left, "blocks": sum(len(blocks) for _, blocks in self._pending)})
            self._pending.clear()

    def _take_all(self) -> bool:
        """Move the queue and the held blocks into the messages to send; True when there is any to send."""
        urgent, ordinary = self.queue.take(len(self.queue))
        self._held[0].extend(urgent)
        self._held[1].extend(ordinary)
        self._pending.extend(self._messages(self._release()))
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

    def _release(self) -> list[str]:
        """The held blocks: urgent ones, then a line saying how many were shed since the last such line, then
        the rest."""
        (urgent, ordinary), self._held = self._held, ([], [])
        if self._untold:
            urgent.append(f"⚠️ <b>{self._untold} notifications dropped</b>\nThe send queue was full; /orders and "
                          "/positions show the current state.")
            self._untold = 0
        return urgent + ordinary

    def _messages(self, batch: list[str]) -> list[tuple[int, list[str]]]:
        """The batch packed into messages, each for every chat: (chat_id, blocks) in sending order."""
        return [(chat_id, group) for group in group_blocks(batch) for chat_id in self.chat_ids]

    async def _send_pending(self, until_offered: bool = False) -> None:
        """Send the messages in hand, each chat's in order; a chat that may take none yet (a 429's retry_after, a
        group's pace) does not hold up the others': a kill-switch alert to one chat never waits out another's.
        `until_offered` (the send loop): when every message left waits for its chat, return as soon as a new block
        is offered, so that its batch is gathered and sent to the chats that can take it (the ones left keep their
        place, first for their chat)."""
        loop = asyncio.get_running_loop()
        while self._pending:
            now, waiting = loop.time(), set()
            for i, (chat_id, group) in enumerate(self._pending):
                target = self._migrated.get(chat_id, chat_id)
                if target in waiting or self._next_at.get(target, 0.0) > now:
                    waiting.add(target)  # and its later messages wait behind it
                    continue
                if await self._send_group(chat_id, group):
                    del self._pending[i]  # delivered or given up (counted there); not before, so a cancel keeps it
                break
            else:
                wait = min(self._next_at[t] for t in waiting) - now
                if not until_offered:
                    await asyncio.sleep(wait)
                    continue
                if not self.queue.empty() or await self._offered_within(wait):
                    return

    async def _send_group(self, chat_id: int, group: list[str]) -> bool:
        """One message of joined blocks; if Telegram refuses its text, block by block, and a block it still
        refuses as plain text: one bad block must not silence the others, and the trader still reads it. False when
        a 429 deferred it (nothing of it sent): it is sent again once the chat's retry_after is over."""
        outcome = await self.deliver(chat_id, BLOCK_SEP.join(group), defer=True)
        if outcome is Outcome.DEFERRED:
            return False
        if outcome is not Outcome.REFUSED:
            return True
        for block in group:
            if len(group) == 1 or await self.deliver(chat_id, block) is Outcome.REFUSED:
                await self.deliver(chat_id, plain_fallback(block))
        return True

    async def deliver(self, chat_id: int, text: str, defer: bool = False) -> Outcome:
        """Send one message: wait out a 429's retry_after (`defer`: return DEFERRED instead, the chat marked busy
        until then), follow a migrated group, resend after network errors (until it goes through when the request
        never left; `attempts` times when a resend may duplicate)."""
        doubtful = tries = 0
        while True:
            target = self._migrated.get(chat_id, chat_id)
            await self._pace(target)
            try:
                async with self._wire:
                    await self._send(target, text)
                self.sent += 1
                SENT.inc()
                if target < 0 and self.group_interval_seconds:
                    self._next_at[target] = asyncio.get_running_loop().time() + self.group_interval_seconds
                return Outcome.SENT
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                RETRIED.labels("rate_limited").inc()
                log.warning("telegram rate limit, waiting", extra={"chat_id": target, "retry_after_s": wait})
                self._next_at[target] = asyncio.get_running_loop().time() + wait
                if defer:
                    return Outcome.DEFERRED
                await asyncio.sleep(wait)
            except ChatMigrated as exc:
                if self._migrated.get(chat_id) == exc.new_chat_id:
                    return self._give_up(target, exc, Outcome.FAILED)
                self._migrated[chat_id] = exc.new_chat_id
                log.warning("telegram group became a supergroup; replace its id in the notifier's chat ids",
                            extra={"chat_id": chat_id, "new_chat_id": exc.new_chat_id})
            except BadRequest as exc:  # a NetworkError subclass, but resending the same text fails the same way
                return self._give_up(target, exc, Outcome.REFUSED if _text_refused(exc) else Outcome.FAILED)
            except NetworkError as exc:  # includes TimedOut and 5xx
                tries += 1
                doubtful += not isinstance(exc.__cause__, _NOT_SENT)
                if doubtful >= self.attempts:
                    return self._give_up(target, exc, Outcome.FAILED)
                RETRIED.labels("network").inc()
                await asyncio.sleep(min(MAX_BACKOFF_S, self.backoff_seconds * 2 ** min(tries - 1, 16)))
            except TelegramError as exc:  # Forbidden, InvalidToken: retrying will not help
                return self._give_up(target, exc, Outcome.FAILED)

    async def _pace(self, chat_id: int) -> None:
        """Wait until the group may take another message (group_interval_seconds after the last one)."""
        wait = self._next_at.get(chat_id, 0.0) - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _give_up(self, chat_id: int, exc: Exception, outcome: Outcome) -> Outcome:
        self.failed += 1
        FAILED.inc()
        log.error("telegram message not delivered", extra={"chat_id": chat_id, "error": str(exc)})
        return outcome


def _text_refused(exc: BadRequest) -> bool:
    return any(words in exc.message.lower() for words in _TEXT_TROUBLE)


def retry_after_seconds(exc: RetryAfter) -> float:
    """The wait a 429 asks for, whether PTB hands it out as int seconds or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
