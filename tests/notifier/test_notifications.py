"""Notifications: fills, rejections and published notices reach the allowed chats, batched and rate-limit safe."""

from __future__ import annotations

import asyncio
import logging

from services.notifier.module import NotifierModule
from shared import rpc
from shared.bus import Topic
from shared.contracts import notifier_pb2, ops_pb2, trading_pb2
from tests.helpers import eventually as wait_for
from tests.notifier.conftest import CHAT, settings_for, started

SBIN = trading_pb2.OrderRequest(symbol="SBIN-EQ", token=3045, side=trading_pb2.SIDE_BUY, quantity=10,
                                strategy_tag="MOMENTUM_RSI", client_order_id="sig-1")


def fill(sequence: int = 1, qty: int = 10) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(internal_id="o-1", status=trading_pb2.ORDER_STATUS_TRADED,
                                   previous_status=trading_pb2.ORDER_STATUS_OPEN, filled_quantity=qty,
                                   last_fill_quantity=qty, last_fill_price_paise=80_050, request=SBIN,
                                   sequence=sequence)


def note(text: str, kind: int = ops_pb2.NOTIFICATION_KIND_FEED) -> ops_pb2.Notification:
    return ops_pb2.Notification(kind=kind, severity=ops_pb2.SEVERITY_WARNING, title="Feed", text=text,
                                fields={"token": "3045", "name": "clashes with LogRecord.name"}, source="ingestion")


async def test_a_fill_reaches_the_chat(notifier, fake_api, bus):
    await bus.publish(Topic.ORDER_UPDATES, fill())

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == "✅ <b>Fill</b>\nBUY 10 SBIN-EQ @ ₹800.50 (filled 10/10) [MOMENTUM_RSI]"
    assert sent[0]["parse_mode"] == "HTML"


async def test_a_fill_says_why_its_order_was_placed_escaped_for_telegram(notifier, fake_api, bus):
    update = fill()
    update.request.reason = "stop loss 1%: tick ₹98.90 <1.10% under> the entry ₹100.00"
    await bus.publish(Topic.ORDER_UPDATES, update)

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == ("✅ <b>Fill</b>\nBUY 10 SBIN-EQ @ ₹800.50 (filled 10/10) [MOMENTUM_RSI]\n"
                               "stop loss 1%: tick ₹98.90 &lt;1.10% under&gt; the entry ₹100.00")


async def test_a_risk_rejection_reaches_the_chat_with_its_reason(notifier, fake_api, bus):
    decision = trading_pb2.RiskDecision(accepted=False, reason_code="MAX_ORDER_QUANTITY", strategy="MOMENTUM_RSI",
                                        reason="quantity 600 is above max_order_quantity 500", order=SBIN)
    await bus.publish(Topic.ORDERS, decision)

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == ("⛔ <b>Risk rejected MAX_ORDER_QUANTITY</b>\n"
                               "BUY 10 SBIN-EQ: quantity 600 is above max_order_quantity 500 [MOMENTUM_RSI]")


async def test_a_replayed_signal_refused_as_a_duplicate_is_not_sent_to_the_chat(notifier, fake_api, bus):
    """After a restart the strategies see the day's candles again; their signals for orders already placed
    are DUPLICATE_ORDER, which asks nothing of the trader. The next rejection still goes out."""
    duplicate = trading_pb2.RiskDecision(accepted=False, reason_code="DUPLICATE_ORDER", strategy="MOMENTUM_RSI",
                                         reason="client_order_id sig-1 was already accepted", order=SBIN, sequence=1)
    refused = trading_pb2.RiskDecision(accepted=False, reason_code="MAX_ORDER_QUANTITY", strategy="MOMENTUM_RSI",
                                       reason="quantity 600 is above max_order_quantity 500", order=SBIN, sequence=2)
    await bus.publish(Topic.ORDERS, duplicate)
    await bus.publish(Topic.ORDERS, refused)

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert [m["text"].split("\n")[0] for m in sent] == ["⛔ <b>Risk rejected MAX_ORDER_QUANTITY</b>"]


async def test_a_broker_rejection_reaches_the_chat(notifier, fake_api, bus):
    update = trading_pb2.OrderUpdate(status=trading_pb2.ORDER_STATUS_REJECTED, reason="RMS: margin < required",
                                     previous_status=trading_pb2.ORDER_STATUS_SUBMITTED, request=SBIN)
    await bus.publish(Topic.ORDER_UPDATES, update)

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == "⛔ <b>Broker rejected</b>\nBUY 10 SBIN-EQ: RMS: margin &lt; required [MOMENTUM_RSI]"


async def test_an_order_the_oms_gave_up_on_is_a_critical_alert_not_a_rejection(notifier, fake_api, bus):
    update = trading_pb2.OrderUpdate(status=trading_pb2.ORDER_STATUS_REJECTED, reason_code="OUTCOME_UNKNOWN",
                                     reason="placement outcome unknown (timeout); tag sig-1 not found at the broker",
                                     previous_status=trading_pb2.ORDER_STATUS_SUBMITTED, request=SBIN)
    await bus.publish(Topic.ORDER_UPDATES, update)

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"].startswith("🚨 <b>Order outcome unknown: check the broker's order book</b>\n"
                                      "BUY 10 SBIN-EQ: placement outcome unknown (timeout)")


async def test_accepted_orders_and_updates_without_a_fill_send_nothing(notifier, fake_api, bus):
    await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(accepted=True, order=SBIN))
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(status=trading_pb2.ORDER_STATUS_OPEN,
                                                                   request=SBIN))
    await bus.publish(Topic.NOTIFICATIONS, note("marker"))

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == "📡 <b>Feed</b>\nmarker"


