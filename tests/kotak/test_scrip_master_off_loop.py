"""Reading Kotak's scrip master (at start, and again each trading day at 08:45 IST while risk, the OMS and the
strategies run on the same event loop) does not hold that loop: ~100,000 rows of nse_fo are parsed in a thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from services.ingestion.kotak_source import KotakFeedSource
from services.simulator.server import Simulator
from shared.contracts import market_pb2
from shared.kotak.session import KotakSession
from tests.kotak.conftest import settings_for

CONTRACTS = 40_000


@pytest.fixture
async def big_sim() -> AsyncIterator[Simulator]:
    options = [market_pb2.Instrument(token=40_000 + i, symbol=f"NIFTY26MAR{20_000 + i}CE", exchange_segment="nse_fo",
                                     lot_size=65, tick_size_paise=5, freeze_quantity=1801) for i in range(CONTRACTS)]
    simulator = Simulator(tick_interval=None, instruments=options)
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_reading_a_large_scrip_master_leaves_the_event_loop_free(big_sim):
    session = KotakSession(settings_for(big_sim))
    await session.login()
    source = KotakFeedSource(session.settings, ["nse_fo:NIFTY26MAR20000CE"], session=session)
    worst = 0.0

    async def beat() -> None:
        nonlocal worst
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - began)

    beating = asyncio.create_task(beat())
    await asyncio.sleep(0.02)
    (instrument,) = (await source._configured())[0]
    await asyncio.sleep(0.05)
    beating.cancel()

    assert (instrument.symbol, worst < 0.25) == ("NIFTY26MAR20000CE", True), f"the loop was held {worst:.2f} s"
