"""/buy and /sell: a manual order shown with its price and product, placed (through the OMS's PlaceOrder, so risk
checks it) only by the confirm button, once; admin chats only; bad arguments get the usage, not an order."""

from __future__ import annotations

import pytest

from services.notifier.module import NotifierModule
from shared import rpc
from shared.contracts import strategy_pb2, trading_pb2
from shared.errors import RiskRejected
from tests.notifier.conftest import ADMIN, settings_for, started
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import buttons, confirmed_unanswered, press, press_again


async def test_buy_shows_the_order_and_places_it_on_the_confirm_button(notifier, fake_api, standins):
    reply = await ask(fake_api, "/buy sbin-eq 2 812.50")
    assert reply == "Buy 2 <b>SBIN-EQ</b> at ₹812.50, MIS?"
    assert standins.calls(rpc.PLACE_ORDER) == []

    edited = await press(fake_api, "place")

    (request,) = standins.calls(rpc.PLACE_ORDER)
    o = request.order
    assert (o.symbol, o.token, o.exchange_segment, o.side, o.quantity, o.order_type, o.price_paise, o.product,
            o.validity, o.strategy_tag) == ("SBIN-EQ", 3045, "nse_cm", trading_pb2.SIDE_BUY, 2,
                                            trading_pb2.ORDER_TYPE_LIMIT, 81_250, trading_pb2.PRODUCT_MIS,
                                            trading_pb2.VALIDITY_DAY, "MANUAL")
    assert edited["text"] == (f"Placed: BUY 2 <b>SBIN-EQ</b> ₹812.50 · OPEN 0/2 [MANUAL] · "
                              f"<code>{o.client_order_id}</code>")
    assert o.client_order_id.startswith("manual-")


async def test_sell_at_market_as_delivery(notifier, fake_api, standins):
    assert await ask(fake_api, "/sell TCS-EQ 5 mkt cnc") == "Sell 5 <b>TCS-EQ</b> at market, CNC?"

    await press(fake_api, "place")

    (request,) = standins.calls(rpc.PLACE_ORDER)
    assert (request.order.side, request.order.order_type, request.order.price_paise, request.order.product) == (
        trading_pb2.SIDE_SELL, trading_pb2.ORDER_TYPE_MARKET, 0, trading_pb2.PRODUCT_CNC)


async def test_a_trigger_makes_a_stop_order_at_market_or_with_its_limit(notifier, fake_api, standins):
    """A trader's own stop under a position: SL-M at mkt, SL with a limit price; product and trigger in any order."""
    assert await ask(fake_api, "/sell SBIN-EQ 10 mkt trigger=798.50") == (
        "Sell 10 <b>SBIN-EQ</b> at market once it trades at ₹798.50 (a stop order), MIS?")
    await press(fake_api, "place")
    assert await ask(fake_api, "/sell SBIN-EQ 10 798 nrml TRIGGER=798.50") == (
        "Sell 10 <b>SBIN-EQ</b> at ₹798.00 once it trades at ₹798.50 (a stop order), NRML?")
    await press(fake_api, "place")

    market, limit = (r.order for r in standins.calls(rpc.PLACE_ORDER))
    assert (market.order_type, market.price_paise, market.trigger_price_paise, market.product) == (
        trading_pb2.ORDER_TYPE_STOP_MARKET, 0, 798_50, trading_pb2.PRODUCT_MIS)
    assert (limit.order_type, limit.price_paise, limit.trigger_price_paise, limit.product) == (
        trading_pb2.ORDER_TYPE_STOP_LIMIT, 798_00, 798_50, trading_pb2.PRODUCT_NRML)


async def test_a_manual_order_closing_what_a_strategy_holds_says_a_square_off_is_the_way(notifier, fake_api, standins):
    """Closed by hand, a strategy's long stays its long to it: its next exit would sell again, into a short."""
    standins.strategy_positions = [strategy_pb2.StrategyPosition(token=3045, symbol="SBIN-EQ", net_quantity=10)]

    warned = await ask(fake_api, "/sell SBIN-EQ 10 mkt")
    adding = await ask(fake_api, "/buy SBIN-EQ 5 mkt")
    other = await ask(fake_api, "/sell TCS-EQ 1 mkt")

    assert warned == ("Sell 10 <b>SBIN-EQ</b> at market, MIS?\n⚠️ MOMENTUM_RSI holds +10: this order is not theirs, "
                      "they would still hold it and exit it again. To close a strategy's position, square it off "
                      "instead: they are told of a square-off.")
    assert (adding, other) == ("Buy 5 <b>SBIN-EQ</b> at market, MIS?", "Sell 1 <b>TCS-EQ</b> at market, MIS?")
    assert "reply_markup" in fake_api.sent()[-3]  # still asked: the trader may mean it
    standins.strategies_down = True
    assert await ask(fake_api, "/sell SBIN-EQ 10 mkt") == "Sell 10 <b>SBIN-EQ</b> at market, MIS?"  # asked all the same


