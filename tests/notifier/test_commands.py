"""Telegram commands through the real python-telegram-bot against a fake Bot API, with stand-in modules."""

from __future__ import annotations

import asyncio
import html
import re

from services.notifier.messages import join_messages
from services.notifier.module import NotifierModule
from services.notifier.replies import history_html, order_line, strategies_html
from shared import rpc
from shared.contracts import oms_pb2, risk_pb2, strategy_pb2, trading_pb2
from tests.notifier.conftest import CHAT, DAY_START, order, settings_for, started


async def ask(fake_api, text: str, chat_id: int = CHAT) -> str:
    before = len(fake_api.sent(chat_id=chat_id))
    fake_api.send_command(chat_id, text)
    sent = await fake_api.wait_sent(before + 1, chat_id=chat_id)
    return sent[-1]["text"]


async def test_help_lists_every_command(notifier, fake_api):
    reply = await ask(fake_api, "/help")

    for command in ("/status", "/positions", "/orders", "/pnl", "/strategies", "/pause", "/resume", "/kill",
                    "/unkill", "/squareoff", "/limits", "/cancel", "/buy", "/sell", "/modify", "/funds"):
        assert command in reply


async def test_the_bot_sets_its_command_menu_to_every_command_but_start_and_unkill(notifier, fake_api):
    """Telegram shows the menu beside the message box. /unkill stays out: a menu entry is sent on one tap."""
    (menu,) = fake_api.sent("setMyCommands")
    names = [c["command"] for c in menu["commands"]]

    assert sorted(names) == sorted(set(notifier.bot.commands) - {"start", "unkill"})
    help_text = await ask(fake_api, "/help")
    assert [n for n in names if f"/{n}" not in help_text] == ["help"]  # /help is the list itself


async def test_a_bot_whose_menu_is_refused_still_starts_and_answers(bus, standins, fake_api, clock):
    fake_api.fail["setMyCommands"] = [400]
    async for module in started(NotifierModule(bus, settings_for(fake_api), clock)):
        assert module.bot_started.is_set()
        assert (await ask(fake_api, "/status")).startswith("<b>NeoPulse</b> paper")


async def test_status_reports_mode_feed_rate_trading_state_and_strategies(notifier, fake_api):
    reply = await ask(fake_api, "/status")

    assert reply.startswith("<b>NeoPulse</b> paper · up ")
    assert "Feed: simulator connected · 56.5 ticks/s · 1234 ticks" in reply
    assert "Trading: ACTIVE" in reply
    assert "Strategies: MOMENTUM_RSI" in reply


async def test_positions_shows_each_open_position_with_its_pnl(notifier, fake_api):
    reply = await ask(fake_api, "/positions")

    assert reply == "<b>SBIN-EQ</b> +10 @ ₹800.00 · LTP ₹810.00 · P&amp;L ₹100.00"


async def test_orders_today_lists_todays_orders(notifier, fake_api):
    reply = await ask(fake_api, "/orders today")

    assert reply == "BUY 10 <b>SBIN-EQ</b> MKT · TRADED 10/10 [MOMENTUM_RSI] · <code>c-SBIN-EQ</code>"


async def test_history_shows_an_orders_transitions_and_asks_for_an_id(notifier, fake_api):
    reply = await ask(fake_api, "/history c-SBIN-EQ")
    nameless = await ask(fake_api, "/history")

    assert reply.splitlines() == ["History of <code>c-SBIN-EQ</code>: BUY <b>SBIN-EQ</b> [MOMENTUM_RSI]",
                                  "11:00:00 TRADED · 10/10 · MKT · broker"]
    assert nameless.startswith("⚠️ order: give one order's id")


def test_strategies_give_each_ones_pnl_today_and_its_loss_limit():
    info = strategy_pb2.StrategyInfo(name="orb", kind="ORB", tokens=[3045], signals_emitted=2, day_pnl_paise=-120_50,
                                     max_daily_loss_paise=500_00)

    assert strategies_html([info]) == "▶️ <b>orb</b> ORB · 1 tokens · 2 signals · today -₹120.50 (loss limit ₹500.00)"


