"""/modify: a working order's change shown (its terms before and after), sent to the OMS's ModifyOrder (which has
risk check it) only by the confirm button, once; admin chats only; bad arguments get the usage, not a prompt."""

from __future__ import annotations

import pytest

from services.notifier.module import NotifierModule
from shared import rpc
from shared.contracts import trading_pb2
from shared.errors import RiskRejected
from tests.notifier.conftest import ADMIN, order, settings_for, started
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import buttons, confirmed_unanswered, press, press_again

LIMIT, STOP_MARKET = trading_pb2.ORDER_TYPE_LIMIT, trading_pb2.ORDER_TYPE_STOP_MARKET
USAGE = "⚠️ give the order's id, as /orders shows it, and what to change: qty=N (the new total)"


@pytest.fixture
def working(standins) -> trading_pb2.OrderUpdate:
    """A resting limit buy, c-INFY-EQ: 10 at ₹1,500.00, none filled."""
    o = order(symbol="INFY-EQ", qty=10, filled=0, avg=0, status=trading_pb2.ORDER_STATUS_OPEN, tag="MANUAL",
              order_type=LIMIT, price=150_000)
    standins.orders.append(o)
    return o


async def test_modify_shows_the_terms_before_and_after_and_changes_the_order_on_the_confirm_button(
        notifier, fake_api, standins, working):
    reply = await ask(fake_api, "/modify c-INFY-EQ qty=20 price=1501.5")

    assert reply == ("Modify this order?\nBUY 10 <b>INFY-EQ</b> ₹1,500.00 · OPEN 0/10 [MANUAL]\n"
                     "qty 10 → 20, price ₹1,500.00 → ₹1,501.50")
    assert [text for text, _ in buttons(fake_api.sent()[-1])] == ["Modify the order", "Keep it"]
    assert standins.calls(rpc.MODIFY_ORDER) == []

    edited = await press(fake_api, "mod")

    (request,) = standins.calls(rpc.MODIFY_ORDER)
    assert (request.order_id, request.quantity, request.price_paise, request.trigger_price_paise) == (
        working.internal_id, 20, 150_150, 0)
    assert edited["text"] == "Modified: BUY 20 <b>INFY-EQ</b> ₹1,501.50 · OPEN 0/20 [MANUAL]"


async def test_a_trigger_alone_changes_a_stop_order_and_keeps_the_other_terms(notifier, fake_api, standins):
    standins.orders.append(order(symbol="TCS-EQ", qty=3, filled=0, status=trading_pb2.ORDER_STATUS_TRIGGER_PENDING,
                                 order_type=STOP_MARKET, trigger=400_000))
    assert (await ask(fake_api, "/modify c-TCS-EQ TRIGGER=4010")).endswith("\ntrigger ₹4,000.00 → ₹4,010.00")

    edited = await press(fake_api, "mod")

    (request,) = standins.calls(rpc.MODIFY_ORDER)
    assert (request.quantity, request.price_paise, request.trigger_price_paise) == (0, 0, 401_000)
    assert edited["text"] == "Modified: BUY 3 <b>TCS-EQ</b> MKT trigger ₹4,010.00 · TRIGGER_PENDING 0/3 [MOMENTUM_RSI]"


async def test_keep_it_changes_nothing_and_a_second_press_changes_nothing_more(notifier, fake_api, standins,
                                                                               working):
    await ask(fake_api, "/modify c-INFY-EQ qty=20")
    assert (await press(fake_api, "abort"))["text"] == "Not modified; nothing changed."

    await ask(fake_api, "/modify c-INFY-EQ qty=20")
    await press(fake_api, "mod")
    again = await press_again(fake_api, "mod")

    assert len(standins.calls(rpc.MODIFY_ORDER)) == 1
    assert again.startswith("Already answered: ")


