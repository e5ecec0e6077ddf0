"""Dangerous commands: /kill, /unkill, /squareoff and /cancel ask first, act on the confirm button, and obey admin
chats."""

from __future__ import annotations

import asyncio
import re

from services.notifier.module import NotifierModule
from shared import rpc
from shared.contracts import risk_pb2, trading_pb2
from shared.ids import MAX_TEXT_CHARS
from tests.helpers import eventually
from tests.notifier.conftest import ADMIN, CHAT, order, settings_for, started
from tests.notifier.test_commands import ask


def buttons(message: dict) -> list[tuple[str, str]]:
    rows = message["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


def button_data(fake_api, action: str, chat_id: int) -> str:
    """The callback_data of the `action` button of the latest prompt sent to the chat (action:nonce)."""
    for message in reversed(fake_api.sent(chat_id=chat_id)):
        for _, data in buttons(message) if message.get("reply_markup") else []:
            if data.split(":")[0] == action:
                return data
    return f"{action}:none"  # no prompt in this chat


async def press(fake_api, action: str, chat_id: int = CHAT) -> dict:
    before = len(fake_api.sent("editMessageText"))
    query_id = fake_api.press_button(chat_id, button_data(fake_api, action, chat_id))
    edited = (await fake_api.wait_sent(before + 1, "editMessageText"))[-1]
    await eventually(lambda: query_id in [p["callback_query_id"] for p in fake_api.sent("answerCallbackQuery")])
    return edited


async def press_again(fake_api, action: str, chat_id: int = CHAT) -> str:
    """Press a button of a prompt an earlier press answered: its reply is a message of its own (the prompt keeps the
    first press's outcome, never edited again); returns its text."""
    edits, before = len(fake_api.sent("editMessageText")), len(fake_api.sent(chat_id=chat_id))
    query_id = fake_api.press_button(chat_id, button_data(fake_api, action, chat_id))
    reply = (await fake_api.wait_sent(before + 1, chat_id=chat_id))[-1]["text"]
    await eventually(lambda: query_id in [p["callback_query_id"] for p in fake_api.sent("answerCallbackQuery")])
    assert len(fake_api.sent("editMessageText")) == edits
    return reply


async def test_kill_asks_for_confirmation_before_touching_the_kill_switch(notifier, fake_api, standins):
    fake_api.send_command(CHAT, "/kill feed looks wrong")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Engage the kill switch? No new orders until it is released."
    actions, nonces = zip(*(data.split(":") for _, data in buttons(message)), strict=True)
    assert actions == ("kill", "killc", "abort") and len(set(nonces)) == 1
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


async def test_a_huge_kill_reason_is_cut_before_risk_keeps_it(notifier, fake_api, standins):
    await ask(fake_api, "/kill " + "Ω" * 4000)

    await press(fake_api, "kill")

    assert standins.calls(rpc.SET_KILL_SWITCH)[-1].reason == "Ω" * 199 + "…"


async def confirmed_unanswered(bus, fake_api, clock, method: str, command: str, action: str) -> dict:
    """`command` asked and its `action` button pressed while `method`'s module never answers (0.05 s deadline): the
    prompt as edited with the outcome."""
    async def slow(request):
        await asyncio.Event().wait()  # still at it (risk cancelling open orders, say)

    bus._handlers[method] = slow
    async for _ in started(NotifierModule(bus, settings_for(fake_api, request_timeout_seconds=0.05), clock)):
        await ask(fake_api, command)
        edited = await press(fake_api, action)
    return edited


async def test_a_halt_that_risk_does_not_answer_in_time_is_reported_as_maybe_in_progress(bus, standins, fake_api,
                                                                                          clock):
    edited = await confirmed_unanswered(bus, fake_api, clock, rpc.SET_KILL_SWITCH, "/kill", "killc")

    assert edited["text"] == ("⚠️ RiskService/SetKillSwitch did not answer within 0.05 s; it may still be in "
                              "progress, or done: check /status before asking again")


async def test_a_square_off_that_does_not_answer_in_time_says_where_to_check(bus, standins, fake_api, clock):
    edited = await confirmed_unanswered(bus, fake_api, clock, rpc.SQUARE_OFF, "/squareoff all", "sq")

    assert "may still be in progress, or done: check /positions and /orders" in edited["text"]
    assert "try again" not in edited["text"]


async def test_keep_trading_button_changes_nothing(notifier, fake_api, standins):
    await ask(fake_api, "/kill")

    edited = await press(fake_api, "abort")

    assert edited["text"] == "Cancelled; nothing changed."
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_unkill_asks_for_confirmation_before_releasing_the_kill_switch(notifier, fake_api, standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED

    fake_api.send_command(CHAT, "/unkill")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Release the kill switch? Strategies may place new orders again."
    assert [data.split(":")[0] for _, data in buttons(message)] == ["unkill", "abort"]
    assert standins.calls(rpc.SET_KILL_SWITCH) == [] and standins.state == risk_pb2.TRADING_STATE_HALTED


async def test_release_button_re_arms_trading_with_the_given_reason(notifier, fake_api, standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED
    await ask(fake_api, "/unkill feed is back")

    edited = await press(fake_api, "unkill")

    assert edited["text"] == "Kill switch released. Trading is ACTIVE."
    request = standins.calls(rpc.SET_KILL_SWITCH)[-1]
    assert (request.engaged, request.reason) == (False, "feed is back")


async def test_stay_halted_button_leaves_the_kill_switch_engaged(notifier, fake_api, standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED
    await ask(fake_api, "/unkill")

    edited = await press(fake_api, "abort")

    assert edited["text"] == "Cancelled; nothing changed."
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


async def test_no_prompt_or_help_offers_unkill_as_a_one_tap_command(notifier, fake_api):
    kill_prompt = await ask(fake_api, "/kill")
    help_text = await ask(fake_api, "/help")

    # Telegram turns a bare /command into a link that sends it; inside <code> it is only text.
    tappable = [re.sub(r"<code>.*?</code>", "", text) for text in (kill_prompt, help_text)]
    assert [("/unkill" in text) for text in tappable] == [False, False]
    assert "<code>/unkill</code>" in help_text


async def test_squareoff_of_a_symbol_runs_after_confirmation(notifier, fake_api, standins):
    await ask(fake_api, "/squareoff sbin-eq")

    edited = await press(fake_api, "sq")

    assert standins.calls(rpc.SQUARE_OFF)[-1].symbol == "SBIN-EQ"
    assert edited["text"] == ("Square-off sent 1 order(s):\n"
                              "SELL 10 <b>SBIN-EQ</b> MKT · OPEN 0/10 [SQUAREOFF]")


async def test_squareoff_all_asks_about_all_positions(notifier, fake_api, standins):
    fake_api.send_command(CHAT, "/squareoff all")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Square off ALL positions with market orders?"
    assert buttons(message)[0][0] == "Square off ALL"

    await press(fake_api, "sq")
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

    assert [(c.name, [a.split(":")[0] for a in c.args]) for c in commands] == [("kill", []), ("confirm", ["kill"])]


async def test_a_confirm_button_acts_once_however_often_it_is_pressed(notifier, fake_api, standins):
    await ask(fake_api, "/squareoff sbin-eq")
    data = button_data(fake_api, "sq", CHAT)

    await press(fake_api, "sq")
    again = await press_again(fake_api, "sq")

    assert len(standins.calls(rpc.SQUARE_OFF)) == 1
    assert again.startswith("Already answered: ") and data


async def test_the_other_buttons_of_an_answered_prompt_do_nothing(notifier, fake_api, standins):
    await ask(fake_api, "/kill")
    await press(fake_api, "abort")

    again = await press_again(fake_api, "kill")

    assert standins.calls(rpc.SET_KILL_SWITCH) == [] and again.startswith("Already answered: ")


async def test_an_old_prompt_does_nothing(notifier, fake_api, standins):
    notifier.bot.confirm_ttl_s = 0.05
    await ask(fake_api, "/kill")
    await asyncio.sleep(0.1)

    edited = await press(fake_api, "kill")

    assert standins.calls(rpc.SET_KILL_SWITCH) == []
    assert "expired" in edited["text"]


async def test_a_prompt_is_answered_only_in_the_chat_that_asked(bus, standins, fake_api, clock):
    settings = settings_for(fake_api, admin_chat_ids=[ADMIN, 2002], allowed_chat_ids=[ADMIN, 2002])
    async for _ in started(NotifierModule(bus, settings, clock)):
        await ask(fake_api, "/squareoff all", chat_id=ADMIN)
        fake_api.press_button(2002, button_data(fake_api, "sq", ADMIN))
        await fake_api.wait_sent(1, "editMessageText")

    assert standins.calls(rpc.SQUARE_OFF) == []


async def test_squareoff_of_the_wildcard_is_refused(notifier, fake_api, standins):
    reply = await ask(fake_api, "/squareoff *")

    assert reply.startswith("⚠️ symbol:") and standins.calls(rpc.SQUARE_OFF) == []


# -- Telegram's weather around a press ------------------------------------------------------------------------
async def test_a_halt_is_done_and_told_when_telegram_refuses_to_acknowledge_the_press(notifier, fake_api, standins):
    await ask(fake_api, "/kill")
    fake_api.fail["answerCallbackQuery"] = [400]  # "query is too old and response timeout expired"

    edited = await press(fake_api, "kill")

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."
    assert standins.state == risk_pb2.TRADING_STATE_HALTED


async def test_a_halt_does_not_wait_for_telegram_to_take_the_acknowledgement(notifier, fake_api, standins):
    await ask(fake_api, "/kill")
    fake_api.hold["answerCallbackQuery"] = answered = asyncio.Event()

    fake_api.press_button(CHAT, button_data(fake_api, "kill", CHAT))
    edited = (await fake_api.wait_sent(1, "editMessageText"))[-1]
    await fake_api.wait_sent(1, "answerCallbackQuery")  # asked, and still unanswered
    answered.set()

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."


async def test_the_outcome_comes_as_a_new_message_when_the_prompt_cannot_be_edited(notifier, fake_api, standins):
    await ask(fake_api, "/kill")
    fake_api.fail["editMessageText"] = [400]  # "message to edit not found": the trader deleted the prompt

    fake_api.press_button(CHAT, button_data(fake_api, "kill", CHAT))
    sent = await fake_api.wait_sent(2, chat_id=CHAT)

    assert sent[-1]["text"] == "🛑 Kill switch engaged. Trading is HALTED."


async def test_a_halt_press_does_not_wait_behind_a_reply_sitting_out_a_429(notifier, fake_api, standins):
    await ask(fake_api, "/kill")
    fake_api.rate_limit_next = [3]
    fake_api.send_command(CHAT, "/status")
    await fake_api.wait_sent(2, chat_id=CHAT)  # the /status reply got its 429 and waits 3 s

    fake_api.press_button(CHAT, button_data(fake_api, "kill", CHAT))
    edited = (await fake_api.wait_sent(1, "editMessageText", within=2))[-1]

    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."
    assert len(fake_api.sent(chat_id=CHAT)) == 2  # the /status reply is still waiting


async def test_a_kill_asks_at_once_while_an_earlier_command_waits_out_a_429(notifier, fake_api, standins):
    fake_api.rate_limit_next = [3]
    fake_api.send_command(CHAT, "/status")
    await fake_api.wait_sent(1, chat_id=CHAT)  # the /status reply got its 429 and waits 3 s, holding the turn

    fake_api.send_command(CHAT, "/kill@neopulse_test_bot feed looks wrong")
    sent = await fake_api.wait_sent(2, chat_id=CHAT, within=1.5)

    assert sent[-1]["text"] == "Engage the kill switch? No new orders until it is released."
    edited = await press(fake_api, "kill")
    assert edited["text"] == "🛑 Kill switch engaged. Trading is HALTED."
    assert standins.calls(rpc.SET_KILL_SWITCH)[-1].reason == "feed looks wrong"


async def test_commands_beyond_the_waiting_cap_are_refused_at_once_and_say_so(notifier, fake_api, standins):
    """A flood of commands behind a slow one must not take every slot a Halt press needs: the waiting are capped."""
    from services.notifier.telegram_bot import BUSY, MAX_WAITING_COMMANDS

    fake_api.rate_limit_next = [4]
    fake_api.send_command(CHAT, "/status")
    await fake_api.wait_sent(1, chat_id=CHAT)  # its reply waits 4 s, holding the turn
    for _ in range(MAX_WAITING_COMMANDS + 2):  # /status holds one of the places: three too many
        fake_api.send_command(CHAT, "/help")

    await eventually(lambda: [p["text"] for p in fake_api.sent(chat_id=CHAT)].count(BUSY) == 3, within=2)
    await asyncio.sleep(0.2)
    fake_api.press_button(CHAT, "kill:none")  # a press still acts at once (no prompt: it says so)
    await fake_api.wait_sent(1, "answerCallbackQuery", within=1)
    helps = await fake_api.wait_sent(1 + 3 + MAX_WAITING_COMMANDS - 1 + 1, chat_id=CHAT, within=10)
    assert [p["text"] for p in helps].count(BUSY) == 3


async def test_commands_of_a_chat_act_and_answer_in_the_order_sent_while_a_reply_waits_out_a_429(notifier, fake_api,
                                                                                               standins):
    fake_api.rate_limit_next = [1]

    fake_api.send_command(CHAT, "/pause MOMENTUM_RSI")
    fake_api.send_command(CHAT, "/resume MOMENTUM_RSI")
    sent = await fake_api.wait_sent(3, chat_id=CHAT)  # the 429, then both replies

    assert [m["text"] for m in sent[1:]] == ["<b>MOMENTUM_RSI</b> is paused.", "<b>MOMENTUM_RSI</b> is running."]
    assert [name for name, _ in standins.requests] == [rpc.PAUSE_STRATEGY, rpc.RESUME_STRATEGY]
    await eventually(lambda: standins.paused == set())


async def test_cancel_shows_the_order_and_cancels_it_on_the_confirm_button(notifier, fake_api, standins):
    standins.orders = [order(status=trading_pb2.ORDER_STATUS_OPEN, filled=0, avg=0)]
    fake_api.send_command(CHAT, "/cancel c-SBIN-EQ")
    message = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]

    assert message["text"] == "Cancel this order?\nBUY 10 <b>SBIN-EQ</b> MKT · OPEN 0/10 [MOMENTUM_RSI]"
    assert [text for text, _ in buttons(message)] == ["Cancel the order", "Keep it"]
    assert standins.calls(rpc.CANCEL_ORDER) == []

    edited = await press(fake_api, "cx")

    assert edited["text"] == "Cancel sent: BUY 10 <b>SBIN-EQ</b> MKT · CANCELLED 0/10 [MOMENTUM_RSI]"
    assert standins.calls(rpc.CANCEL_ORDER)[-1].order_id == "id-SBIN-EQ-" + str(standins.orders[0].ts_ns)


async def test_keeping_the_order_cancels_nothing(notifier, fake_api, standins):
    standins.orders = [order(status=trading_pb2.ORDER_STATUS_OPEN, filled=0, avg=0)]
    await ask(fake_api, "/cancel c-SBIN-EQ")

    edited = await press(fake_api, "abort")

    assert edited["text"] == "Order kept; nothing changed."
    assert standins.calls(rpc.CANCEL_ORDER) == []


async def test_cancel_of_an_ended_or_unknown_order_says_so_without_asking(notifier, fake_api, standins):
    assert await ask(fake_api, "/cancel c-SBIN-EQ") == (
        "Nothing to cancel: BUY 10 <b>SBIN-EQ</b> MKT · TRADED 10/10 [MOMENTUM_RSI]")
    assert await ask(fake_api, "/cancel nope") == (
        "⚠️ no order 'nope'; list orders to find its internal or client id")
    assert (await ask(fake_api, "/cancel")).startswith("⚠️ order: give one order's id, as /orders shows it")
    assert standins.calls(rpc.CANCEL_ORDER) == []


async def test_with_admins_set_a_non_admin_chat_cannot_cancel(bus, standins, fake_api, clock):
    standins.orders = [order(status=trading_pb2.ORDER_STATUS_OPEN, filled=0, avg=0)]
    settings = settings_for(fake_api, allowed_chat_ids=[CHAT, ADMIN], admin_chat_ids=[ADMIN])
    async for _ in started(NotifierModule(bus, settings, clock)):
        assert await ask(fake_api, "/cancel c-SBIN-EQ") == "Only admin chats may use /cancel."

    assert standins.calls(rpc.GET_ORDER) == standins.calls(rpc.CANCEL_ORDER) == []


async def test_cancel_takes_any_id_risk_accepts_and_refuses_only_a_longer_one(notifier, fake_api, standins):
    """/cancel refused ids over 64 characters, though risk accepts client ids up to 128: such an order could not
    be cancelled from Telegram."""
    long_id = "c" * MAX_TEXT_CHARS
    assert await ask(fake_api, f"/cancel {long_id}") == (
        f"⚠️ no order '{long_id}'; list orders to find its internal or client id")
    assert (await ask(fake_api, f"/cancel {long_id}x")).startswith("⚠️ order: give one order's id")
    assert [r.order_id for r in standins.calls(rpc.GET_ORDER)] == [long_id]


# -- a group chat: who asked, who pressed -------------------------------------------------------------------------
DESK = -100777  # a supergroup allowed (and admin): any member may type a command


async def test_in_a_group_only_the_member_who_asked_answers_a_prompt_and_a_halt_anyone(bus, standins, fake_api,
                                                                                        clock, commands):
    settings = settings_for(fake_api, allowed_chat_ids=[DESK], admin_chat_ids=[DESK])
    async for _ in started(NotifierModule(bus, settings, clock)):
        fake_api.send_command(DESK, "/buy SBIN-EQ 5 mkt", user_id=111)
        await fake_api.wait_sent(1, chat_id=DESK)
        fake_api.press_button(DESK, button_data(fake_api, "place", DESK), user_id=222)  # another member
        said = await fake_api.wait_sent(2, chat_id=DESK)
        assert said[-1]["text"] == "Only the one who asked can answer this; nothing changed."
        assert standins.calls(rpc.PLACE_ORDER) == []

        fake_api.press_button(DESK, button_data(fake_api, "place", DESK), user_id=111)  # the prompt still stands
        await fake_api.wait_sent(1, "editMessageText")
        assert [c.order.quantity for c in standins.calls(rpc.PLACE_ORDER)] == [5]

        fake_api.send_command(DESK, "/kill", user_id=111)
        await fake_api.wait_sent(3, chat_id=DESK)
        fake_api.press_button(DESK, button_data(fake_api, "kill", DESK), user_id=222)  # the safe way: anyone
        await fake_api.wait_sent(2, "editMessageText")
        assert standins.state == risk_pb2.TRADING_STATE_HALTED

    await eventually(lambda: len(commands) >= 5)
    assert [(c.name, c.origin) for c in commands] == [
        ("buy", f"telegram:{DESK} user 111"), ("confirm", f"telegram:{DESK} user 222"),
        ("confirm", f"telegram:{DESK} user 111"), ("kill", f"telegram:{DESK} user 111"),
        ("confirm", f"telegram:{DESK} user 222")]


async def test_a_command_that_reaches_the_bot_minutes_after_it_was_sent_is_not_acted_on(notifier, fake_api, standins):
    """Telegram keeps what was sent while the bot could not reach it, and hands it over when it can."""
    fake_api.send_command(CHAT, "/resume momentum_rsi", age_s=3 * 3600)
    reply = (await fake_api.wait_sent(1, chat_id=CHAT))[-1]["text"]

    assert reply == ("This /resume was sent 180 min ago and reached NeoPulse only now; nothing done. "
                     "Send it again if it still stands.")
    assert standins.calls(rpc.RESUME_STRATEGY) == []
    await ask(fake_api, "/resume momentum_rsi")  # sent now: it acts
    assert [c.name for c in standins.calls(rpc.RESUME_STRATEGY)] == ["momentum_rsi"]
