"""The outgoing Telegram queue: bounded, batched under a burst, retried, and 429-aware.

Talks to the Bot API only through the `send(chat_id, html)` function it is given.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from prometheus_client import Counter
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from services.notifier.messages import join_messages

log = logging.getLogger(__name__)

SENT = Counter("neopulse_notifier_telegram_sent_messages", "Telegram messages delivered")
FAILED = Counter("neopulse_notifier_telegram_failed_messages", "Telegram messages given up on")
DROPPED = Counter("neopulse_notifier_dropped_notifications", "Notifications dropped from a full send queue")
RETRIED = Counter("neopulse_notifier_telegram_retries", "Telegram sends retried", ["reason"])

Send = Callable[[int, str], Awaitable[object]]
MAX_BATCH = 50


class TelegramSender:
    """offer() never waits (the trading path calls it); run() drains the queue at the Bot API's pace."""

    def __init__(self, send: Send, chat_ids: Sequence[int], *, window_seconds: float, queue_size: int,
                 attempts: int, backoff_seconds: float) -> None:
        self._send = send
        self.chat_ids = list(chat_ids)
        self.window_seconds = window_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._unsent: list[str] = []

    def offer(self, html: str) -> None:
        """Queue one HTML block; a full queue sheds its oldest block (counted) instead of waiting."""
        try:
            self.queue.put_nowait(html)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.task_done()
            self.dropped += 1
            DROPPED.inc()
            self.queue.put_nowait(html)

    async def run(self) -> None:
        """Forever: wait for a block, gather what arrives within the window, send it as few messages."""
        while True:
            batch = [await self.queue.get()]
            done = False
            try:
                await self._gather(batch)
                await self._send_batch(batch)
                done = True
            except Exception:  # a bug in sending must not end the process; the blocks are lost, counted
                done = True
                self.failed += len(batch)
                FAILED.inc(len(batch))
                log.exception("telegram send loop failed", extra={"blocks": len(batch)})
            finally:
                if not done:  # cancelled mid-batch (shutdown): flush() sends it
                    self._unsent = batch
                for _ in batch:
                    self.queue.task_done()

    async def flush(self, seconds: float) -> None:
        """Send what is still waiting, at once, within `seconds` (at shutdown, when run() may be gone)."""
        batch, self._unsent = self._unsent, []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
            self.queue.task_done()
        try:
            async with asyncio.timeout(seconds):
                await self._send_batch(batch)
        except TimeoutError:
            log.warning("telegram messages left unsent at shutdown", extra={"blocks": len(batch)})

    async def _send_batch(self, batch: list[str]) -> None:
        for text in join_messages(batch):
            for chat_id in self.chat_ids:
                await self.deliver(chat_id, text)

    async def _gather(self, batch: list[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_seconds
        while len(batch) < MAX_BATCH:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it can swallow a cancel (gh-86296)
                    batch.append(await self.queue.get())
            except TimeoutError:
                break

    async def deliver(self, chat_id: int, text: str) -> bool:
        """Send one message: wait out a 429's retry_after, back off on network errors, give up on the rest."""
        failures = 0
        while True:
            try:
                await self._send(chat_id, text)
                self.sent += 1
                SENT.inc()
                return True
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                RETRIED.labels("rate_limited").inc()
                log.warning("telegram rate limit, waiting", extra={"chat_id": chat_id, "retry_after_s": wait})
                await asyncio.sleep(wait)
            except BadRequest as exc:  # a NetworkError subclass, but resending the same text fails the same way
                return self._give_up(chat_id, exc)
            except NetworkError as exc:  # includes TimedOut and 5xx
                failures += 1
                if failures >= self.attempts:
                    return self._give_up(chat_id, exc)
                RETRIED.labels("network").inc()
                await asyncio.sleep(self.backoff_seconds * 2 ** (failures - 1))
            except TelegramError as exc:  # Forbidden, InvalidToken: retrying will not help
                return self._give_up(chat_id, exc)

    def _give_up(self, chat_id: int, exc: Exception) -> bool:
        self.failed += 1
        FAILED.inc()
        log.error("telegram message not delivered", extra={"chat_id": chat_id, "error": str(exc)})
        return False


def retry_after_seconds(exc: RetryAfter) -> float:
    """The wait a 429 asks for, whether PTB hands it out as int seconds or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
