"""End to end: a real monolith run (synthetic market, paper broker) sends a fill and a rejection to the fake Bot API.

Manual orders go through the real pipeline: OrderService/PlaceOrder -> risk -> oms -> VirtualBroker -> notifier.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest

from services.app.config import AppSettings
from shared import rpc
from shared.bus import Topic
from shared.component import Component
from shared.contracts import ingestion_pb2, oms_pb2, ops_pb2, trading_pb2
from shared.errors import RiskRejected
from shared.money import fmt_inr
from tests.notifier.conftest import CHAT
from tests.notifier.fake_bot_api import TOKEN

pytest.importorskip("services.app.monolith")
pytest.importorskip("services.oms.module")

pytestmark = pytest.mark.slow


def paper_settings() -> AppSettings:
    return AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=60.0, symbols=["SBIN-EQ"])


def notifier_toml(fake_api) -> dict:
    return {"notifier": {"telegram_bot_token": TOKEN, "telegram_base_url": fake_api.url, "allowed_chat_ids": [CHAT],
                         "batch_window_seconds": 0.05, "polling_timeout_seconds": 1, "daily_summary_time_ist": ""}}


def manual_order(instrument, quantity: int, cid: str, reason: str = "") -> trading_pb2.OrderRequest:
    return trading_pb2.OrderRequest(
        client_order_id=cid, token=instrument.token, exchange_segment=instrument.exchange_segment,
        symbol=instrument.symbol, side=trading_pb2.SIDE_BUY, quantity=quantity,
        order_type=trading_pb2.ORDER_TYPE_MARKET, product=trading_pb2.PRODUCT_MIS,
        validity=trading_pb2.VALIDITY_DAY, strategy_tag="MANUAL", reason=reason)


async def test_a_monolith_fill_and_rejection_reach_telegram(fake_api):
    from services.app.monolith import Monolith

    app = Monolith(paper_settings(), notifier_toml(fake_api) | {"risk": {"max_order_quantity": 100}})
    stop = asyncio.Event()
    texts: list[str] = []

    async def trader() -> None:
        try:
            sbin = await started_sbin(app)
            with pytest.raises(RiskRejected) as rejected:
                await app.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=manual_order(sbin, 5000, "big")))
            assert rejected.value.reason_code == "MAX_ORDER_QUANTITY"
            await place_once_priced(app.bus, sbin)
            await wait_for_texts(fake_api, texts, ["Fill", "Risk rejected"])
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[trader], stop=stop), 60)

    fill = next(t for t in texts if "<b>Fill</b>" in t and "BUY 1 SBIN-EQ" in t)
    rejection = next(t for t in texts if "Risk rejected" in t and "BUY 5000 SBIN-EQ" in t)
    assert "(filled 1/1) [MANUAL]\na trader's note: hedge" in fill  # why it was placed, kept with the order
    assert "Risk rejected MAX_ORDER_QUANTITY" in rejection


async def test_a_resting_order_is_cancelled_from_telegram(fake_api):
    """/orders shows the order's id; /cancel with it asks, and the confirm button cancels it at the paper broker
    through the real OMS."""
    from services.app.monolith import Monolith
    from tests.notifier.test_confirmations import buttons, press

    app = Monolith(paper_settings(), notifier_toml(fake_api))
    stop = asyncio.Event()
    seen: dict[str, str] = {}

    async def trader() -> None:
        try:
            sbin = await started_sbin(app)
            bought = await place_once_priced(app.bus, sbin)  # its fill price: the limit goes 4% below it
            last = await filled(app.bus, bought)
            limit = last.average_price_paise * 96 // 100 // 5 * 5
            resting = manual_order(sbin, 1, "rest-1")
            resting.order_type, resting.price_paise = trading_pb2.ORDER_TYPE_LIMIT, limit
            await app.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=resting))
            # Notifications (the fill above) go to the same chat: the replies are picked out by what they say.
            fake_api.send_command(CHAT, "/orders")
            seen["orders"] = (await reply(fake_api, lambda m: "rest-1" in m["text"]))["text"]
            fake_api.send_command(CHAT, "/cancel rest-1")
            seen["prompt"] = await reply(fake_api, lambda m: bool(m.get("reply_markup")))
            seen["done"] = (await press(fake_api, "cx"))["text"]
            seen["status"] = trading_pb2.OrderStatus.Name((await app.bus.call(
                rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="rest-1"))).order.status)
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[trader], stop=stop), 60)

    assert "<code>rest-1</code>" in seen["orders"]
    assert seen["prompt"]["text"].startswith("Cancel this order?\nBUY 1 <b>SBIN-EQ</b> ₹")
    assert [text for text, _ in buttons(seen["prompt"])] == ["Cancel the order", "Keep it"]
    assert seen["done"].startswith("Cancel sent: BUY 1 <b>SBIN-EQ</b>") and "CANCELLED 0/1" in seen["done"]
    assert seen["status"] == "ORDER_STATUS_CANCELLED"


async def test_a_resting_order_is_modified_from_telegram_and_the_change_is_notified(fake_api):
    """/modify asks with the terms before and after; the confirm button changes the order at the paper broker through
    risk and the real OMS, the reply shows the new terms, and the chat hears of the change once."""
    from services.app.monolith import Monolith
    from tests.notifier.test_confirmations import press

    calm = {"ingestion": {"volatility_bps": 0.2}}  # the price stays inside risk's 5 % band for the change
    app = Monolith(paper_settings(), notifier_toml(fake_api) | calm)
    stop = asyncio.Event()
    seen: dict[str, Any] = {}

    async def trader() -> None:
        try:
            sbin = await started_sbin(app)
            last = await filled(app.bus, await place_once_priced(app.bus, sbin))
            seen["limit"] = last.average_price_paise * 97 // 100 // 5 * 5
            seen["lower"] = seen["limit"] - 10
            resting = manual_order(sbin, 1, "rest-2")
            resting.order_type, resting.price_paise = trading_pb2.ORDER_TYPE_LIMIT, seen["limit"]
            await app.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=resting))
            fake_api.send_command(CHAT, f"/modify rest-2 qty=2 price={seen['lower'] / 100:.2f}")
            seen["prompt"] = (await reply(fake_api, lambda m: bool(m.get("reply_markup"))))["text"]
            seen["done"] = (await press(fake_api, "mod"))["text"]
            seen["order"] = (await app.bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="rest-2"))).order
            seen["told"] = (await reply(fake_api, lambda m: "Order modified" in m["text"]))["text"]
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[trader], stop=stop), 60)

    was, now = fmt_inr(seen["limit"]), fmt_inr(seen["lower"])
    assert seen["prompt"] == (f"Modify this order?\nBUY 1 <b>SBIN-EQ</b> {was} · OPEN 0/1 [MANUAL]\n"
                              f"qty 1 → 2, price {was} → {now}")
    assert seen["done"] == f"Modified: BUY 2 <b>SBIN-EQ</b> {now} · OPEN 0/2 [MANUAL]"
    assert (seen["order"].request.quantity, seen["order"].request.price_paise) == (2, seen["lower"])
    assert f"⚙️ <b>Order modified</b>\nBUY SBIN-EQ: qty 1 → 2, price {was} → {now} [MANUAL]" in seen["told"]
    assert sum("Order modified" in p["text"] for p in fake_api.sent(chat_id=CHAT)) == 1


async def test_funds_shows_the_paper_account_and_an_order_beyond_it_is_refused_as_the_brokers_rms_would(fake_api):
    """A Rs 2,000 paper account: a market buy of 100 SBIN (~Rs 800: Rs 16,000 of margin) is REJECTED with the RMS's
    text, which the chat hears; /funds shows what is left after a share bought."""
    from services.app.monolith import Monolith

    app = Monolith(paper_settings(), notifier_toml(fake_api) | {"oms": {"paper_capital": 2000}})
    stop = asyncio.Event()
    seen: dict[str, Any] = {}

    async def trader() -> None:
        try:
            sbin = await started_sbin(app)
            seen["bought"] = await filled(app.bus, await place_once_priced(app.bus, sbin))
            await app.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=manual_order(sbin, 100, "big")))
            seen["told"] = (await reply(fake_api, lambda m: "RMS:Margin Exceeds" in m["text"]))["text"]
            seen["order"] = (await app.bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="big"))).order
            fake_api.send_command(CHAT, "/funds")
            seen["funds"] = (await reply(fake_api, lambda m: m["text"].startswith("<b>Funds</b>")))["text"]
            seen["grpc"] = await app.bus.call(rpc.GET_FUNDS, oms_pb2.GetFundsRequest())
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[trader], stop=stop), 60)

    assert (seen["order"].status, seen["order"].reason_code) == (trading_pb2.ORDER_STATUS_REJECTED, "BROKER_REJECTED")
    assert seen["order"].reason.startswith("RMS:Margin Exceeds,Required:")
    assert "BUY 100 SBIN-EQ" in seen["told"]
    funds = seen["grpc"]
    assert funds.account == "paper" and funds.total_paise <= 2_000_00  # less today's charges and any loss
    assert 0 < funds.margin_used_paise <= seen["bought"].average_price_paise  # a fifth of a share, give or take
    rupees = r"-?₹[\d,]+\.\d\d"
    assert re.fullmatch(rf"<b>Funds</b> \(paper account at \d\d:\d\d:\d\d\)\nAvailable {rupees} of {rupees} · "
                        rf"margin used {rupees}\nToday: realised {rupees} · unrealised {rupees}", seen["funds"])


async def test_the_monolith_start_and_stop_notices_reach_telegram(fake_api):
    from services.app.monolith import Monolith

    stop = asyncio.Event()
    app = Monolith(paper_settings(), notifier_toml(fake_api))

    async def stop_once_started() -> None:
        await app.started.wait()
        await wait_for_texts(fake_api, [], ["NeoPulse started"])
        stop.set()

    await asyncio.wait_for(app.run(extra=[stop_once_started], stop=stop), 60)

    texts = [p["text"] for p in fake_api.sent(chat_id=CHAT)]
    assert texts[0].startswith("⚙️ <b>NeoPulse started</b>\nmode paper, source synthetic")
    assert texts[-1] == "⚙️ <b>NeoPulse stopping</b>\nshutting down cleanly"


class LateAlert(Component):
    """Stands in for a module whose last alert comes while the notifier is stopping: work its stop does not wait for
    (a broker call answering late, a cancel retried in the background) publishes it once the notifier's stop is
    sending its queue, here held on the wire by the fake Bot API until the alert is in the notifier's hands."""

    name = "late-alert"

    def __init__(self, bus, fake_api, answer: asyncio.Event) -> None:
        super().__init__(bus)
        self.fake_api, self.answer = fake_api, answer
        self.work: asyncio.Task | None = None

    async def stop(self) -> None:
        self.work = asyncio.create_task(self._alert_once_the_notifier_sends())

    async def _alert_once_the_notifier_sends(self) -> None:
        await self.fake_api.wait_sent(1, chat_id=CHAT, within=30)
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, severity=ops_pb2.SEVERITY_CRITICAL,
            title="Kill switch: 1 open order(s) NOT cancelled", text="cancel it by hand", source="risk"))
        await self.bus.drain(5.0)
        self.answer.set()


