"""A feed stall is told when it starts, told again (CRITICAL) while it lasts in market hours, and told when ticks come
back: the trader can tell a 20-second blip from a feed dead for the session (stops watched on ticks blind)."""

from __future__ import annotations

import asyncio
from datetime import date

from services.ingestion import module as ingestion_module
from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from shared.bus import Bus, Topic
from shared.clock import Clock, ManualClock, ist_ns
from shared.contracts import market_pb2, ops_pb2
from tests.helpers import eventually

OPEN = ist_ns(date(2025, 11, 25), 10, 0)  # a Tuesday, market open
WARNING, CRITICAL, INFO = ops_pb2.SEVERITY_WARNING, ops_pb2.SEVERITY_CRITICAL, ops_pb2.SEVERITY_INFO


def notes_of(bus: Bus) -> list[ops_pb2.Notification]:
    notes: list[ops_pb2.Notification] = []

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    return notes


class BlipSource:
    """Connected and mute until `resume` is set (every reconnect brings nothing), then a trade every 20 ms."""

    name = "blip"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.stats = SourceStats(connected=True)
        self.resume = asyncio.Event()

    async def instruments(self):
        return [market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm")]

    async def batches(self):
        await self.resume.wait()
        volume = 100
        while True:
            volume += 1
            yield market_pb2.TickBatch(ticks=[market_pb2.Tick(
                token=2885, exchange_segment="nse_cm", ts_ns=self.clock.now_ns(), ltp_paise=129_000, ltq=1,
                volume=volume)])
            await asyncio.sleep(0.02)

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        pass


async def test_ticks_back_after_a_told_stall_are_told_with_the_reconnects_it_took(running):
    bus, clock = Bus(), ManualClock(OPEN)
    notes = notes_of(bus)
    source = BlipSource(clock)
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.1), source, clock))
    await eventually(lambda: source.stats.reconnects >= 3)  # three reconnects that brought nothing

    source.resume.set()

    await eventually(lambda: any(n.title == "Feed back" for n in notes))
    reconnects = source.stats.reconnects
    assert [(n.title, n.severity, f"({reconnects} reconnects)" in n.text) for n in notes] == [
        ("Feed stalled", WARNING, False), ("Feed back", INFO, True)]


async def test_a_stall_that_lasts_is_told_again_as_critical(running, monkeypatch):
    monkeypatch.setattr(ingestion_module, "STALL_CRITICAL_S", 0.5)  # 2 min in production
    monkeypatch.setattr(ingestion_module, "STALL_TOLD_EVERY_S", 0.5)  # 5 min in production
    bus, clock = Bus(), ManualClock(OPEN)
    notes = notes_of(bus)
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.1), BlipSource(clock), clock))

    await eventually(lambda: len(notes) >= 3)  # told at 0.1 s, again at 0.5 s and 1.0 s

    assert [(n.title, n.severity) for n in notes[:3]] == [
        ("Feed stalled", WARNING), ("Feed still stalled", CRITICAL), ("Feed still stalled", CRITICAL)]