def test_strategies_list_each_position_with_its_stop_and_target():
    info = strategy_pb2.StrategyInfo(name="orb", kind="ORB", tokens=[3045], positions=[
        strategy_pb2.StrategyPosition(symbol="SBIN-EQ", net_quantity=10, entry_price_paise=101_00, stop_paise=99_00,
                                      target_paise=105_00),
        strategy_pb2.StrategyPosition(symbol="TCS-EQ", net_quantity=-2, entry_price_paise=3_500_00,
                                      stop_paise=3_535_00, stop_reached=True),
        strategy_pb2.StrategyPosition(token=11536, net_quantity=1, entry_price_paise=100_00)])

    assert strategies_html([info]).splitlines()[1:] == [
        "   SBIN-EQ +10 @ ₹101.00 · stop ₹99.00 · target ₹105.00",
        "   TCS-EQ -2 @ ₹3,500.00 · stop ₹3,535.00 · <b>stop reached</b>, exiting",
        "   11536 +1 @ ₹100.00 · no stop"]


def test_history_says_why_the_order_was_placed():
    placed = trading_pb2.OrderUpdate(
        client_order_id="c-1", status=trading_pb2.ORDER_STATUS_OPEN, request=trading_pb2.OrderRequest(
            symbol="SBIN-EQ", side=trading_pb2.SIDE_SELL, quantity=10, strategy_tag="mom",
            reason="stop loss 1%: tick ₹98.90 <1.10% under>"))

    assert history_html([oms_pb2.OrderHistoryEntry(update=placed)]).splitlines()[:2] == [
        "History of <code>c-1</code>: SELL <b>SBIN-EQ</b> [mom]", "Why: stop loss 1%: tick ₹98.90 &lt;1.10% under&gt;"]


def test_an_order_given_up_is_not_listed_as_a_plain_rejection():
    given_up = trading_pb2.OrderUpdate(status=trading_pb2.ORDER_STATUS_REJECTED, reason_code="OUTCOME_UNKNOWN",
                                       request=trading_pb2.OrderRequest(symbol="SBIN-EQ", side=trading_pb2.SIDE_BUY,
                                                                        quantity=10))

    assert order_line(given_up) == "BUY 10 <b>SBIN-EQ</b> MKT · REJECTED ⚠️ outcome unknown, check the broker 0/10"


def test_a_strategys_order_a_trader_took_over_says_so():
    taken = trading_pb2.OrderUpdate(status=trading_pb2.ORDER_STATUS_OPEN, changed_by_hand=True,
                                    request=trading_pb2.OrderRequest(
        symbol="SBIN-EQ", side=trading_pb2.SIDE_BUY, quantity=10, order_type=trading_pb2.ORDER_TYPE_LIMIT,
        price_paise=800_00, strategy_tag="MOMENTUM_RSI", signal_id="MOMENTUM_RSI-3045-1-BUY"))

    assert order_line(taken) == "BUY 10 <b>SBIN-EQ</b> ₹800.00 · OPEN 0/10 [MOMENTUM_RSI, changed by hand]"


async def test_orders_without_open_orders_says_so(notifier, fake_api, standins):
    reply = await ask(fake_api, "/orders")

    assert reply == "No open orders."
    assert standins.calls(rpc.LIST_ORDERS)[-1].open_only is True


async def test_orders_with_an_unknown_filter_gets_a_short_error(notifier, fake_api):
    reply = await ask(fake_api, "/orders yesterday")

    assert reply == "⚠️ orders: unknown filter 'yesterday'; use open or today"


async def test_pnl_shows_net_realised_unrealised_and_charges(notifier, fake_api):
    reply = await ask(fake_api, "/pnl")

    assert reply == "<b>P&amp;L</b> net ₹138.00\nRealised ₹50.00 · unrealised ₹100.00 · charges ₹12.00"


