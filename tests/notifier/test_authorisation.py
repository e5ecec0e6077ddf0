"""The one gate: chats not allowed get nothing, are logged, and trigger no bus request."""

from __future__ import annotations

import logging

from services.notifier.module import NotifierModule
from shared import rpc
from tests.notifier.conftest import ADMIN, CHAT, STRANGER, settings_for, started
from tests.notifier.test_commands import ask


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
