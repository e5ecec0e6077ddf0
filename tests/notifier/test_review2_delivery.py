"""Through a Telegram incident (5xx, timeouts, refused connections) a notification is resent for minutes, not
seconds, one chat's trouble holding up no other chat; what is given up all the same is told in the chat with the
next message that gets through. The real python-telegram-bot against the fake Bot API, or a bare send function where
one chat must fail and another not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from telegram.error import NetworkError

from services.notifier.sender import TelegramSender
from tests.helpers import eventually
from tests.notifier.conftest import CHAT
from tests.notifier.test_review_delivery import running_sender

ALERT = "🚨 <b>Order outcome unknown: check the broker's order book</b>\nBUY 10 SBIN-EQ"
FILL = "✅ <b>Fill</b>\nSELL 10 TCS-EQ @ ₹3,500.00"
GROUP, PRIVATE = -1001234, 42


def texts(fake_api) -> list[str]:
    return [p["text"] for p in fake_api.sent(chat_id=CHAT)]


async def test_an_urgent_alert_is_resent_through_a_telegram_5xx_spell_longer_than_its_attempts(fake_api):
    fake_api.error_next = [502, 503, 500] * 3  # nine failures; five attempts used to give it up
    async for sender in running_sender(fake_api, attempts=5):
        sender.offer(ALERT, urgent=True)

        await fake_api.wait_sent(10, chat_id=CHAT, within=10)

    assert texts(fake_api)[-1] == ALERT and sender.failed == 0


async def test_a_fill_is_resent_through_a_telegram_5xx_spell_longer_than_its_attempts(fake_api):
    fake_api.error_next = [502] * 8
    async for sender in running_sender(fake_api, attempts=5):
        sender.offer(FILL)

        await fake_api.wait_sent(9, chat_id=CHAT, within=10)

    assert texts(fake_api)[-1] == FILL and sender.failed == 0


async def test_an_urgent_alert_whose_answers_time_out_is_resent_beyond_its_attempts(fake_api):
    fake_api.delay_next = [1.0] * 4  # answered after the sender stopped waiting (0.3 s): each may have arrived
    async for sender in running_sender(fake_api, attempts=3):
        sender.offer(ALERT, urgent=True)

        await eventually(lambda s=sender: s.sent == 1, within=10)  # type: ignore[misc]

    assert len(texts(fake_api)) == 5 and sender.failed == 0


async def test_a_message_given_up_is_told_in_the_chat_as_soon_as_telegram_takes_messages_again(fake_api):
    """On its own, not only with a later notification: the last alert of the day may have been the one lost."""
    fake_api.error_next = [502] * 10_000  # Telegram down for longer than the sender keeps trying
    async for sender in running_sender(fake_api, attempts=5):
        sender.give_up_seconds = 0.3
        sender.offer(ALERT, urgent=True)
        await eventually(lambda s=sender: s.failed == 1, within=5)  # type: ignore[misc]
        fake_api.error_next.clear()  # Telegram is back
        await eventually(lambda s=sender: s.sent == 1, within=5)  # type: ignore[misc]

        sender.offer(FILL)
        await eventually(lambda s=sender: s.sent == 2, within=5)  # type: ignore[misc]

    assert texts(fake_api)[-2:] == ["⚠️ <b>1 notifications could not be delivered</b>\nTelegram did not take them; "
                                    "/orders and /positions show the current state.", FILL]


async def test_a_stop_during_a_telegram_5xx_spell_ends_in_its_time_and_counts_what_it_did_not_send(fake_api):
    fake_api.error_next = [502] * 10_000
    async for sender in running_sender(fake_api):
        sender.offer(ALERT, urgent=True)
        await fake_api.wait_sent(1, chat_id=CHAT)
        loop = asyncio.get_running_loop()
        began = loop.time()

        await sender.stop(seconds=0.5)

    assert loop.time() - began < 1.5 and sender.failed == 1


async def running_bare(send, chat_ids: list[int], queue_size: int = 100) -> AsyncIterator[TelegramSender]:
    sender = TelegramSender(send, chat_ids, window_seconds=0.01, queue_size=queue_size, attempts=3,
                            backoff_seconds=0.05)
    runner = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_chat_in_a_5xx_spell_does_not_hold_up_another_chats_messages():
    got: list[str] = []

    async def send(chat_id: int, html: str) -> None:
        if chat_id == GROUP:
            raise NetworkError("Bad Gateway")  # as PTB raises Telegram's 502
        got.append(html)

    async for sender in running_bare(send, [GROUP, PRIVATE]):
        for i in range(3):
            sender.offer(f"✅ fill {i}")
            await eventually(lambda n=i: len(got) == n + 1, within=1)  # not behind the group's back-off

        assert sender.failed == 0  # the group's are still being resent


async def test_while_telegram_is_down_the_queue_sheds_and_the_trader_is_told_how_many():
    got: list[str] = []
    down = True

    async def send(chat_id: int, html: str) -> None:
        if down:
            raise NetworkError("Bad Gateway")
        got.append(html)

    async for sender in running_bare(send, [PRIVATE], queue_size=2):
        sender.offer("🛑 kill switch", urgent=True)
        await eventually(lambda s=sender: s.queue.empty())  # in hand, being resent
        for i in range(5):
            sender.offer(f"✅ fill {i}")
            await asyncio.sleep(0.05)  # time enough for the send loop to take it, were it to pile them up in hand
        down = False

        await eventually(lambda: "✅ fill 4" in "".join(got))

    assert "3 notifications dropped" in "".join(got) and sender.failed == 0
