"""In a running monolith, the way to an order goes first: a signal is decided by risk, and a decision placed by the
OMS, before the status line, the notifier or the strategy that asked take note of it. They all subscribe to the
same topics (the status line and the notifier before the OMS); as the order path's peers they ran between the
decision and its order."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from services.app.config import AppSettings
from services.app.status import StatusBoard
from services.notifier.module import NotifierModule
from services.oms.module import OmsModule
from services.risk.module import RiskModule
from services.strategy.module import StrategyModule
from shared.bus import Topic
from shared.contracts import trading_pb2
from tests.notifier.test_monolith import place_once_priced, started_sbin

pytestmark = pytest.mark.slow


def note_calls(monkeypatch, calls: list[tuple[str, str]]) -> None:
    """Each handler of a decision or a signal notes its name and the order's id as it starts."""
    handlers = ((StatusBoard, "_decision", "status"), (StatusBoard, "_signal", "status"),
                (NotifierModule, "_on_decision", "notifier"), (StrategyModule, "_on_decision", "strategy"),
                (OmsModule, "_on_decisions", "oms"), (RiskModule, "_on_signals", "risk"))
    for cls, method, name in handlers:
        original = getattr(cls, method)

        def noting(self, msg, original=original, name=name):
            for m in msg if isinstance(msg, list) else [msg]:
                calls.append((name, m.signal_id or m.order.client_order_id))
            return original(self, msg)

        monkeypatch.setattr(cls, method, noting)


async def test_risk_and_the_oms_handle_a_signal_and_its_decision_before_their_observers(monkeypatch):
    from services.app.monolith import Monolith

    calls: list[tuple[str, str]] = []
    note_calls(monkeypatch, calls)
    app = Monolith(AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=60.0, symbols=["SBIN-EQ"]),
                   {"strategy": {"strategies": []}})
    StatusBoard(app.bus, now_ns=app.clock.now_ns, out=io.StringIO())  # subscribed first, as `neopulse run` does
    stop = asyncio.Event()

    async def trader() -> None:
        try:
            sbin = await started_sbin(app)
            manual = await place_once_priced(app.bus, sbin)
            await app.bus.drain()
            await app.bus.publish(Topic.SIGNALS, trading_pb2.Signal(
                signal_id="sig-1", strategy="T", token=sbin.token, exchange_segment=sbin.exchange_segment,
                symbol=sbin.symbol, side=trading_pb2.SIDE_SELL, quantity=1, order_type=trading_pb2.ORDER_TYPE_MARKET,
                product=trading_pb2.PRODUCT_MIS, tick_recv_ns=time.time_ns()))
            await app.bus.drain()
            calls.append(("done", manual))
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[trader], stop=stop), 60)

    manual = calls[-1][1]
    decision = [name for name, key in calls if key == manual]
    assert decision[0] == "oms" and sorted(decision[1:]) == ["done", "notifier", "status", "strategy"]
    signal = [name for name, key in calls if key == "sig-1"]
    assert signal[:2] == ["risk", "oms"] and sorted(signal[2:]) == ["notifier", "status", "status", "strategy"]
