"""The send queue's rules under Telegram failures: an ordinary fill is never resent through timeouts by riding with
an urgent alert, messages are given up by their age (not one per 10 minutes), what a full queue shed is counted in
the loss told, and a loss is told even when nothing else follows."""

from __future__ import annotations

import asyncio

import httpx
from telegram.error import NetworkError, TimedOut

from services.notifier.sender import TelegramSender
from tests.helpers import eventually

CHAT = 42
KILL = "🛑 <b>Kill switch engaged</b>\ndaily loss limit breached"
FILL = "✅ <b>Fill</b>\nBUY 10 SBIN-EQ @ ₹800.00"
DOWN, UP = 41, 42
GIVE_UP_S = 0.3


class SlowAnswers:
    """Telegram delivering every message but answering the first `times` after the read timeout (each may be a
    duplicate the chat sees)."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.reached: list[str] = []

    async def send(self, chat_id: int, html: str) -> None:
        self.reached.append(html)  # it reached the chat
        if self.times:
            self.times -= 1
            raise TimedOut() from httpx.ReadTimeout("read timed out")


async def fills_told(sender: TelegramSender, telegram: SlowAnswers) -> int:
    runner = asyncio.create_task(sender.run())
    try:
        await eventually(lambda: sender.sent >= 1 or sender.failed >= 1, within=10)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return sum(FILL in html for html in telegram.reached)


async def test_a_fill_packed_with_an_urgent_alert_is_not_told_more_than_attempts_times():
    telegram = SlowAnswers(8)
    sender = TelegramSender(telegram.send, [CHAT], window_seconds=0.05, queue_size=100, attempts=3,
                            backoff_seconds=0.01)
    sender.offer(FILL)  # an ordinary fill, then an urgent alert within the batch window: one batch
    sender.offer(KILL, urgent=True)

    assert await fills_told(sender, telegram) <= 3


async def test_after_a_full_queue_a_fill_is_not_told_more_than_attempts_times():
    """The 'N notifications dropped' line went with the urgent blocks: the batch's fills rode in an urgent message."""
    telegram = SlowAnswers(8)
    sender = TelegramSender(telegram.send, [CHAT], window_seconds=0.05, queue_size=1, attempts=3, backoff_seconds=0.01)
    sender.offer("✅ <b>Fill</b>\nold one, shed")
    sender.offer(FILL)  # the queue (size 1) sheds the first: the batch now carries the 'dropped' line

    assert await fills_told(sender, telegram) <= 3


async def test_a_recovered_chat_is_not_sent_notifications_older_than_give_up_seconds():
    loop = asyncio.get_running_loop()
    a_down = True
    got_a: list[tuple[float, float]] = []  # (offered at, delivered at)

    async def send(chat_id: int, html: str) -> None:
        if chat_id == DOWN:
            if a_down:
                raise NetworkError("Bad Gateway")  # as PTB raises Telegram's 502
            for line in html.split("\n\n"):
                if line.startswith("fill@"):
                    got_a.append((float(line[5:]), loop.time()))

    sender = TelegramSender(send, [DOWN, UP], window_seconds=0.01, queue_size=1000, attempts=3,
                            backoff_seconds=0.02, give_up_seconds=GIVE_UP_S)
    runner = asyncio.create_task(sender.run())
    try:
        began = loop.time()
        while loop.time() - began < 2.0:  # a 2-second spell for DOWN; UP takes everything meanwhile
            sender.offer(f"fill@{loop.time()}")
            await asyncio.sleep(0.02)
        backlog = sum(m.chat_id == DOWN for m in sender._pending)
        a_down = False
        await asyncio.sleep(1.0)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    oldest = max((at - offered for offered, at in got_a), default=0.0)
    print(f"backlog for the down chat at recovery: {backlog} messages; oldest delivered {oldest:.2f}s old")
    assert oldest <= 2 * GIVE_UP_S, (f"after recovery the chat got a notification {oldest:.2f}s old "
                                     f"(give_up_seconds={GIVE_UP_S}); {backlog} messages were in hand for it")


async def test_one_chat_telegram_wide_outage_does_not_deliver_blocks_older_than_give_up_seconds():
    """One chat, Telegram down for everyone: each batch of 50 gets its own fresh give_up_seconds, so a burst
    queued at the start of the outage is still being delivered long after it should have been given up."""
    loop = asyncio.get_running_loop()
    down = True
    delivered_at: dict[int, float] = {}

    async def send(chat_id: int, html: str) -> None:
        if down:
            raise NetworkError("Bad Gateway")
        for line in html.split("\n\n"):
            if line.startswith("fill "):
                delivered_at[int(line[5:])] = loop.time()

    sender = TelegramSender(send, [UP], window_seconds=0.01, queue_size=1000, attempts=3,
                            backoff_seconds=0.02, give_up_seconds=GIVE_UP_S)
    offered = loop.time()
    for i in range(200):  # a burst at the start of the outage (a square-off's fills, say)
        sender.offer(f"fill {i}")
    runner = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(1.0)  # Telegram down for 1 s (> 3 x give_up_seconds)
        down = False
        await asyncio.sleep(0.5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    late = {i: at - offered for i, at in delivered_at.items()}
    oldest = max(late.values(), default=0.0)
    assert oldest <= 2 * GIVE_UP_S, (f"{len(late)} of the burst were delivered after recovery, up to {oldest:.2f}s "
                                     f"after they were offered (give_up_seconds={GIVE_UP_S})")


class Outage:
    """Telegram answering 502 while `down`; what it took once up again."""

    def __init__(self) -> None:
        self.down = True
        self.got: list[str] = []

    async def send(self, chat_id: int, html: str) -> None:
        if self.down:
            raise NetworkError("Bad Gateway")
        self.got.append(html)


async def test_notifications_shed_then_given_up_are_all_counted_in_the_notice():
    telegram = Outage()
    send, got = telegram.send, telegram.got

    sender = TelegramSender(send, [CHAT], window_seconds=0.01, queue_size=1, attempts=3, backoff_seconds=0.02,
                            give_up_seconds=0.2)
    for i in range(11):  # queue of 1: ten shed, "fill 10" kept
        sender.offer(f"fill {i}")
    runner = asyncio.create_task(sender.run())
    try:
        await eventually(lambda: sender.failed == 1, within=5)  # Telegram down: the batch is given up
        telegram.down = False
        sender.offer("fill 11")
        await eventually(lambda: bool(got), within=5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    # fills 0..10 never reached the chat: eleven notifications
    assert "11 notifications could not be delivered" in got[-1] or "10 notifications dropped" in got[-1], got[-1]


async def test_a_given_up_alert_is_told_once_telegram_is_back_even_without_a_later_notification():
    telegram = Outage()
    send, got = telegram.send, telegram.got

    sender = TelegramSender(send, [CHAT], window_seconds=0.01, queue_size=10, attempts=3, backoff_seconds=0.02,
                            give_up_seconds=0.2)
    sender.offer("🛑 <b>Kill switch engaged</b>", urgent=True)
    runner = asyncio.create_task(sender.run())
    try:
        await eventually(lambda: sender.failed == 1, within=5)
        telegram.down = False  # Telegram is back; nothing else happens until the process stops
        await asyncio.sleep(0.5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    await sender.stop(seconds=1.0)

    assert any("could not be delivered" in html for html in got), f"told nothing; sent {got}"
