"""The one gate: chats not allowed get nothing, are logged, and trigger no bus request."""

from __future__ import annotations

import logging
import time

from services.notifier.module import NotifierModule
from shared import rpc
from shared.bus import Topic
from shared.contracts import ops_pb2
from tests.helpers import eventually
from tests.notifier.conftest import ADMIN, CHAT, STRANGER, settings_for, started
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import button_data


async def test_an_unauthorised_chat_gets_nothing_and_is_logged(notifier, fake_api, standins, commands, caplog, bus):
    caplog.set_level(logging.WARNING, logger="services.notifier")
    fake_api.send_command(STRANGER, "/status")
    fake_api.send_command(STRANGER, "/kill")
    await ask(fake_api, "/help")  # the allowed chat's reply proves the stranger's updates were processed
    await bus.drain()

    assert fake_api.sent(chat_id=STRANGER) == []
    assert standins.requests == []
    assert [c.name for c in commands] == ["help"]
    ignored = [r for r in caplog.records if r.getMessage() == "unauthorised telegram update ignored"]
    assert [(r.chat_id, r.what) for r in ignored] == [(STRANGER, "/status"), (STRANGER, "/kill")]


async def test_an_unauthorised_button_press_is_not_answered(notifier, fake_api, standins):
    fake_api.press_button(STRANGER, "kill")
    await ask(fake_api, "/help")

    assert fake_api.sent("answerCallbackQuery") == []
    assert fake_api.sent("editMessageText") == []
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_with_only_admin_chats_set_other_chats_get_nothing(bus, standins, fake_api, clock):
    settings = settings_for(fake_api, allowed_chat_ids=[], admin_chat_ids=[ADMIN])
    async for _ in started(NotifierModule(bus, settings, clock)):
        fake_api.send_command(CHAT, "/status")
        reply = await ask(fake_api, "/help", chat_id=ADMIN)

    assert reply.startswith("<b>NeoPulse bot</b>")
    assert fake_api.sent(chat_id=CHAT) == []


DESK = -100777
SUPERGROUP = -1004242777


async def test_a_group_upgraded_to_a_supergroup_keeps_its_rights_under_the_new_id(bus, standins, fake_api, clock):
    """Alerts followed the group to its new id, but its members' commands (a /kill among them) were dropped as a
    stranger's, with not even a reply."""
    fake_api.migrated = {DESK: SUPERGROUP}  # Telegram says so on the first message to the old id
    async for _ in started(NotifierModule(bus, settings_for(fake_api, allowed_chat_ids=[DESK]), clock)):
        await bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_FEED, severity=ops_pb2.SEVERITY_WARNING, title="Feed down", text="x"))
        await fake_api.wait_sent(1, chat_id=SUPERGROUP)

        fake_api.send_command(SUPERGROUP, "/kill feed is down", user_id=77)
        replies = await fake_api.wait_sent(2, chat_id=SUPERGROUP)

    assert replies[-1]["text"].startswith("Engage the kill switch?")


async def test_telegrams_upgrade_message_in_the_new_supergroup_carries_the_rights_over(bus, standins, fake_api, clock):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, allowed_chat_ids=[DESK]), clock)):
        fake_api._queue({"message": {"message_id": 1, "date": int(time.time()), "migrate_from_chat_id": DESK,
                                     "chat": {"id": SUPERGROUP, "type": "supergroup", "title": "desk"}}})
        fake_api.send_command(SUPERGROUP, "/status", user_id=77)
        await fake_api.wait_sent(1, chat_id=SUPERGROUP)


async def test_an_anonymous_admins_prompt_answers_their_press(bus, standins, fake_api, clock):
    """An anonymous admin's command comes from GroupAnonymousBot, their press with their own id: the prompt waited
    for a press from GroupAnonymousBot, so it could never be confirmed."""
    settings = settings_for(fake_api, allowed_chat_ids=[DESK], admin_chat_ids=[DESK])
    async for _ in started(NotifierModule(bus, settings, clock)):
        fake_api._queue({"message": {
            "message_id": 5, "date": int(time.time()),
            "from": {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"},
            "sender_chat": {"id": DESK, "type": "supergroup", "title": "desk"},
            "chat": {"id": DESK, "type": "supergroup", "title": "desk"}, "text": "/squareoff SBIN-EQ",
            "entities": [{"type": "bot_command", "offset": 0, "length": len("/squareoff")}]}})
        await fake_api.wait_sent(1, chat_id=DESK)

        fake_api.press_button(DESK, button_data(fake_api, "sq", DESK), user_id=5596148289)
        await eventually(lambda: standins.calls(rpc.SQUARE_OFF))


async def test_a_bot_with_no_chat_to_talk_to_says_so_at_start(bus, standins, fake_api, clock, caplog):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, allowed_chat_ids=[], admin_chat_ids=[]), clock)):
        pass

    assert any("telegram bot has no chat to talk to" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)