@pytest.mark.parametrize("command", [
    "/modify", "/modify c-INFY-EQ", "/modify c-INFY-EQ 20", "/modify c-INFY-EQ qty=", "/modify c-INFY-EQ qty=0",
    "/modify c-INFY-EQ qty=1.5", "/modify c-INFY-EQ qty=²", "/modify c-INFY-EQ price=1500.555",
    "/modify c-INFY-EQ price=0", "/modify c-INFY-EQ price=-5", "/modify c-INFY-EQ price=nan",
    "/modify c-INFY-EQ qty=5 qty=6", "/modify c-INFY-EQ size=5", "/modify c-INFY-EQ qty=2 price=1 trigger=1 x=1",
    "/modify c-INFY-EQ qty=99999999999999999999", "/modify " + "x" * 129 + " qty=2",
    "/modify c-INFY-EQ price=1500." + "0" * 60])
async def test_bad_arguments_get_the_usage_and_no_prompt(notifier, fake_api, standins, working, command):
    reply = await ask(fake_api, command)

    assert reply.startswith(USAGE)
    assert "reply_markup" not in fake_api.sent()[-1] and standins.calls(rpc.GET_ORDER) == []


@pytest.mark.parametrize(("command", "said"), [
    ("/modify c-TCS-EQ price=4001", "price: a MARKET order has no limit price; cancel it and place a limit order"),
    ("/modify c-INFY-EQ trigger=1490", "trigger: a LIMIT order has no trigger price"),
])
async def test_a_change_the_order_cannot_take_is_said_at_once(notifier, fake_api, standins, working, command,
                                                              said):
    standins.orders.append(order(symbol="TCS-EQ", filled=0, status=trading_pb2.ORDER_STATUS_OPEN,
                                 order_type=trading_pb2.ORDER_TYPE_MARKET))  # waiting for a price to fill at

    reply = await ask(fake_api, command)

    assert reply.startswith(f"⚠️ {said}") and "reply_markup" not in fake_api.sent()[-1]


async def test_a_quantity_not_above_the_units_filled_is_said_at_once(notifier, fake_api, standins, working):
    working.status, working.filled_quantity = trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, 4

    reply = await ask(fake_api, "/modify c-INFY-EQ qty=4")

    assert reply.startswith("⚠️ qty: 4 must stay above the 4 units already filled")


@pytest.mark.parametrize("command", ["/modify c-SBIN-EQ qty=20", "/modify c-INFY-EQ qty=10 price=1500"])
async def test_an_ended_order_or_one_with_those_terms_already_has_nothing_to_change(notifier, fake_api, standins,
                                                                                      working, command):
    reply = await ask(fake_api, command)

    assert reply.startswith("Nothing to change: ") and "reply_markup" not in fake_api.sent()[-1]


async def test_an_unknown_order_is_said_and_nothing_asked(notifier, fake_api, standins, working):
    reply = await ask(fake_api, "/modify no-such qty=2")

    assert reply.startswith("⚠️ no order 'no-such'") and "reply_markup" not in fake_api.sent()[-1]


async def test_risk_refusing_the_change_is_the_outcome_told(notifier, fake_api, standins, working, bus):
    async def refuse(request):
        raise RiskRejected("MAX_ORDER_QUANTITY", "quantity 600 is above max_order_quantity 500")

    bus._handlers[rpc.MODIFY_ORDER] = refuse
    await ask(fake_api, "/modify c-INFY-EQ qty=600")

    edited = await press(fake_api, "mod")

    assert edited["text"] == "⚠️ quantity 600 is above max_order_quantity 500"


async def test_a_change_not_answered_in_time_says_where_to_check_not_to_try_again(bus, standins, fake_api, clock,
                                                                                  working):
    edited = await confirmed_unanswered(bus, fake_api, clock, rpc.MODIFY_ORDER, "/modify c-INFY-EQ qty=20", "mod")

    assert edited["text"] == ("⚠️ OrderService/ModifyOrder did not answer within 0.05 s; it may still be in progress, "
                              "or done: check /orders before asking again")


async def test_with_admins_set_a_non_admin_chat_cannot_modify(bus, standins, fake_api, clock, working):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, admin_chat_ids=[ADMIN]), clock)):
        reply = await ask(fake_api, "/modify c-INFY-EQ qty=20")

    assert reply == "Only admin chats may use /modify." and standins.calls(rpc.GET_ORDER) == []