async def test_a_replayed_order_update_is_not_announced_twice(notifier, fake_api, bus):
    await bus.publish(Topic.ORDER_UPDATES, fill(sequence=7))
    await bus.publish(Topic.ORDER_UPDATES, fill(sequence=7))
    await bus.publish(Topic.NOTIFICATIONS, note("marker"))

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"].count("Fill") == 1


async def test_the_notify_request_publishes_the_notification(notifier, fake_api, bus):
    response = await bus.call(rpc.NOTIFY, notifier_pb2.NotifyRequest(notification=note("feed <down>")))

    sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert response.accepted is True
    assert sent[0]["text"] == "📡 <b>Feed</b>\nfeed &lt;down&gt;"


async def test_a_burst_goes_out_as_one_message(bus, standins, fake_api, clock):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, batch_window_seconds=0.3), clock)):
        for i in range(10):
            await bus.publish(Topic.NOTIFICATIONS, note(f"event {i}"))
        sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == "\n\n".join(f"📡 <b>Feed</b>\nevent {i}" for i in range(10))


async def test_a_429_is_waited_out_for_its_retry_after_and_the_message_arrives(notifier, fake_api, bus):
    fake_api.rate_limit_next = [1]
    await bus.publish(Topic.NOTIFICATIONS, note("after the flood"))

    await fake_api.wait_sent(2, chat_id=CHAT)

    await wait_for(lambda: notifier.sender.sent == 1)  # the reply reached the bot after the fake recorded it
    first, second = [t for m, _, t in fake_api.calls if m == "sendMessage"]
    assert second - first >= 1.0
    status = await bus.call(rpc.GET_SYSTEM_STATUS, notifier_pb2.GetSystemStatusRequest())
    assert (status.notifications_sent, status.notifications_failed) == (1, 0)


async def test_a_server_error_is_retried_and_a_bad_request_is_given_up(notifier, fake_api, bus):
    fake_api.error_next = [502, 400]
    await bus.publish(Topic.NOTIFICATIONS, note("first"))
    await fake_api.wait_sent(3, chat_id=CHAT)  # 502 (retried), 400 (given up), then the chat is told at once
    await bus.publish(Topic.NOTIFICATIONS, note("second"))

    sent = await fake_api.wait_sent(4, chat_id=CHAT)
    await wait_for(lambda: notifier.sender.sent == 2)
    status = await bus.call(rpc.GET_SYSTEM_STATUS, notifier_pb2.GetSystemStatusRequest())

    assert [p["text"].split("\n")[1] for p in sent] == [
        "first", "first", "Telegram did not take them; /orders and /positions show the current state.", "second"]
    assert sent[2]["text"].startswith("⚠️ <b>1 notifications could not be delivered</b>")
    assert (status.notifications_sent, status.notifications_failed) == (2, 1)


async def test_without_a_token_notifications_are_only_logged_with_their_fields(bus, clock, caplog):
    caplog.set_level(logging.INFO, logger="services.notifier")
    module = NotifierModule(bus, settings_for_no_bot(), clock)
    async for _ in started(module):
        await bus.publish(Topic.NOTIFICATIONS, note("feed down"))
        await wait_for(lambda: module.handled == 1)
        status = await bus.call(rpc.GET_SYSTEM_STATUS, notifier_pb2.GetSystemStatusRequest())

    record = next(r for r in caplog.records if r.getMessage() == "notification")
    assert (record.kind, record.text, record.token, record.source) == ("FEED", "feed down", "3045", "ingestion")
    assert record.levelno == logging.WARNING
    assert (module.bot, status.telegram_enabled, status.mode) == (None, False, "paper")


def settings_for_no_bot():
    from services.notifier.config import NotifierSettings

    return NotifierSettings(daily_summary_time_ist="")


async def test_a_notice_still_in_the_batch_window_is_sent_when_the_module_stops(bus, standins, fake_api, clock):
    module = NotifierModule(bus, settings_for(fake_api, batch_window_seconds=30), clock)
    await module.start()
    runner = asyncio.create_task(module.run())
    await asyncio.wait_for(module.bot_started.wait(), 5)
    await bus.publish(Topic.NOTIFICATIONS, note("NeoPulse stopping"))
    await wait_for(lambda: module.handled == 1 and module.sender.queue.empty())

    runner.cancel()  # the process cancels run() first, then calls stop()
    await asyncio.gather(runner, return_exceptions=True)
    await module.stop()

    assert [p["text"] for p in fake_api.sent(chat_id=CHAT)] == ["📡 <b>Feed</b>\nNeoPulse stopping"]


async def test_a_bot_api_outage_at_start_up_is_retried_and_notices_wait_for_it(bus, standins, fake_api, clock):
    fake_api.fail["getMe"] = [502, 502]
    module = NotifierModule(bus, settings_for(fake_api, bot_start_retry_seconds=0.05), clock)
    await module.start()
    runner = asyncio.create_task(module.run())
    await bus.publish(Topic.NOTIFICATIONS, note("during the outage"))

    sent = await fake_api.wait_sent(1, chat_id=CHAT)
    await module.stop()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)

    assert len(fake_api.sent("getMe")) == 3
    assert sent[0]["text"] == "📡 <b>Feed</b>\nduring the outage"


async def test_a_rejected_token_shows_telegram_as_off_in_the_system_status(bus, clock, fake_api):
    settings = settings_for(fake_api, telegram_bot_token="999:wrong")
    module = NotifierModule(bus, settings, clock)
    await module.start()
    runner = asyncio.create_task(module.run())
    try:
        await wait_for(lambda: module.bot_rejected)
        status = await bus.call(rpc.GET_SYSTEM_STATUS, notifier_pb2.GetSystemStatusRequest())
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert status.telegram_enabled is False
