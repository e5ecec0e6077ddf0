"""Delivery under Telegram's weather: full queues, refused text, outages, slow answers, migrated groups.

The real python-telegram-bot against the fake Bot API (tests/notifier/fake_bot_api.py) or its strict variant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest
from telegram import Bot
from telegram.constants import ParseMode
from telegram.request import HTTPXRequest

from services.notifier.messages import join_messages, notification_html
from services.notifier.module import NotifierModule
from services.notifier.sender import TelegramSender
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import ops_pb2
from tests.helpers import eventually
from tests.notifier.conftest import CHAT, settings_for, started
from tests.notifier.fake_bot_api import TOKEN, FakeBotApi
from tests.notifier.test_fuzz_commands import telegram_problems
from tests.notifier.test_notifications import fill

DAY = date(2026, 11, 25)  # a Wednesday


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def kill_switch() -> ops_pb2.Notification:
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, severity=ops_pb2.SEVERITY_CRITICAL,
                                title="Kill switch engaged", text="daily loss limit breached", source="risk")


def texts(api: FakeBotApi, chat_id: int = CHAT) -> str:
    return "\n\n".join(p["text"] for p in api.sent(chat_id=chat_id))


def telegram_refusal(text: str) -> str | None:
    """What Telegram answers (its 400 description) to an HTML text it will not send, in its own words."""
    problems = telegram_problems(text)
    if not problems:
        return None
    if any("too long" in p for p in problems):
        return "Bad Request: message is too long"
    if any("empty" in p for p in problems):
        return "Bad Request: message text is empty"
    return f"Bad Request: can't parse entities: {problems[0]}"


@pytest.fixture
async def strict_api() -> AsyncIterator[FakeBotApi]:
    """The fake Bot API refusing (400) HTML texts Telegram refuses."""
    api = FakeBotApi()
    api.check_html = telegram_refusal
    await api.start()
    yield api
    await api.stop()


def refused(api: FakeBotApi) -> list[str]:
    return [p["text"] for p in api.sent(chat_id=CHAT) if telegram_refusal(p["text"])]


def accepted(api: FakeBotApi) -> str:
    return "\n\n".join(p["text"] for p in api.sent(chat_id=CHAT) if not telegram_refusal(p["text"]))


async def running_sender(api: FakeBotApi, attempts: int = 3,
                         chat_ids: tuple[int, ...] = (CHAT,)) -> AsyncIterator[TelegramSender]:
    """A TelegramSender over a real PTB Bot with short timeouts, sending as TelegramBot.send does."""
    bot = Bot(TOKEN, base_url=f"{api.url}/bot", request=HTTPXRequest(read_timeout=0.3, connect_timeout=0.3))
    await bot.initialize()

    async def send(chat_id: int, html: str) -> object:
        return await bot.send_message(chat_id, html, parse_mode=ParseMode.HTML)

    sender = TelegramSender(send, list(chat_ids), window_seconds=0.05, queue_size=100, attempts=attempts,
                            backoff_seconds=0.01)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bot.shutdown()


# -- priorities and a full queue ---------------------------------------------------------------

async def flood_while_telegram_is_down(bus: Bus, api: FakeBotApi, module: NotifierModule, fills: int) -> None:
    """The kill switch alert, then a flood of fills, all queued while the bot cannot start; then it starts."""
    await module.start()
    await bus.publish(Topic.NOTIFICATIONS, kill_switch())
    for i in range(fills):
        await bus.publish(Topic.ORDER_UPDATES, fill(sequence=i + 1))
    await eventually(lambda: module.handled == fills + 1)
    api.fail["getMe"].clear()


async def sent_after_a_flood_in_a_full_queue(bus, fake_api, clock) -> str:
    """30 fills and a kill switch into a queue of 5 while Telegram is down; what reaches the chat once it is back."""
    fake_api.fail["getMe"] = [502] * 1000
    module = NotifierModule(bus, settings_for(fake_api, queue_size=5, bot_start_retry_seconds=0.05), clock)
    runner = asyncio.create_task(module.run())
    try:
        await flood_while_telegram_is_down(bus, fake_api, module, fills=30)
        await eventually(lambda: texts(fake_api).count("✅ <b>Fill</b>") == 4)  # what fitted in the queue
    finally:
        await module.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return texts(fake_api)


async def test_a_kill_switch_alert_is_not_shed_by_a_flood_of_fills_in_a_full_queue(bus, standins, fake_api, clock):
    assert "Kill switch engaged" in await sent_after_a_flood_in_a_full_queue(bus, fake_api, clock)


async def test_the_trader_is_told_how_many_notifications_a_full_queue_dropped(bus, standins, fake_api, clock):
    sent = await sent_after_a_flood_in_a_full_queue(bus, fake_api, clock)

    assert "26 notifications dropped" in sent
    assert sent.count("✅ <b>Fill</b>") == 4  # the newest four, with the kill switch, filled the queue


async def test_a_critical_alert_goes_out_without_waiting_for_the_batch_window(bus, standins, fake_api, clock):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, batch_window_seconds=30), clock)):
        await bus.publish(Topic.NOTIFICATIONS, kill_switch())

        sent = await fake_api.wait_sent(1, chat_id=CHAT, within=3)

    assert sent[0]["text"] == "🚨 <b>Kill switch engaged</b>\ndaily loss limit breached"


# -- what Telegram refuses -----------------------------------------------------------------------

def test_joined_messages_fit_telegrams_limit_counted_in_utf16_units():
    blocks = ["📈" * 1500, "📉" * 1500, "📈" * 1500]

    assert [utf16_len(m) for m in join_messages(blocks)] == [3000, 3000, 3000]


async def test_a_long_reason_full_of_emoji_still_reaches_the_trader(bus, standins, strict_api, clock):
    note = ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_WARNING,
                                title="Strategy error", text="🚀" * 3000, source="strategy")
    async for _ in started(NotifierModule(bus, settings_for(strict_api), clock)):
        await bus.publish(Topic.NOTIFICATIONS, note)
        sent = await strict_api.wait_sent(1, chat_id=CHAT)
        await asyncio.sleep(0.2)  # a refused send and its fallback would both be recorded by now

    assert refused(strict_api) == []
    assert sent[0]["text"].startswith("⚙️ <b>Strategy error</b>\n🚀🚀🚀")


def test_every_notification_block_is_html_telegram_accepts():
    note = ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, title="<b>M&M</b> " + "🚀" * 300,
                                text="x<y>&z " + "😀" * 3000)

    assert telegram_problems(notification_html(note)) == []


async def test_one_block_telegram_refuses_does_not_take_the_rest_of_its_batch_down(strict_api):
    async for sender in running_sender(strict_api):
        sender.offer("✅ <b>Fill</b>\nBUY 10 SBIN-EQ")
        sender.offer("⚠️ <b>Broken</b>\nunclosed <i>tag")
        sender.offer("✅ <b>Fill</b>\nSELL 10 SBIN-EQ")
        await eventually(lambda: "SELL 10 SBIN-EQ" in accepted(strict_api))

    delivered = accepted(strict_api)
    assert "BUY 10 SBIN-EQ" in delivered
    assert "⚠️ Broken\nunclosed tag" in delivered  # as plain text
    assert len(refused(strict_api)) == 2  # the batch, then the broken block alone


# -- the network -------------------------------------------------------------------------------

async def test_a_notification_sent_during_a_network_outage_arrives_once_the_network_is_back(fake_api):
    async for sender in running_sender(fake_api, attempts=3):
        await fake_api.go_offline()
        sender.offer("🚨 <b>Order outcome unknown</b>\nBUY 10 SBIN-EQ")
        await asyncio.sleep(1.0)  # far longer than three attempts with a 10 ms back-off
        await fake_api.go_online()

        sent = await fake_api.wait_sent(1, chat_id=CHAT, within=10)

    assert [p["text"] for p in sent] == ["🚨 <b>Order outcome unknown</b>\nBUY 10 SBIN-EQ"]


async def test_an_answer_that_times_out_is_resent_but_only_up_to_the_attempts(fake_api):
    fake_api.delay_next = [1.0] * 10  # Telegram delivers each copy, but answers after the bot gave up waiting
    async for sender in running_sender(fake_api, attempts=3):
        sender.offer("✅ <b>Fill</b>\nBUY 10 SBIN-EQ")
        await eventually(lambda s=sender: s.failed == 1, within=10)  # type: ignore[misc]
        await asyncio.sleep(0.5)

    fills = [p for p in fake_api.sent(chat_id=CHAT) if p["text"].startswith("✅ <b>Fill</b>")]
    assert len(fills) == 3  # then the chat is told it was not delivered, in a message of its own


async def test_a_group_upgraded_to_a_supergroup_keeps_getting_alerts(bus, standins, fake_api, clock):
    group, supergroup = -4242, -1004242
    fake_api.migrated = {group: supergroup}
    async for _ in started(NotifierModule(bus, settings_for(fake_api, allowed_chat_ids=[group]), clock)):
        await bus.publish(Topic.NOTIFICATIONS, kill_switch())

        sent = await fake_api.wait_sent(1, chat_id=supergroup)

    assert sent[0]["text"] == "🚨 <b>Kill switch engaged</b>\ndaily loss limit breached"


# -- the daily summary ------------------------------------------------------------------------------

async def test_the_trader_hears_when_the_daily_summary_cannot_be_built(bus, fake_api):
    clock = ManualClock(ist_ns(DAY, 15, 44))  # no OMS in this process: ListOrders has no handler
    settings = settings_for(fake_api, daily_summary_time_ist="15:45", summary_check_seconds=0.01)
    async for _ in started(NotifierModule(bus, settings, clock)):
        clock.set(ist_ns(DAY, 15, 46))
        sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"].startswith("📊 <b>Daily summary 2026-11-25 unavailable</b>\n")
