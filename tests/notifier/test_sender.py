"""The send queue: what a full queue sheds, and what a stop still sends, or counts and logs (so is what comes after).

The stops run the notifier (or its sender) on the real python-telegram-bot against the fake Bot API.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import REGISTRY

from services.notifier.module import NotifierModule
from services.notifier.sender import TelegramSender
from shared.contracts import ops_pb2
from tests.helpers import eventually
from tests.notifier.conftest import CHAT, settings_for, started
from tests.notifier.test_review_delivery import running_sender


async def record(chat_id: int, html: str) -> None:
    return None


def sender_of(send=record, queue_size: int = 100, window_seconds: float = 0.01) -> TelegramSender:
    return TelegramSender(send, [1], window_seconds=window_seconds, queue_size=queue_size, attempts=3,
                          backoff_seconds=0.01)


def test_an_ordinary_block_offered_to_a_queue_full_of_urgent_ones_is_the_one_shed():
    sender = sender_of(queue_size=3)
    for i in range(3):
        sender.offer(f"🛑 kill switch {i}", urgent=True)

    sender.offer("✅ fill")

    assert list(sender.queue.urgent) == ["🛑 kill switch 0", "🛑 kill switch 1", "🛑 kill switch 2"]
    assert list(sender.queue.ordinary) == [] and sender.dropped == 1


def test_an_urgent_block_offered_to_a_full_queue_sheds_an_ordinary_one_first():
    sender = sender_of(queue_size=2)
    sender.offer("🛑 kill switch", urgent=True)
    sender.offer("✅ fill")

    sender.offer("⚠️ risk breach", urgent=True)

    assert list(sender.queue.urgent) == ["🛑 kill switch", "⚠️ risk breach"]
    assert list(sender.queue.ordinary) == [] and sender.dropped == 1


# -- a stop ---------------------------------------------------------------------------------------------------
def notice(title: str) -> ops_pb2.Notification:
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_INFO, title=title)


def delivered(fake_api, after: int = 0) -> str:
    return "\n\n".join(p["text"] for p in fake_api.sent(chat_id=CHAT)[after:])


async def test_a_stop_while_a_batch_is_gathered_sends_it_and_everything_queued_behind_it(bus, standins, fake_api,
                                                                                        clock):
    settings = settings_for(fake_api, batch_window_seconds=30)
    async for module in started(NotifierModule(bus, settings, clock)):
        module.deliver(notice("Fill A"))
        await eventually(lambda m=module: m.sender.queue.empty())  # the send loop holds A for its batch
        for name in ("Fill B", "Fill C", "NeoPulse stopping"):
            module.deliver(notice(name))

        await module.stop()  # as the monolith does: while the module's run() is still going
        sent = delivered(fake_api)

    assert [name in sent for name in ("Fill A", "Fill B", "Fill C", "NeoPulse stopping")] == [True] * 4
    assert module.sender.failed == 0


async def test_a_stop_while_a_message_waits_out_a_429_still_sends_it(bus, standins, fake_api, clock):
    fake_api.rate_limit_next = [3]
    async for module in started(NotifierModule(bus, settings_for(fake_api), clock)):
        module.deliver(notice("Fill X"))
        await fake_api.wait_sent(1, chat_id=CHAT)  # refused with a 429: the send loop waits 3 s
        module.deliver(notice("NeoPulse stopping"))

        await module.stop()
        sent = delivered(fake_api, after=1)

    assert "Fill X" in sent and "NeoPulse stopping" in sent
    assert module.sender.failed == 0


async def test_a_stop_lets_a_request_on_the_wire_finish_so_its_message_is_neither_lost_nor_sent_twice(fake_api):
    fake_api.hold["sendMessage"] = answered = asyncio.Event()
    async for sender in running_sender(fake_api):
        sender.offer("✅ <b>Fill</b>\nBUY 10 SBIN-EQ")
        await fake_api.wait_sent(1, chat_id=CHAT)  # Telegram has it; its answer is on the way
        stopping = asyncio.create_task(sender.stop(seconds=5.0))
        done, _ = await asyncio.wait({stopping}, timeout=0.2)
        answered.set()
        await stopping

    assert done == set()  # the stop waited for the answer
    assert len(fake_api.sent(chat_id=CHAT)) == 1 and (sender.sent, sender.failed) == (1, 0)


async def test_what_a_stop_cannot_send_in_time_is_counted_and_logged(fake_api, caplog):
    fake_api.rate_limit_next = [30, 30]
    async for sender in running_sender(fake_api):
        sender.offer("✅ <b>Fill</b>\nBUY 10 SBIN-EQ")
        await fake_api.wait_sent(1, chat_id=CHAT)  # a 429: wait 30 s

        await sender.stop(seconds=0.2)

    assert sender.failed == 1
    assert [(r.levelno, r.messages, r.blocks) for r in caplog.records
            if r.getMessage() == "telegram messages left unsent at shutdown"] == [(logging.ERROR, 1, 1)]


async def test_what_was_queued_for_a_bot_that_never_started_is_counted_at_stop(bus, standins, fake_api, clock):
    fake_api.fail["getMe"] = [502] * 1000  # Telegram unreachable for the whole run
    module = NotifierModule(bus, settings_for(fake_api, bot_start_retry_seconds=0.05), clock)
    await module.start()
    runner = asyncio.create_task(module.run())
    module.deliver(notice("Fill A"))

    await module.stop()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)

    assert module.sender is not None and module.sender.failed == 1 and fake_api.sent() == []


async def test_a_notification_that_comes_after_the_stop_is_logged_and_counted_as_not_sent(bus, standins, fake_api,
                                                                                          clock, caplog):
    before = REGISTRY.get_sample_value("neopulse_notifier_late_notifications_total") or 0.0
    async for module in started(NotifierModule(bus, settings_for(fake_api), clock)):
        await module.stop()

        module.deliver(notice("Kill switch: 1 open order(s) NOT cancelled"))

    assert module.sender is not None and (module.sender.late, fake_api.sent(chat_id=CHAT)) == (1, [])
    assert (REGISTRY.get_sample_value("neopulse_notifier_late_notifications_total") or 0.0) - before == 1
    assert [(r.levelno, r.title) for r in caplog.records
            if r.getMessage() == "notification not sent to Telegram: it came after the notifier stopped"] == [
        (logging.ERROR, "Kill switch: 1 open order(s) NOT cancelled")]


# -- pace -----------------------------------------------------------------------------------------------------
GROUP, PRIVATE = -1001234, 42


async def test_a_groups_messages_go_at_least_the_group_interval_apart():
    """Telegram takes about 20 messages a minute in a group: past that it answers 429, and the sender, which sends
    one message at a time, makes every chat's wait. Paced, a group's wait is only as long as the interval."""
    times: dict[int, list[float]] = {GROUP: [], PRIVATE: []}
    loop = asyncio.get_running_loop()

    async def send(chat_id: int, html: str) -> None:
        times[chat_id].append(loop.time())

    sender = TelegramSender(send, [PRIVATE, GROUP], window_seconds=0.01, queue_size=100, attempts=3,
                            backoff_seconds=0.01, group_interval_seconds=0.5)
    runner = asyncio.create_task(sender.run())
    try:
        for i in range(3):
            sender.offer(f"✅ fill {i}")
            await eventually(lambda n=i: len(times[PRIVATE]) == n + 1)
        await eventually(lambda: len(times[GROUP]) == 3)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    group_gaps = [b - a for a, b in zip(times[GROUP], times[GROUP][1:], strict=False)]
    assert min(group_gaps) >= 0.5 - 0.01


async def test_one_chats_429_does_not_hold_up_the_other_chats_messages_and_its_own_go_after_it(fake_api):
    """A group's flood wait (retry_after 30 s): the kill-switch alert still reaches the trader's private chat at once;
    the group gets its messages, in order, once its wait is over."""
    fake_api.rate_limit_next = [1]  # the first message, to the group (sent first), is told to wait 1 s
    async for sender in running_sender(fake_api, chat_ids=(GROUP, CHAT)):
        sender.offer("✅ <b>Fill</b>\nBUY 10 SBIN-EQ")
        await fake_api.wait_sent(1, chat_id=CHAT)
        sender.offer("🛑 <b>Kill switch engaged</b>", urgent=True)
        await fake_api.wait_sent(2, chat_id=CHAT)
        private_done = [t for m, p, t in fake_api.calls if m == "sendMessage" and int(p["chat_id"]) == CHAT][-1]
        await fake_api.wait_sent(3, chat_id=GROUP)  # the refused one, then both after the wait

    to_group = [(p["text"], t) for m, p, t in fake_api.calls if m == "sendMessage" and int(p["chat_id"]) == GROUP]
    # The refused fill, then the alert ahead of the fill retried after the wait (urgent goes first in its chat).
    assert [text.split("\n")[0] for text, _ in to_group] == ["✅ <b>Fill</b>", "🛑 <b>Kill switch engaged</b>",
                                                              "✅ <b>Fill</b>"]
    assert private_done < to_group[1][1]  # the private chat's alert went while the group waited
    assert to_group[1][1] - to_group[0][1] >= 1.0 - 0.05
    assert sender.failed == 0
