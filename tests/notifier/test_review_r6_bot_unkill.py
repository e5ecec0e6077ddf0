"""/unkill asks only while trading is HALTED, shows why, and its button releases that halt only: a halt engaged again
after the prompt was shown (another chat, the CLI, a gRPC client) is not released by the older prompt."""

from __future__ import annotations

from shared import rpc
from shared.contracts import risk_pb2
from tests.notifier.conftest import CHAT
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import press

HALTED = risk_pb2.TRADING_STATE_HALTED


async def test_unkill_while_trading_is_active_says_so_and_offers_no_button(notifier, fake_api, standins):
    reply = await ask(fake_api, "/unkill")

    assert (reply, fake_api.sent(chat_id=CHAT)[-1].get("reply_markup")) == (
        "The kill switch is not engaged: trading is ACTIVE. Nothing to release.", None)


async def test_the_prompt_shows_the_halt_it_releases(notifier, fake_api, standins):
    standins.state, standins.state_reason = HALTED, "kill switch engaged: feed looks wrong"

    prompt = await ask(fake_api, "/unkill")

    assert prompt == ("Trading is HALTED (kill switch engaged: feed looks wrong).\n"
                      "Release the kill switch? Strategies may place new orders again.")


async def test_a_halt_engaged_again_after_the_prompt_is_not_released_by_it(notifier, fake_api, standins):
    standins.state, standins.state_reason = HALTED, "kill switch engaged: feed looks wrong"
    await ask(fake_api, "/unkill")
    standins.state_reason = "kill switch engaged: fills look wrong"  # another admin's Halt, meanwhile

    edited = await press(fake_api, "unkill")

    assert (edited["text"], standins.calls(rpc.SET_KILL_SWITCH)) == (
        "Not released: the halt changed since you asked, trading is HALTED (kill switch engaged: fills look wrong) "
        "now; nothing changed. Ask again if it still stands.", [])


async def test_a_prompt_asked_while_active_cannot_release_a_later_halt(notifier, fake_api, standins):
    """The reviewer's case: asked while ACTIVE (no button now), then halted; the press finds no prompt."""
    await ask(fake_api, "/unkill")
    standins.state, standins.state_reason = HALTED, "kill switch engaged: fills look wrong"

    edited = await press(fake_api, "unkill")

    assert "expired" in edited["text"] and standins.calls(rpc.SET_KILL_SWITCH) == []
