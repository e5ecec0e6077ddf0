"""Risk's daily-loss check on tick batches: live, at most every loss_check_interval_ms of the machine's clock; in a
backtest (clock-driven modules), after every batch, so that whether a batch's own prices move the state before the
signals made from that batch are decided follows the data, not how fast the machine replayed it.

Long 100 RELIANCE at 1,290; a batch at 1,278 takes the day's loss to Rs 1,200, past daily_loss_reducing (Rs 1,000).
The interval is a minute here: the machine's clock cannot have moved past it between the two batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.risk.config import RiskSettings
from services.risk.engine import REDUCING
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, risk_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.risk.factories import RELIANCE, fill


async def list_instruments(_: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
    return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())


@pytest.fixture
async def long_reliance(clock: ManualClock) -> AsyncIterator[tuple[Bus, RiskModule]]:
    """A started risk module (a bus of its own, loss checks a minute apart on the machine's clock) holding 100
    RELIANCE bought at 1,290, its loss evaluated at that price by a first batch; clock_driven as the test sets it."""
    bus = Bus()
    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    settings = load(RiskSettings, {}, daily_loss_reducing=1000, daily_loss_halt=5000, loss_check_interval_ms=60_000)
    module = RiskModule(bus, settings, clock)
    running = asyncio.create_task(bus.run())
    try:
        yield bus, module
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def start_holding(bus: Bus, module: RiskModule) -> None:
    await module.start()
    await bus.publish(Topic.ORDER_UPDATES, fill(trading_pb2.SIDE_BUY, 100, 1290_00))
    await bus.quiet()
    await replay_batch(bus, module, 1290_00)  # evaluated: the next check on the machine's clock is a minute away


async def replay_batch(bus: Bus, module: RiskModule, price: int) -> None:
    clock = module.clock
    assert isinstance(clock, ManualClock)
    clock.set(clock.now_ns() + 1_000_000_000)
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=RELIANCE, exchange_segment="nse_cm", ts_ns=clock.now_ns(), ltp_paise=price, ltq=1)]))
    await bus.quiet()


async def test_in_a_backtest_risk_evaluates_the_daily_loss_at_every_tick_batch(long_reliance):
    bus, module = long_reliance
    module.clock_driven = True  # as Monolith.build makes it for a backtest
    await start_holding(bus, module)

    await replay_batch(bus, module, 1278_00)

    assert module.engine.state == REDUCING


async def test_live_risk_evaluates_the_daily_loss_of_tick_batches_at_most_every_loss_check_interval(long_reliance):
    bus, module = long_reliance
    await start_holding(bus, module)

    await replay_batch(bus, module, 1278_00)

    assert module.engine.state == risk_pb2.TRADING_STATE_ACTIVE  # until the next check, or risk's timer
