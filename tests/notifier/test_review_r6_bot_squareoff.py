"""/squareoff SYMBOL closes every position of the symbol, in every product and segment (the OMS's SquareOff): its
prompt lists them, says when a delivery or carry-forward one is among them, and its button closes them only while
they are what it listed. /positions shows each position's product."""

from __future__ import annotations

from shared import rpc
from shared.contracts import oms_pb2, trading_pb2
from tests.notifier.conftest import CHAT
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import press


def sbin(product: int, quantity: int) -> trading_pb2.Position:
    return trading_pb2.Position(symbol="SBIN-EQ", token=3045, exchange_segment="nse_cm", product=product,
                                net_quantity=quantity, average_price_paise=80_000, last_price_paise=81_000)


def intraday_and_holding() -> oms_pb2.ListPositionsResponse:
    return oms_pb2.ListPositionsResponse(positions=[sbin(trading_pb2.PRODUCT_MIS, 10),
                                                    sbin(trading_pb2.PRODUCT_CNC, 500)])


async def test_the_prompt_lists_every_position_it_closes_and_warns_of_a_delivery_holding(notifier, fake_api,
                                                                                        standins):
    standins.positions = intraday_and_holding()

    prompt = await ask(fake_api, "/squareoff SBIN-EQ")

    assert prompt == ("Square off SBIN-EQ with market orders? This closes every SBIN-EQ position:\n"
                      "nse_cm MIS +10 @ ₹800.00 · LTP ₹810.00\n"
                      "nse_cm CNC +500 @ ₹800.00 · LTP ₹810.00\n"
                      "⚠️ Includes CNC/NRML (delivery, carry-forward) positions, not only intraday MIS: they are "
                      "closed too.")


async def test_a_symbol_with_nothing_open_gets_no_buttons(notifier, fake_api, standins):
    reply = await ask(fake_api, "/squareoff TCS-EQ")

    assert (reply, fake_api.sent(chat_id=CHAT)[-1].get("reply_markup")) == (
        "No open position in TCS-EQ; nothing to square off.", None)


async def test_a_press_after_the_positions_changed_squares_off_nothing(notifier, fake_api, standins):
    standins.positions = oms_pb2.ListPositionsResponse(positions=[sbin(trading_pb2.PRODUCT_MIS, 10)])
    await ask(fake_api, "/squareoff SBIN-EQ")
    standins.positions = intraday_and_holding()  # a delivery buy filled after the prompt was shown

    edited = await press(fake_api, "sq")

    assert (edited["text"], standins.calls(rpc.SQUARE_OFF)) == (
        "Not squared off: the SBIN-EQ positions changed since you asked; nothing changed. Ask again to see them now.",
        [])


async def test_a_second_symbol_is_refused_not_ignored(notifier, fake_api, standins):
    reply = await ask(fake_api, "/squareoff SBIN-EQ TCS-EQ")

    assert (reply, fake_api.sent(chat_id=CHAT)[-1].get("reply_markup")) == (
        "⚠️ symbol: give one trading symbol (e.g. /squareoff SBIN-EQ), or all; nothing squared off", None)


async def test_positions_shows_each_positions_product(notifier, fake_api, standins):
    standins.positions = intraday_and_holding()

    reply = await ask(fake_api, "/positions")

    assert reply == ("<b>SBIN-EQ</b> MIS +10 @ ₹800.00 · LTP ₹810.00 · P&amp;L ₹0.00\n"
                     "<b>SBIN-EQ</b> CNC +500 @ ₹800.00 · LTP ₹810.00 · P&amp;L ₹0.00")
