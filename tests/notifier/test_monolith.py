"""End to end: a real monolith run (synthetic market, paper broker) sends a fill and a rejection to the fake Bot API.

Manual orders go through the real pipeline: OrderService/PlaceOrder -> risk -> oms -> VirtualBroker -> notifier.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from services.app.config import AppSettings
from shared import rpc
from shared.bus import Topic
from shared.component import Component
from shared.contracts import ingestion_pb2, oms_pb2, ops_pb2, trading_pb2
from shared.errors import RiskRejected
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


def manual_order(instrument, quantity: int, cid: str) -> trading_pb2.OrderRequest:
    return trading_pb2.OrderRequest(
        client_order_id=cid, token=instrument.token, exchange_segment=instrument.exchange_segment,
        symbol=instrument.symbol, side=trading_pb2.SIDE_BUY, quantity=quantity,
        order_type=trading_pb2.ORDER_TYPE_MARKET, product=trading_pb2.PRODUCT_MIS,
        validity=trading_pb2.VALIDITY_DAY, strategy_tag="MANUAL")


async def test_a_monolith_fill_and_rejection_reach_telegram(fake_api):
    from services.app.monolith import Monolith

    app = Monolith(paper_settings(), notifier_toml(fake_api) | {"risk": {"max_order_quantity": 100}})
    stop = asyncio.Event()
    texts: list[str] = []

    async def trader() -> None:
        try:
            await app.started.wait()
            instruments = await app.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
            sbin = next(i for i in instruments.instruments if i.symbol == "SBIN-EQ")
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
    assert "(filled 1/1) [MANUAL]" in fill
    assert "Risk rejected MAX_ORDER_QUANTITY" in rejection


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


async def place_once_priced(bus, instrument, within: float = 20.0) -> None:
    """A market order needs a last price at risk; until the first tick arrives it is refused with NO_PRICE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for attempt in itertools.count():
        try:
            await bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=manual_order(instrument, 1, f"s{attempt}")))
            return
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
