"""The ingestion module's watch over what the feed delivers: ticks shed for a slow consumer are counted as ticks and
told, and a feed running behind the exchange is told once per episode, and again when it catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date

from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2
from tests.helpers import eventually

OPEN = ist_ns(date(2025, 11, 25), 10, 0)  # a Tuesday, market open
RELIANCE, TCS = 2885, 11536


def trade(token: int, ts_ns: int, ltp: int, ltq: int = 1) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=ltq, recv_ns=1)


class ScriptedSource:
    """A feed whose clock moves on 20 ms a batch; `ticks(n, now_ns)` is the n-th batch. With `frames`, it ends after
    that many batches, or (with `then_wait`) falls silent without ending."""

    name = "scripted"

    def __init__(self, clock: ManualClock, ticks: Callable[[int, int], list[market_pb2.Tick]],
                 frames: int | None = None, then_wait: bool = False, pace_s: float = 0.02) -> None:
        self.clock, self.ticks, self.frames, self.then_wait, self.pace_s = clock, ticks, frames, then_wait, pace_s
        self.stats = SourceStats(connected=True)

    async def instruments(self):
        return [market_pb2.Instrument(token=RELIANCE, symbol="RELIANCE-EQ", exchange_segment="nse_cm"),
                market_pb2.Instrument(token=TCS, symbol="TCS-EQ", exchange_segment="nse_cm")]

    async def batches(self):
        n = 0
        while self.frames is None or n < self.frames:
            await asyncio.sleep(self.pace_s)
            n += 1
            self.clock.set(OPEN + n * 20_000_000)
            yield market_pb2.TickBatch(ticks=self.ticks(n, self.clock.now_ns()))
        if self.then_wait:
            await asyncio.Event().wait()

    async def reconnect(self, reason):
        self.stats.reconnects += 1

    async def close(self): ...


def frame_of_ten(n: int, now_ns: int) -> list[market_pb2.Tick]:
    return [trade(RELIANCE, now_ns, 129_000 + n * 10 + i) for i in range(10)]


def slow_consumer(bus: Bus) -> None:
    async def stuck(batch):
        await asyncio.Event().wait()

    bus.subscribe(Topic.TICKS, "slow-strategy", stuck, maxsize=1)  # holds one batch; takes nothing more


def collect(bus: Bus) -> list[ops_pb2.Notification]:
    notes: list[ops_pb2.Notification] = []

    async def on_note(note):
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    return notes


async def test_feed_status_counts_the_ticks_of_the_batches_shed_not_the_batches():
    bus, clock = Bus(), ManualClock(OPEN)
    slow_consumer(bus)
    module = IngestionModule(bus, IngestionSettings(), ScriptedSource(clock, frame_of_ten, frames=4, pace_s=0), clock)

    await module._pump()

    status = await module._feed_status(ingestion_pb2.GetFeedStatusRequest())
    assert status.dropped_ticks == 30  # three frames of ten shed for the one the consumer holds


async def test_ticks_shed_for_a_slow_consumer_are_told_naming_it(running):
    bus, clock = Bus(), ManualClock(OPEN)
    slow_consumer(bus)
    notes = collect(bus)
    source = ScriptedSource(clock, frame_of_ten, frames=4, then_wait=True, pace_s=0)  # all before the watchdog wakes
    module = await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await eventually(lambda: notes)

    assert [(n.title, n.severity, n.text.split(" fell ")[0]) for n in notes] == [
        ("Ticks dropped", ops_pb2.SEVERITY_WARNING, f"{module.dropped_ticks} ticks shed because slow-strategy")]


async def test_a_feed_whose_trades_run_30_s_behind_is_told_delayed_once(running):
    bus, clock = Bus(), ManualClock(OPEN)
    notes = collect(bus)
    source = ScriptedSource(clock, lambda n, now: [trade(RELIANCE, now - 30 * NS, 129_000 + n)])
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await asyncio.sleep(1.0)  # about 20 watchdog windows, every trade 30 s old

    assert [(n.title, n.severity, n.kind) for n in notes] == [
        ("Feed delayed", ops_pb2.SEVERITY_WARNING, ops_pb2.NOTIFICATION_KIND_FEED)]


async def test_a_delayed_feed_that_catches_up_is_told_cleared(running):
    bus, clock = Bus(), ManualClock(OPEN)
    notes = collect(bus)
    source = ScriptedSource(clock, lambda n, now: [trade(RELIANCE, now - (30 * NS if n <= 25 else 0), 129_000 + n)])
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await eventually(lambda: len(notes) >= 2)

    assert [n.title for n in notes] == ["Feed delayed", "Feed delay cleared"]


async def test_an_old_trade_time_now_and_then_among_fresh_trades_is_no_delay(running):
    """Every third batch is TCS's last trade of ten minutes ago (a subscribe snapshot of a thin contract); RELIANCE
    trades this second in the others: the feed is on time."""
    bus, clock = Bus(), ManualClock(OPEN)
    notes = collect(bus)
    source = ScriptedSource(clock, lambda n, now: [trade(TCS, now - 600 * NS, 345_000 + n) if n % 3 == 0
                                                   else trade(RELIANCE, now, 129_000 + n)])
    module = await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await asyncio.sleep(0.6)

    assert module.ticks_total > 20 and not notes


async def test_quote_updates_carrying_an_old_trade_time_are_no_delay(running):
    """A depth update that traded nothing (ltq 0) carries the last trade's time, however old."""
    bus, clock = Bus(), ManualClock(OPEN)
    notes = collect(bus)
    source = ScriptedSource(clock, lambda n, now: [trade(RELIANCE, now - 600 * NS, 129_000, ltq=0)])
    module = await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await asyncio.sleep(0.6)

    assert module.ticks_total > 20 and not notes