async def test_the_other_button_places_nothing_and_a_second_press_places_nothing_more(notifier, fake_api, standins):
    await ask(fake_api, "/buy SBIN-EQ 1 812.50")
    assert (await press(fake_api, "abort"))["text"] == "Not placed; nothing changed."

    await ask(fake_api, "/buy SBIN-EQ 1 812.50")
    await press(fake_api, "place")
    again = await press_again(fake_api, "place")

    assert len(standins.calls(rpc.PLACE_ORDER)) == 1
    assert again.startswith("Already answered: ")


@pytest.mark.parametrize("command", [
    "/buy", "/buy SBIN-EQ", "/buy SBIN-EQ 1", "/buy SBIN-EQ one 812.50", "/buy SBIN-EQ 0 812.50",
    "/buy SBIN-EQ 1 812.555", "/buy SBIN-EQ 1 -5", "/buy SBIN-EQ 1 nan", "/buy SBIN-EQ 1 812.50 BO",
    "/buy SBIN-EQ 99999999999999999999 812.50", "/buy SBIN-EQ 1 812.50 MIS extra", "/buy SBIN-EQ ² 812.50",
    "/buy SBIN-EQ 1 812." + "0" * 60, "/buy SBIN-EQ 1 mkt trigger=", "/buy SBIN-EQ 1 mkt trigger=1.005",
    "/buy SBIN-EQ 1 mkt trigger=5 trigger=6", "/buy SBIN-EQ 1 mkt MIS CNC", "/buy SBIN-EQ 1 mkt stop=5",
    "/buy SBIN-EQ 1 mkt trigger=5 MIS extra"])
async def test_bad_arguments_get_the_usage_and_no_prompt(notifier, fake_api, standins, command):
    reply = await ask(fake_api, command)

    assert reply.startswith("⚠️ give SYMBOL QUANTITY and a limit price in rupees or mkt, e.g. /buy SBIN-EQ 1 812.50")
    assert "reply_markup" not in fake_api.sent()[-1] and standins.calls(rpc.PLACE_ORDER) == []


async def test_an_unknown_symbol_is_said_and_nothing_asked(notifier, fake_api, standins):
    reply = await ask(fake_api, "/buy NOSUCH-EQ 1 10")

    assert reply.startswith("⚠️ no instrument 'NOSUCH-EQ'") and "SBIN-EQ" in reply
    assert standins.calls(rpc.PLACE_ORDER) == []


async def test_risk_refusing_the_order_is_the_outcome_told(notifier, fake_api, standins, bus):
    async def refuse(request):
        raise RiskRejected("PRICE_BAND", "price_paise 81250 is 900 bps from the last price; price_band_bps 500")

    bus._handlers[rpc.PLACE_ORDER] = refuse
    await ask(fake_api, "/buy SBIN-EQ 1 812.50")

    edited = await press(fake_api, "place")

    assert edited["text"].startswith("⚠️ ") and "price_band_bps 500" in edited["text"]


async def test_a_placement_not_answered_in_time_names_the_order_to_look_up(bus, standins, fake_api, clock):
    edited = await confirmed_unanswered(bus, fake_api, clock, rpc.PLACE_ORDER, "/buy SBIN-EQ 1 812.50", "place")

    cid = edited["text"].split("check /orders for order ", 1)[1].split(" ", 1)[0]
    assert cid.startswith("manual-") and "retry only with that id" in edited["text"]


async def test_with_admins_set_a_non_admin_chat_cannot_buy(bus, standins, fake_api, clock):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, admin_chat_ids=[ADMIN]), clock)):
        reply = await ask(fake_api, "/buy SBIN-EQ 1 812.50")

    assert reply == "Only admin chats may use /buy." and standins.calls(rpc.PLACE_ORDER) == []


async def test_the_prompt_buttons_name_the_order(notifier, fake_api, standins):
    await ask(fake_api, "/sell SBIN-EQ 3 mkt")

    assert [text for text, _ in buttons(fake_api.sent()[-1])] == ["Sell 3 SBIN-EQ", "Don't"]
