"""A confirm button pressed again, while its action is being done or after: never "nothing changed. Ask again." (a
trader who asks again places a second order), never a second action, and the prompt keeps the first press's
outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared import rpc
from shared.bus import Bus
from tests.notifier.conftest import CHAT
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import button_data, press


@pytest.fixture
async def slow_broker(notifier, bus: Bus) -> AsyncIterator[asyncio.Event]:
    """PlaceOrder answers only once the event is set (risk, the ledger and Kotak can take seconds)."""
    gate = asyncio.Event()
    place = bus._handlers[rpc.PLACE_ORDER]

    async def slow_place(request):
        await gate.wait()
        return await place(request)

    bus._handlers[rpc.PLACE_ORDER] = slow_place
    yield gate
    gate.set()


async def test_a_second_tap_while_the_order_is_being_placed_is_told_so_and_places_nothing_more(
        fake_api, standins, slow_broker):
    prompt = await ask(fake_api, "/buy SBIN-EQ 2 812.50")
    data = button_data(fake_api, "place", CHAT)
    fake_api.press_button(CHAT, data)
    await asyncio.sleep(0.2)  # the first tap's order is being placed

    fake_api.press_button(CHAT, data)
    told = (await fake_api.wait_sent(2, chat_id=CHAT))[-1]["text"]
    slow_broker.set()
    await fake_api.wait_sent(1, "editMessageText", within=5)

    assert told == "Already confirmed: placing the order. The outcome will show in the prompt." and prompt
    assert len(standins.calls(rpc.PLACE_ORDER)) == 1


async def test_a_slow_order_shows_in_its_prompt_that_it_is_being_placed_and_then_its_outcome(
        fake_api, standins, slow_broker):
    await ask(fake_api, "/buy SBIN-EQ 2 812.50")
    fake_api.press_button(CHAT, button_data(fake_api, "place", CHAT))
    await fake_api.wait_sent(1, "editMessageText", within=5)  # still being placed

    slow_broker.set()
    edits = await fake_api.wait_sent(2, "editMessageText", within=5)

    assert [e["text"].split(" · ")[0] for e in edits] == [
        "⏳ Confirmed: placing the order… The outcome will show here.", "Placed: BUY 2 <b>SBIN-EQ</b> ₹812.50"]
    assert [e.get("reply_markup") for e in edits] == [None, None]  # no button left to tap again


async def test_a_tap_after_the_outcome_is_told_the_outcome_and_leaves_the_prompt_with_it(notifier, fake_api,
                                                                                        standins):
    await ask(fake_api, "/squareoff sbin-eq")
    data = button_data(fake_api, "sq", CHAT)
    await press(fake_api, "sq")

    fake_api.press_button(CHAT, data)  # a client that still showed the buttons, or a retried tap
    told = (await fake_api.wait_sent(2, chat_id=CHAT))[-1]["text"]
    await asyncio.sleep(0.2)  # an edit of the prompt would have arrived by now

    assert told == "Already answered: Square-off sent 1 order(s):"
    assert len(fake_api.sent("editMessageText")) == 1 and len(standins.calls(rpc.SQUARE_OFF)) == 1


async def test_the_other_button_of_an_answered_prompt_is_told_the_answer_and_does_nothing(notifier, fake_api,
                                                                                          standins):
    await ask(fake_api, "/kill")
    kill = button_data(fake_api, "kill", CHAT)
    await press(fake_api, "abort")

    fake_api.press_button(CHAT, kill)
    told = (await fake_api.wait_sent(2, chat_id=CHAT))[-1]["text"]

    assert told == "Already answered: Cancelled; nothing changed." and standins.calls(rpc.SET_KILL_SWITCH) == []