async def test_funds_shows_what_is_available_of_the_total_and_todays_pnl(notifier, fake_api):
    reply = await ask(fake_api, "/funds")

    assert reply == ("<b>Funds</b> (kotak account at 14:30:00)\nAvailable -₹1,234.50 of ₹1,00,000.00 · margin used "
                     "₹1,01,234.50\nToday: realised -₹500.00 · unrealised ₹250.00")


async def test_strategies_lists_state_and_signal_count(notifier, fake_api):
    reply = await ask(fake_api, "/strategies")

    assert reply == "▶️ <b>MOMENTUM_RSI</b> MOMENTUM_RSI · 1 tokens · 7 signals · today ₹0.00"


async def test_strategies_says_neopulse_paused_one_at_start_when_and_why(notifier, fake_api, standins):
    standins.paused.add("MOMENTUM_RSI")
    standins.pauses["MOMENTUM_RSI"] = (strategy_pb2.PAUSED_BY_NEOPULSE, "its positions could not be restored at "
                                       "start: a square-off filled while <one> of its orders was filling", DAY_START)

    reply = await ask(fake_api, "/strategies")

    assert reply == ("⏸ <b>MOMENTUM_RSI</b> MOMENTUM_RSI · 1 tokens · 7 signals · today ₹0.00\n"
                     "   paused 25 Nov 11:00 IST by NeoPulse: its positions could not be restored at start: a "
                     "square-off filled while &lt;one&gt; of its orders was filling")


async def test_strategies_says_an_operator_paused_one_from_which_chat(notifier, fake_api, standins):
    await ask(fake_api, "/pause MOMENTUM_RSI")

    reply = await ask(fake_api, "/strategies")

    assert reply == ("⏸ <b>MOMENTUM_RSI</b> MOMENTUM_RSI · 1 tokens · 7 signals · today ₹0.00\n"
                     f"   paused 25 Nov 11:00 IST by the operator: telegram:{CHAT} /pause")
    assert standins.calls(rpc.PAUSE_STRATEGY)[-1].reason == f"telegram:{CHAT} /pause"


async def test_pause_asks_the_strategy_module_and_confirms(notifier, fake_api, standins):
    reply = await ask(fake_api, "/pause MOMENTUM_RSI")

    assert reply == "<b>MOMENTUM_RSI</b> is paused."
    assert standins.paused == {"MOMENTUM_RSI"}


async def test_resume_lets_a_paused_strategy_run_again(notifier, fake_api, standins):
    standins.paused.add("MOMENTUM_RSI")

    reply = await ask(fake_api, "/resume MOMENTUM_RSI")

    assert reply == "<b>MOMENTUM_RSI</b> is running."
    assert standins.paused == set()


async def test_pause_of_an_unknown_strategy_replies_with_the_error_not_a_traceback(notifier, fake_api):
    reply = await ask(fake_api, "/pause NOPE")

    assert reply == "⚠️ strategy NOPE does not exist; /strategies lists them"


async def test_pause_without_a_name_says_what_to_give(notifier, fake_api):
    reply = await ask(fake_api, "/pause")

    assert reply == "⚠️ name: give the strategy name, e.g. /pause MOMENTUM_RSI"


async def test_limits_shows_trading_state_and_limits(notifier, fake_api):
    reply = await ask(fake_api, "/limits")

    assert reply.startswith("<b>Risk</b> ACTIVE\nOpen orders 1/20")
    assert "Max order qty 500" in reply
    assert "Max position value no limit · gross exposure ₹5,00,000.00" in reply


