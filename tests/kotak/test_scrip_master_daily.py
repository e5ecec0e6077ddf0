"""The ingestion module over KotakFeedSource (real SDK, simulator) across days: Kotak's scrip master is read again at
08:45 IST of each trading day, so ListInstruments gives that day's terms; files not of today, a re-read Kotak does
not answer and a configured contract gone from it are told, the list held kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest

from services.ingestion.config import IngestionSettings
from services.ingestion.kotak_source import KotakFeedSource
from services.ingestion.module import IngestionModule
from services.simulator.server import Simulator
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2
from tests.helpers import eventually
from tests.kotak.conftest import RELIANCE, TCS, settings_for

TUESDAY_10 = ist_ns(date(2025, 11, 25), 10, 0)
WEDNESDAY_0846 = ist_ns(date(2025, 11, 26), 8, 46)


class Running:
    """An ingestion module over the Kotak source, its bus running, collecting the notifications it publishes."""

    def __init__(self, sim: Simulator, symbols: list[str]) -> None:
        self.clock = ManualClock(TUESDAY_10)
        self.bus = Bus()
        self.notes: list[ops_pb2.Notification] = []
        source = KotakFeedSource(settings_for(sim), symbols, clock=self.clock)
        self.module = IngestionModule(self.bus, IngestionSettings(stall_seconds=0.2), source, self.clock)

    def told(self, title: str) -> list[ops_pb2.Notification]:
        return [n for n in self.notes if n.title == title]

    async def listed(self) -> list[market_pb2.Instrument]:
        reply = await self.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        return list(reply.instruments)

    async def start(self) -> None:
        async def on_note(note: ops_pb2.Notification) -> None:
            self.notes.append(note)

        self.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
        self.tasks = [asyncio.create_task(self.bus.run())]
        await self.module.start()
        self.tasks.append(asyncio.create_task(self.module.run()))

    async def stop(self) -> None:
        for task in reversed(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.module.stop()


@pytest.fixture
async def running(sim: Simulator) -> AsyncIterator[Running]:
    world = Running(sim, ["RELIANCE-EQ", "TCS-EQ"])
    await world.start()
    yield world
    await world.stop()


def in_master(sim: Simulator, token: int) -> market_pb2.Instrument:
    return next(i for i in sim.instruments if i.token == token)


async def test_the_next_trading_days_scrip_master_is_listed_from_0845_ist(sim, running):
    in_master(sim, RELIANCE).freeze_quantity = 4321  # the exchange revised it overnight
    running.clock.set(WEDNESDAY_0846)

    async def revised() -> bool:
        return [i.freeze_quantity for i in await running.listed() if i.token == RELIANCE] == [4321]

    await eventually(revised)


async def test_files_whose_date_folder_is_not_today_are_told(sim):
    # Kotak's layout, .../<day>/<file>; the simulator serves the file from the folder above it.
    yesterday = f"{sim.base_url}/scrip-master/2025-11-24/../nse_cm-v1.csv"
    sim.fail_next("scrip_master", 200, body={"data": {"filesPaths": [yesterday]}})
    world = Running(sim, ["RELIANCE-EQ"])
    await world.start()
    try:
        await eventually(lambda: world.told("Instrument master not today's"))
    finally:
        await world.stop()

    assert "dated 2025-11-24, not today (2025-11-25)" in world.told("Instrument master not today's")[0].text


async def test_a_reread_kotak_does_not_answer_keeps_the_list_held_and_is_told(sim, running):
    held = await running.listed()
    sim.fail_next("scrip_master", 503)
    running.clock.set(WEDNESDAY_0846)

    await eventually(lambda: running.told("Instrument master not read again"))

    assert await running.listed() == held


async def test_a_configured_contract_gone_from_todays_master_keeps_the_list_and_names_it(sim, running):
    sim.instruments.remove(in_master(sim, TCS))  # delisted (or an expired contract) overnight
    running.clock.set(WEDNESDAY_0846)

    await eventually(lambda: running.told("Instrument master not read again"))

    assert ("'TCS-EQ'" in running.told("Instrument master not read again")[0].text,
            [i.token for i in await running.listed()]) == (True, [RELIANCE, TCS])
