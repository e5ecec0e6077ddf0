"""The tick store going away is told to the trader: a day's stored ticks with a hole in it (the next morning's warm-up
candles, every backtest of the day) is otherwise found out much later. Told once it has lasted, its lost ticks while
they grow, and its end with the ticks it lost."""

from __future__ import annotations

import asyncio
from datetime import date

from services.ingestion import watch
from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from services.ingestion.tick_writer import TickWriter
from shared.bus import Bus, Topic
from shared.clock import Clock, ManualClock, ist_ns
from shared.contracts import market_pb2, ops_pb2
from shared.db.config import DatabaseSettings
from tests.db.test_tick_writer import refusing_connections
from tests.helpers import eventually


class SteadySource:
    """Ten trades every 5 ms."""

    name = "steady"

    def __init__(self, clock: Clock) -> None:
        self.clock, self.stats = clock, SourceStats(connected=True)

    async def instruments(self):
        return [market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm")]

    async def batches(self):
        volume = 100
        while True:
            volume += 10
            yield market_pb2.TickBatch(ticks=[market_pb2.Tick(
                token=2885, exchange_segment="nse_cm", ts_ns=self.clock.now_ns(), ltp_paise=129_000, ltq=1,
                volume=volume) for _ in range(10)])
            await asyncio.sleep(0.005)

    async def reconnect(self, reason: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_tick_store_outage_and_the_ticks_it_lost_are_told(db_pool, database, pg_server, running,
                                                                   monkeypatch):
    monkeypatch.setattr(watch, "STORE_DOWN_TOLD_AFTER_S", 0.3)  # 30 s in production
    bus, notes = Bus(), []

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    clock = ManualClock(ist_ns(date(2025, 11, 25), 10, 0))
    writer = TickWriter(db_pool, DatabaseSettings(writer_buffer_rows=2_000, writer_batch_rows=50,
                                                  writer_flush_interval_ms=20), clock=clock)
    await running(IngestionModule(bus, IngestionSettings(), SteadySource(clock), clock, tick_sink=writer))
    await eventually(lambda: writer.persisted > 0)

    async with refusing_connections(pg_server, database.rsplit("/", 1)[1]):  # the database away, for a while
        await eventually(lambda: writer.dropped > 0 and len(notes) >= 2, within=10)
    await eventually(lambda: any(n.title == "Tick store back" for n in notes), within=10)

    assert [(n.title, n.severity) for n in notes] + [notes[-1].text] == [
        ("Tick store unavailable", ops_pb2.SEVERITY_WARNING), ("Tick store dropping ticks", ops_pb2.SEVERITY_WARNING),
        ("Tick store back", ops_pb2.SEVERITY_WARNING), f"Ticks are stored again; {writer.dropped} ticks lost."]
