"""Dangerous commands: /kill and /squareoff ask first, act on the confirm button, and obey admin chats."""

from __future__ import annotations

from services.notifier.module import NotifierModule
from shared import rpc
from shared.contracts import risk_pb2
from tests.notifier.conftest import ADMIN, CHAT, settings_for, started
from tests.notifier.test_commands import ask


def buttons(message: dict) -> list[tuple[str, str]]:
    rows = message["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


async def press(fake_api, data: str, chat_id: int = CHAT) -> dict:
    before = len(fake_api.sent("editMessageText"))
    query_id = fake_api.press_button(chat_id, data)
    edited = (await fake_api.wait_sent(before + 1, "editMessageText"))[-1]
    assert query_id in [p["callback_query_id"] for p in fake_api.sent("answerCallbackQuery")]
    return edited


async def test_kill_asks_for_confirmation_before_touching_the_kill_switch(notifier, fake_api, standins):
    fake_api.send_command(CHAT, "/kill feed looks wrong")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Engage the kill switch? No new orders until /unkill."
    assert [data for _, data in buttons(message)] == ["kill", "killc", "abort"]
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_confirm_button_engages_the_kill_switch_with_the_given_reason(notifier, fake_api, standins):
    await ask(fake_api, "/kill feed looks wrong")

    edited = await press(fake_api, "kill")

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."
    request = standins.calls(rpc.SET_KILL_SWITCH)[-1]
    assert (request.engaged, request.reason, request.cancel_open_orders) == (True, "feed looks wrong", False)
    assert standins.state == risk_pb2.TRADING_STATE_HALTED


async def test_halt_and_cancel_button_also_cancels_open_orders(notifier, fake_api, standins):
    await ask(fake_api, "/kill")

    edited = await press(fake_api, "killc")

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED. Open orders are being cancelled."
    assert standins.calls(rpc.SET_KILL_SWITCH)[-1].cancel_open_orders is True


async def test_keep_trading_button_changes_nothing(notifier, fake_api, standins):
    await ask(fake_api, "/kill")

    edited = await press(fake_api, "abort")

    assert edited["text"] == "Cancelled; nothing changed."
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_squareoff_of_a_symbol_runs_after_confirmation(notifier, fake_api, standins):
    await ask(fake_api, "/squareoff sbin-eq")

    edited = await press(fake_api, "sq:SBIN-EQ")

    assert standins.calls(rpc.SQUARE_OFF)[-1].symbol == "SBIN-EQ"
    assert edited["text"] == ("Square-off sent 1 order(s):\n"
                              "SELL 10 <b>SBIN-EQ</b> MKT · OPEN 0/10 [SQUAREOFF]")


async def test_squareoff_all_asks_about_all_positions(notifier, fake_api, standins):
    fake_api.send_command(CHAT, "/squareoff all")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Square off ALL positions with market orders?"
    assert buttons(message)[0] == ("Square off ALL", "sq:*")

    await press(fake_api, "sq:*")
    assert standins.calls(rpc.SQUARE_OFF)[-1].symbol == ""


async def test_with_admins_set_a_non_admin_chat_cannot_kill(bus, standins, fake_api, clock):
    settings = settings_for(fake_api, admin_chat_ids=[ADMIN])
    async for _ in started(NotifierModule(bus, settings, clock)):
        reply = await ask(fake_api, "/kill")
        edited = await press(fake_api, "kill")

    assert reply == "Only admin chats may use /kill."
    assert edited["text"] == "Only admin chats may confirm this."
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_an_admin_chat_may_kill_and_still_read_status(bus, standins, fake_api, clock):
    settings = settings_for(fake_api, admin_chat_ids=[ADMIN])
    async for _ in started(NotifierModule(bus, settings, clock)):
        await ask(fake_api, "/kill", chat_id=ADMIN)
        edited = await press(fake_api, "kill", chat_id=ADMIN)
        status = await ask(fake_api, "/status", chat_id=CHAT)

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."
    assert "Trading: HALTED" in status


async def test_the_confirmation_is_published_for_audit(notifier, fake_api, commands, bus):
    await ask(fake_api, "/kill")
    await press(fake_api, "kill")
    await bus.drain()

    assert [(c.name, list(c.args)) for c in commands] == [("kill", []), ("confirm", ["kill"])]
