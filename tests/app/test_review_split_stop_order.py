"""A split OMS stopping places the decisions still queued and records their fills: its broker-event loop runs until
the OMS has stopped (the monolith's order), not cancelled before the drain that places them."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.app import split as split_mod
from services.app.config import AppSettings
from services.app.split import Needs, SplitProcess, SplitSettings
from services.risk.module import RiskModule
from services.risk.state import PUBLISHED, STOPPED, MemoryRiskState
from shared import rpc
from shared.bus import Topic
from shared.contracts import ingestion_pb2
from shared.contracts import trading_pb2 as t
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from tests.oms.helpers import order, tick


@pytest.fixture
def lone_oms(monkeypatch: pytest.MonkeyPatch) -> SplitProcess:
    """A split OMS process (no database) that needs no other process."""
    monkeypatch.setattr(split_mod, "STARTS_AFTER", {})
    monkeypatch.setattr(split_mod, "NEEDS", {**split_mod.NEEDS, "oms": Needs()})
    app = AppSettings(source="synthetic", use_database=False, speed=1.0, symbols=["SBIN-EQ"])
    return SplitProcess("oms", app, SplitSettings(session_wall_start_ns=time.time_ns()), GrpcSettings(), {}, 0)


async def test_a_decision_still_queued_when_the_split_oms_stops_is_placed_and_its_fill_recorded(lone_oms, monkeypatch):
    stop_serving = GrpcServer.stop_serving

    async def stop_serving_as_a_decision_arrives(self: GrpcServer, grace: float) -> None:
        await stop_serving(self, grace)
        # Risk's last decision, delivered by the decisions bridge just before the stop ends it: queued on the bus.
        await lone_oms.bus.publish(Topic.ORDERS, t.RiskDecision(accepted=True, signal_id="s-1", order=order(
            kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="late-1")))

    monkeypatch.setattr(GrpcServer, "stop_serving", stop_serving_as_a_decision_arrives)
    stop = asyncio.Event()
    runner = asyncio.create_task(lone_oms.run(stop))
    await asyncio.wait_for(lone_oms.started.wait(), 30)
    oms = next(s for s in lone_oms.bus.subscriptions() if s.topic == Topic.TICKS).handler.__self__
    await lone_oms.bus.publish(Topic.TICKS, tick(100_00, bid=99_95, ask=100_05, ts_ns=lone_oms.clock().now_ns()))
    await lone_oms.bus.drain(2.0)

    stop.set()
    await asyncio.wait_for(runner, 60)

    row = await oms.ledger.get("late-1")  # the paper broker filled it on arrival
    assert (t.OrderStatus.Name(row.status), row.filled_quantity) == ("ORDER_STATUS_TRADED", 10)


async def test_split_risk_publishes_no_decision_after_saving_its_state_as_a_clean_stop(monkeypatch):
    """run() (risk's timer: square-off orders) outlives stop() in the ordered stop: a decision published while the
    state was saved as a clean stop was above its saved mark, so the next process would tell the OMS its
    predecessor stopped cleanly short of it (a lost square-off untold)."""
    monkeypatch.setattr(split_mod, "STARTS_AFTER", {})
    monkeypatch.setattr(split_mod, "NEEDS", {**split_mod.NEEDS, "risk": Needs()})
    saves: list[dict] = []
    original_save = MemoryRiskState.save

    async def slow_save(self, state):  # a database write takes a few ms; a loaded one longer
        await asyncio.sleep(0.5)
        saves.append(state)
        await original_save(self, state)

    monkeypatch.setattr(MemoryRiskState, "save", slow_save)
    stopping = asyncio.Event()
    original_stop = RiskModule.stop

    async def stop(self):
        stopping.set()
        await original_stop(self)

    monkeypatch.setattr(RiskModule, "stop", stop)
    app = AppSettings(source="synthetic", use_database=False, speed=1.0, symbols=["SBIN-EQ"])
    process = SplitProcess("risk", app, SplitSettings(session_wall_start_ns=time.time_ns()), GrpcSettings(), {}, 0)

    async def no_instruments(_req):
        return ingestion_pb2.ListInstrumentsResponse()

    process.bus.handle(rpc.LIST_INSTRUMENTS, no_instruments)
    published: list[int] = []

    async def on_decision(d):
        published.append(d.sequence)

    process.bus.subscribe(Topic.ORDERS, "test", on_decision)
    stop = asyncio.Event()
    runner = asyncio.create_task(process.run(stop))
    await asyncio.wait_for(process.started.wait(), 30)
    risk = next(s for s in process.bus.subscriptions() if s.topic == Topic.SIGNALS).handler.__self__
    # The square-off time arrives for one MIS position while the process stops: run()'s timer orders its exit.
    due = [order(client_order_id="sq-1")]
    monkeypatch.setattr(risk.engine, "square_off_due", lambda: [due.pop()] if stopping.is_set() and due else [])

    stop.set()
    await asyncio.wait_for(runner, 60)

    last = saves[-1]
    assert last[STOPPED] and all(sequence <= last[PUBLISHED]["all"] for sequence in published), (last, published)