async def test_an_alert_published_while_the_notifier_stops_still_reaches_telegram(fake_api):
    from services.app.monolith import Monolith

    fake_api.hold["sendMessage"] = answer = asyncio.Event()
    toml = notifier_toml(fake_api)
    toml["notifier"]["batch_window_seconds"] = 30  # the notices wait for their batch: the notifier's stop sends them

    class WithLateAlert(Monolith):
        def _modules(self, *parts):
            return [*super()._modules(*parts), LateAlert(self.bus, fake_api, answer)]

    app = WithLateAlert(paper_settings(), toml)
    stop = asyncio.Event()

    async def stop_once_started() -> None:
        await app.started.wait()
        stop.set()

    await asyncio.wait_for(app.run(extra=[stop_once_started], stop=stop), 60)

    texts = [p["text"] for p in fake_api.sent(chat_id=CHAT)]
    assert [("NeoPulse stopping" in t, "Kill switch: 1 open order(s) NOT cancelled" in t) for t in texts] == [
        (True, False), (False, True)]


async def started_sbin(app):
    """SBIN-EQ's instrument, once the monolith has started."""
    await app.started.wait()
    instruments = await app.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
    return next(i for i in instruments.instruments if i.symbol == "SBIN-EQ")


async def place_once_priced(bus, instrument, within: float = 20.0) -> str:
    """A market order needs a last price at risk; until the first tick arrives it is refused with NO_PRICE. Returns
    the client id of the one placed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for attempt in itertools.count():
        try:
            await bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(
                order=manual_order(instrument, 1, f"s{attempt}", reason="a trader's note: hedge")))
            return f"s{attempt}"
        except RiskRejected as exc:
            assert exc.reason_code == "NO_PRICE" and loop.time() < deadline, str(exc)
            await asyncio.sleep(0.05)


async def wait_for_texts(fake_api, texts: list[str], needles: list[str], within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        texts[:] = [p["text"] for p in fake_api.sent(chat_id=CHAT)]
        if all(any(n in t for t in texts) for n in needles):
            return
        assert loop.time() < deadline, f"not all of {needles} arrived: {texts}"
        await asyncio.sleep(0.05)


async def reply(fake_api, wanted, within: float = 30.0) -> dict:
    """The first message sent to the chat that `wanted` says is the one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := [m for m in fake_api.sent(chat_id=CHAT) if wanted(m)]):
        assert loop.time() < deadline, f"no such reply among {[m['text'] for m in fake_api.sent(chat_id=CHAT)]}"
        await asyncio.sleep(0.05)
    return found[0]


async def filled(bus, order_id: str, within: float = 20.0) -> trading_pb2.OrderUpdate:
    """The order once it has a fill (a paper market order fills at the next tick)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in itertools.count():
        order = (await bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=order_id))).order
        if order.filled_quantity:
            return order
        assert loop.time() < deadline, f"order {order_id} did not fill: {order}"
        await asyncio.sleep(0.05)
    raise AssertionError("unreachable")
