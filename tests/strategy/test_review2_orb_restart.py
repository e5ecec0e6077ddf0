"""After a restart a restored ORB position keeps its stop, the opening range's other side, also when the warm-up could
not read the day's candles (its read failed or timed out, warm_up_timeout_s = 0): the day's complete ranges are kept
in the strategy's saved state. A position whose stop nothing gives back starts the strategy paused, with a CRITICAL
notification naming it, rather than ride any fall unwatched until the square-off.

Real parts: the StrategyModule on a real Bus, its state in the strategy_state table of an embedded PostgreSQL, the
OMS's ListOrders servicer over a MemoryLedger; the engine for the rule itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from services.oms.service import OrderService
from services.strategy.config import StrategySettings
from services.strategy.module import StrategyModule
from services.strategy.state import MemoryStrategyState, PgStrategyState
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2, strategy_pb2
from shared.marketdata import nse_instruments
from tests.strategy.test_orb import BUY, RANGE, SBIN, SELL, Desk, at, described
from tests.strategy.test_restore import Oms

SETTINGS = cfg.load(StrategySettings, {"strategy": {"strategies": [
    {"name": "orb", "kind": "ORB", "symbols": ["SBIN-EQ"], "params": {"range_minutes": 3}}]}})


def test_a_saved_range_gives_a_restored_long_its_stop_without_a_warm_up():
    before = Desk()
    before.ticks(*RANGE, ("09:18:02", 100_00))  # the range 99.00-101.00 complete
    after = Desk()  # restarted at 10:00, cold: no candle of the range fed
    after.clock.set(at("10:00:00"))
    after.engine.restore_state("orb", before.engine.durable_state("orb"), at("10:00:00"))
    after.filled(SimpleNamespace(signal_id="entry", side=BUY, quantity=1), 101_00)

    signals = after.ticks(("10:00:05", 99_50), ("10:00:06", 98_95))

    assert described(signals) == [(SELL, 1, 1, 0, "stop at the range's low ₹99.00: tick ₹98.95")]


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    """start(state, now_ns, oms) -> (a started module with its state in `state`, the notifications it sent)."""
    tasks: list[asyncio.Task] = []

    async def make(state: Any, now_ns: int, oms: Oms | None = None) -> tuple[StrategyModule, list[Any]]:
        bus, notes = Bus(), []

        async def list_instruments(_: Any) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

        async def on_note(note: ops_pb2.Notification) -> None:
            notes.append(note)

        bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        if oms is not None:
            oms_service = OrderService(bus, None, SimpleNamespace(ledger=oms.ledger))  # type: ignore[arg-type]
            bus.handle(rpc.LIST_ORDERS, oms_service.list_orders)
        bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
        module = StrategyModule(bus, SETTINGS, ManualClock(now_ns), None, state)  # no history: no warm-up
        tasks.append(asyncio.create_task(bus.run()))
        await module.start()
        assert await bus.drain()
        return module, notes

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def entered_at_0920() -> Oms:
    """The OMS's ledger: a long of 1 bought at 101.00 at 09:20."""
    oms = Oms()
    await oms.order("entry", "orb", BUY, 1, at("09:20:00"))
    row = await oms.ledger.get("entry")
    assert row is not None
    row.average_price_paise, row.sequence = 101_00, oms.next()
    await oms.ledger.record(row, {})
    return oms


def position(module: StrategyModule) -> strategy_pb2.StrategyPosition:
    engine = module.engine
    assert engine is not None
    (held,) = engine.info(engine.strategies["orb"]).positions
    return held


async def test_a_range_completed_live_is_saved_and_gives_the_position_its_stop_after_a_cold_restart(db_pool, start):
    first, _ = await start(PgStrategyState(db_pool), at("09:15:00"))
    ticks = [market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=at(when), ltp_paise=price, ltq=1)
             for when, price in [*RANGE, ("09:18:02", 100_00)]]
    first.bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=ticks))
    assert await first.bus.drain()

    again, notes = await start(PgStrategyState(db_pool), at("10:00:00"), await entered_at_0920())

    assert (position(again).stop_paise, position(again).target_paise, notes) == (99_00, 105_00, [])


async def test_a_restored_position_with_no_stop_known_is_named_critical_and_the_strategy_runs_on(start):
    """Not paused: a paused strategy sends nothing, its other positions' stops included."""
    module, notes = await start(MemoryStrategyState(), at("10:00:00"), await entered_at_0920())

    strategy = module.engine.strategies["orb"]
    assert (strategy.paused, [(n.severity, n.fields["strategy"]) for n in notes]) == (
        False, [(ops_pb2.SEVERITY_CRITICAL, "orb")])
    assert "SBIN-EQ (+1 at ₹101.00)" in notes[0].text
