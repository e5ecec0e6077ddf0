"""An urgent notice (kill switch, CRITICAL) offered after a batch of ordinary messages was packed goes ahead of those
not yet delivered, rather than waiting out a 429's retry_after or the group pace once for each of them."""

from __future__ import annotations

import asyncio

from services.notifier.module import NotifierModule
from services.notifier.sender import TelegramSender
from shared.contracts import ops_pb2
from tests.helpers import eventually
from tests.notifier.conftest import CHAT, settings_for, started

GROUP = -1001234
LONG = "x" * 2500  # one block to a message


def long_fill(i: int) -> ops_pb2.Notification:
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_FILL, severity=ops_pb2.SEVERITY_INFO, title="Fill",
                                text=f"SELL 10 STOCK{i}-EQ @ ₹100.00 {LONG}", source="oms")


KILL = ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, severity=ops_pb2.SEVERITY_CRITICAL,
                            title="Kill switch engaged", text="daily loss limit breached", source="risk")


async def test_a_kill_switch_alert_goes_before_the_earlier_fills_held_back_by_a_429(bus, standins, fake_api, clock):
    fake_api.rate_limit_next = [1, 1]  # Telegram throttles the chat: the next two sends are told to wait 1 s
    async for module in started(NotifierModule(bus, settings_for(fake_api), clock)):
        for i in range(4):
            module.deliver(long_fill(i))
        await fake_api.wait_sent(1, chat_id=CHAT)  # the first fill met the 429: four messages in hand
        module.deliver(KILL)
        await eventually(lambda: len({p["text"] for p in fake_api.sent(chat_id=CHAT)}) == 5, within=10)

    heads = list(dict.fromkeys("KILL" if "Kill switch" in p["text"] else p["text"].split(" @")[0].split()[-1]
                               for p in fake_api.sent(chat_id=CHAT)))  # each message once, as first tried
    assert heads == ["STOCK0-EQ", "KILL", "STOCK1-EQ", "STOCK2-EQ", "STOCK3-EQ"]


async def test_in_a_group_urgent_alerts_go_next_in_their_order_and_the_fills_after_in_theirs():
    sent: list[str] = []

    async def send(chat_id: int, html: str) -> None:
        sent.append(html.split(" ")[0])

    sender = TelegramSender(send, [GROUP], window_seconds=0.01, queue_size=100, attempts=3, backoff_seconds=0.01,
                            group_interval_seconds=0.2)
    runner = asyncio.create_task(sender.run())
    try:
        for i in range(4):
            sender.offer(f"fill{i} {LONG}")
        await eventually(lambda: len(sent) == 1)  # the group's pace holds the other three fills
        sender.offer(f"kill1 {LONG}", urgent=True)
        sender.offer(f"kill2 {LONG}", urgent=True)
        await eventually(lambda: len(sent) == 6, within=5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert sent == ["fill0", "kill1", "kill2", "fill1", "fill2", "fill3"]
