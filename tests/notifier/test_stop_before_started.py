"""A stop that comes while the bot is still starting (a module failed in the process's first second, or Telegram was
away at start and the bot is waiting to try again): the CRITICAL notice of it, queued meanwhile, still reaches the
trader. Sending needs the bot initialised, not polling."""

from __future__ import annotations

import asyncio

from services.notifier.module import NotifierModule
from shared.bus import Topic
from shared.contracts import ops_pb2
from tests.notifier.conftest import CHAT, settings_for

FAILED = ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_CRITICAL,
                              title="risk failed; stopping", text="RuntimeError: boom", source="app")


async def run_until_stopped(module: NotifierModule, bus) -> None:
    """Publish the failure notice while the bot has not started, then stop the module as the monolith does."""
    await module.start()
    task = asyncio.create_task(module.run())
    try:
        await asyncio.sleep(0.2)
        assert not module.bot_started.is_set()
        await bus.publish(Topic.NOTIFICATIONS, FAILED)
        await bus.drain()
        await module.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_critical_queued_while_the_bot_was_still_starting_is_sent_at_stop(bus, fake_api, clock):
    fake_api.hold["setMyCommands"] = asyncio.Event()  # start() is under way: initialised, not polling yet
    module = NotifierModule(bus, settings_for(fake_api), clock)

    await run_until_stopped(module, bus)

    assert any("risk failed; stopping" in m["text"] for m in fake_api.sent(chat_id=CHAT))


async def test_a_critical_queued_while_telegram_was_away_at_start_is_sent_once_it_is_back(bus, fake_api, clock):
    await fake_api.go_offline()  # the bot's first start fails; the next try is 30 s away
    module = NotifierModule(bus, settings_for(fake_api), clock)
    await module.start()
    task = asyncio.create_task(module.run())
    try:
        await asyncio.sleep(0.3)
        await bus.publish(Topic.NOTIFICATIONS, FAILED)
        await bus.drain()
        await fake_api.go_online()
        await module.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert any("risk failed; stopping" in m["text"] for m in fake_api.sent(chat_id=CHAT))
