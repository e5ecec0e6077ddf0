"""The feed stall watchdog keeps the trader's market hours (`[risk] sessions`, made the process's at start), not the
built-in ones: an MCX agri contract is mute after its 17:00 close, and a watchdog still on MCX's 23:30 would reconnect
and send "Feed still stalled" CRITICAL every 5 minutes all evening, every evening."""

from __future__ import annotations

import asyncio
from datetime import date

from services.ingestion import module as ingestion_module
from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2, ops_pb2

EVENING = ist_ns(date(2026, 1, 21), 18, 0)  # a Wednesday, an hour after the configured mcx_fo close


class MuteCottonSource:
    """An MCX agri contract's feed after its close: connected, nothing trades."""

    name = "mute"

    def __init__(self) -> None:
        self.stats = SourceStats(connected=True)

    async def instruments(self):
        return [market_pb2.Instrument(token=449_534, symbol="COTTONCNDY26JANFUT", exchange_segment="mcx_fo",
                                      lot_size=1, tick_size_paise=1)]

    async def batches(self):
        await asyncio.Event().wait()
        yield  # pragma: no cover

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        pass


async def test_a_feed_mute_after_the_configured_close_is_no_stall(running, market_sessions, monkeypatch):
    monkeypatch.setattr(ingestion_module, "STALL_CRITICAL_S", 0.2)  # 2 min in production
    market_sessions(mcx_fo="09:00-17:00")
    bus, source = Bus(), MuteCottonSource()
    notes: list[str] = []

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note.title)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.1), source, ManualClock(EVENING)))

    await asyncio.sleep(0.6)  # told "Feed stalled" at 0.1 s and "Feed still stalled" at 0.2 s were it open

    assert (source.stats.reconnects, notes) == (0, [])