async def test_status_quotes_a_huge_kill_reason_cut_so_telegram_takes_it(notifier, fake_api, standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED
    standins.state_reason = "kill switch engaged: " + "x<y>&z" * 700  # risk keeps the /kill reason whole

    reply = await ask(fake_api, "/status")

    assert "Trading: HALTED (kill switch engaged: x&lt;y&gt;&amp;z" in reply and "…) · open orders 1" in reply
    assert telegram_length(reply) <= 4096


async def test_limits_quotes_a_huge_kill_reason_cut_so_telegram_takes_it(notifier, fake_api, standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED
    standins.state_reason = "kill switch engaged: " + "🚀" * 4000

    reply = await ask(fake_api, "/limits")

    assert reply.startswith("<b>Risk</b> HALTED (kill switch engaged: 🚀🚀") and "🚀…)\nOpen orders 1/20" in reply
    assert telegram_length(reply) <= 4096


async def test_a_command_whose_module_is_missing_gets_a_short_reply(notifier, fake_api, bus):
    bus._handlers.pop(rpc.LIST_POSITIONS)

    reply = await ask(fake_api, "/pnl")

    assert reply == "⚠️ no module serves /neopulse.v1.OrderService/ListPositions in this process"


async def test_every_command_is_published_for_audit(notifier, fake_api, commands, bus):
    await ask(fake_api, "/orders today")
    await bus.drain()

    assert [(c.name, list(c.args), c.origin) for c in commands] == [("orders", ["today"], f"telegram:{CHAT}")]


async def test_orders_escape_html_in_symbols(notifier, fake_api, standins):
    standins.orders = [order(symbol="A<B>&C", status=trading_pb2.ORDER_STATUS_OPEN, filled=0)]

    reply = await ask(fake_api, "/orders")

    assert "<b>A&lt;B&gt;&amp;C</b>" in reply


async def test_a_module_that_does_not_answer_in_time_gets_a_try_again_reply(bus, standins, fake_api, clock):
    async def stuck(request):
        await asyncio.Event().wait()

    bus._handlers[rpc.LIST_POSITIONS] = stuck
    async for _ in started(NotifierModule(bus, settings_for(fake_api, request_timeout_seconds=0.05), clock)):
        reply = await ask(fake_api, "/positions")

    assert reply == "⚠️ OrderService/ListPositions did not answer within 0.05 s; try again"


async def test_editing_an_old_unkill_message_does_not_ask_to_release_the_kill_switch_again(notifier, fake_api,
                                                                                            standins):
    standins.state = risk_pb2.TRADING_STATE_HALTED
    await ask(fake_api, "/unkill")
    before = len(fake_api.sent(chat_id=CHAT))
    edited = fake_api._message(CHAT, "/unkill (typo fixed)", user_id=CHAT, message_id=7)
    edited["entities"] = [{"type": "bot_command", "offset": 0, "length": 7}]
    edited["edit_date"] = edited["date"]
    fake_api._queue({"edited_message": edited})

    reply = await ask(fake_api, "/help")  # handled after the edit

    assert len(fake_api.sent(chat_id=CHAT)) == before + 1 and reply.startswith("<b>NeoPulse bot</b>")
    assert standins.calls(rpc.SET_KILL_SWITCH) == []


def telegram_length(html_text: str) -> int:
    """What Telegram counts against its 4096 limit: the text after its HTML entities are parsed."""
    return len(html.unescape(re.sub(r"<[^>]+>", "", html_text)))


async def test_a_reply_longer_than_telegram_takes_comes_in_several_messages(notifier, fake_api, standins):
    standins.positions.ClearField("positions")
    for i in range(100):
        standins.positions.positions.append(trading_pb2.Position(
            symbol=f"SYMBOL{i:03d}-EQ", token=i + 1, net_quantity=10, average_price_paise=80_000,
            last_price_paise=81_000, unrealised_pnl_paise=10_000))

    fake_api.send_command(CHAT, "/positions")
    sent = await fake_api.wait_sent(2, chat_id=CHAT)

    assert all(telegram_length(m["text"]) <= 4096 for m in sent)
    assert sum(m["text"].count("SYMBOL") for m in sent) == 100


async def test_a_rate_limited_reply_is_sent_again_after_the_wait(notifier, fake_api):
    fake_api.rate_limit_next = [1]

    fake_api.send_command(CHAT, "/help")
    sent = await fake_api.wait_sent(2, chat_id=CHAT, within=5)  # the 429, then the reply

    assert "/status" in sent[-1]["text"]


def test_packing_never_makes_an_empty_message():
    assert "" not in join_messages(["x" * 5000, "y"])
