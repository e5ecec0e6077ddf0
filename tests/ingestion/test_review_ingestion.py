"""Ingestion module, reviewed: a replay never outruns the tick consumers (no drops, no clock ahead of them), its end
is announced and never taken for a stall, a failing tick sink never stops market data, a dead feed is not hammered."""

from __future__ import annotations

import asyncio
from datetime import date

from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.replay import ReplaySource
from services.ingestion.source import SourceStats
from services.ingestion.synthetic import SyntheticSource
from shared.bus import Bus, Topic
from shared.clock import ManualClock, SimClock, ist_ns
from shared.contracts import market_pb2, ops_pb2
from tests.helpers import eventually
from tests.ingestion.test_review_replay import store, tick

DAY = date(2026, 1, 20)  # a Tuesday


def notes_of(bus: Bus) -> list[ops_pb2.Notification]:
    notes: list[ops_pb2.Notification] = []

    async def on_note(note):
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    return notes


async def test_a_flat_out_replay_hands_every_tick_to_a_slow_consumer_before_moving_the_clock(db_pool, running):
    n = 600  # one timestamp each: 600 batches against a queue of 20
    await store(db_pool, [tick(2885, ist_ns(DAY, 10, 0) + i * 1_000_000, 100 + i) for i in range(n)])
    bus, clock, seen = Bus(), ManualClock(0), []

    async def on_ticks(batch):  # what the strategy does: candles close on this clock
        seen.extend((t.ltp_paise, t.ts_ns, clock.now_ns()) for t in batch.ticks)

    bus.subscribe(Topic.TICKS, "strategy", on_ticks, maxsize=20)
    source = ReplaySource(db_pool, [], ist_ns(DAY, 9, 0), ist_ns(DAY, 16, 0), clock, speed=0)
    await running(IngestionModule(bus, IngestionSettings(), source, clock))

    await eventually(source.done.is_set, within=10)
    await eventually(lambda: len(seen) >= n or bus.subscriptions()[0].dropped > 0, within=10)

    assert [ltp for ltp, _, _ in seen] == [100 + i for i in range(n)]
    assert all(now == ts for _, ts, now in seen)  # the clock never ran ahead of the ticks being handled


async def test_the_end_of_a_replay_is_announced_and_the_quiet_after_it_is_not_a_stall(db_pool, running):
    await store(db_pool, [tick(2885, ist_ns(DAY, 10, 0), 100)])
    bus, clock = Bus(), ManualClock(0)
    notes = notes_of(bus)
    source = ReplaySource(db_pool, [], ist_ns(DAY, 9, 15), ist_ns(DAY, 12, 0), clock, speed=0)  # ends mid-session
    module = await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.1), source, clock))

    await eventually(lambda: any(n.title == "Market data ended" for n in notes), within=5)
    await asyncio.sleep(0.5)  # five stall periods of silence in market hours

    assert module.ticks_total == 1 and source.stats.reconnects == 0
    assert [n.title for n in notes] == ["Market data ended"]


class FailingSink:
    """A tick sink with a bug: offer raises, run dies."""

    def __init__(self):
        self.offers = 0

    def offer(self, batch):
        self.offers += 1
        raise RuntimeError("sink bug")

    async def run(self):
        raise RuntimeError("sink task bug")

    async def close(self):
        pass


async def test_a_failing_tick_sink_never_stops_market_data(running):
    bus, seen = Bus(), []

    async def on_ticks(batch):
        seen.extend(batch.ticks)

    bus.subscribe(Topic.TICKS, "strategy", on_ticks)
    settings = IngestionSettings(ticks_per_second=5000, batch_interval_ms=5)
    clock = SimClock(speed=60)
    sink = FailingSink()
    module = await running(IngestionModule(bus, settings, SyntheticSource(settings, clock, ["SBIN-EQ"]), clock,
                                           tick_sink=sink))

    await eventually(lambda: sink.offers >= 3 and len(seen) >= 100, within=5)
    assert module.ticks_total >= len(seen) >= 100


class MuteSource:
    """Connected, silent: every reconnect leaves it as mute as before."""

    name = "mute"

    def __init__(self):
        self.stats = SourceStats(connected=True)

    async def instruments(self):
        return [market_pb2.Instrument(token=1, symbol="X", exchange_segment="nse_cm")]

    async def batches(self):
        await asyncio.Event().wait()
        yield  # pragma: no cover

    async def reconnect(self, reason):
        self.stats.reconnects += 1

    async def close(self):
        pass


async def test_a_feed_that_stays_mute_is_reconnected_with_backoff_and_reported_once(running):
    bus = Bus()
    notes = notes_of(bus)
    source = MuteSource()
    clock = ManualClock(ist_ns(DAY, 10, 0))
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.1), source, clock))

    await asyncio.sleep(1.6)  # every 0.1 s would be 15 reconnects; backing off 0.1, 0.2, 0.4, 0.8: 4

    assert 2 <= source.stats.reconnects <= 5
    assert len([n for n in notes if n.title == "Feed stalled"]) == 1


class SnapshotSource:
    """A feed's first batch after a (re)subscribe: an illiquid instrument's last trade, of yesterday, beside today's."""

    name = "snapshot"

    def __init__(self, ticks: list[market_pb2.Tick]) -> None:
        self.stats = SourceStats(connected=True)
        self._ticks = ticks

    async def instruments(self):
        return [market_pb2.Instrument(token=t.token, symbol=f"S{t.token}", exchange_segment="nse_cm")
                for t in self._ticks]

    async def batches(self):
        yield market_pb2.TickBatch(ticks=self._ticks)
        await asyncio.Event().wait()

    async def reconnect(self, reason: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_tick_of_an_earlier_day_is_published_but_not_stored(running):
    """Stored, yesterday's last trade would carry today's bid/ask into yesterday's partition: a backtest of that day
    would fill at quotes from the next one."""
    from tests.ingestion.test_ingestion import ListSink

    yesterday, today = tick(3045, ist_ns(DAY, 15, 29), 800_00), tick(2885, ist_ns(DAY, 15, 29) + 86_400 * 10**9, 12_90)
    bus, sink, seen = Bus(), ListSink(), []

    async def on_ticks(batch):
        seen.extend(batch.ticks)

    bus.subscribe(Topic.TICKS, "strategy", on_ticks)
    clock = ManualClock(ist_ns(date(2026, 1, 21), 9, 15))
    module = await running(IngestionModule(bus, IngestionSettings(), SnapshotSource([yesterday, today]), clock,
                                           tick_sink=sink))

    await eventually(lambda: len(seen) == 2)
    assert [t.token for b in sink.batches for t in b.ticks] == [2885] and module.earlier_day_ticks == 1
