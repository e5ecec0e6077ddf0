"""This machine's clock minutes behind the exchange's (an unsynced VPS, WSL after a laptop sleep) makes every valid
Kotak tick "ahead" of it (AHEAD_NS): each is skipped, but said in one log line and a summary a minute, not a line per
tick, and the trader is told the clock is behind (no reconnect helps) rather than only that the feed stalled."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

from services.ingestion.config import IngestionSettings
from services.ingestion.kotak_source import KotakFeedSource
from services.ingestion.module import IngestionModule
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, ops_pb2
from shared.kotak.config import KotakSettings
from tests.helpers import eventually
from tests.ingestion.test_fuzz_feed import Fuzzer, Harness
from tests.ingestion.test_fuzz_feed import harness as harness  # the fixture

EXCHANGE_NS = ist_ns(date(2025, 11, 25), 10, 0)  # a Tuesday, market open
BEHIND_S = 360  # this machine's clock, 6 minutes behind the exchange's


def test_ticks_refused_as_ahead_of_a_slow_clock_are_logged_once_not_one_line_each(harness: Harness, caplog):
    harness.src.clock = ManualClock(EXCHANGE_NS - BEHIND_S * NS)
    fz = Fuzzer(seed=1)
    fz.ts_ns = EXCHANGE_NS - 50 * NS  # trade times 1 s apart, right by the exchange's clock

    with caplog.at_level(logging.WARNING, logger="services.ingestion.kotak_source"):
        for _ in range(500):
            harness.feed(fz.valid_packet(lite=False))

    lines = [r for r in caplog.records if r.name == "services.ingestion.kotak_source"]
    assert (len(lines), harness.src.stats.malformed_packets) == (1, 500)  # all 500 skipped, said once


class FedFeed(KotakFeedSource):
    """The Kotak source fed simulator-encoded market pictures through the SDK's frame handler (no socket), each
    trade at the exchange's time, every 5 ms."""

    def __init__(self, settings: KotakSettings, clock: ManualClock) -> None:
        super().__init__(settings, ["RELIANCE-EQ", "TCS-EQ"], clock=clock)
        self.harness = Harness(self)

    async def batches(self):
        fz = Fuzzer(seed=2)
        while True:
            fz.ts_ns = EXCHANGE_NS - NS  # the next packet's trade time: the exchange's now
            ticks = self.harness.feed(fz.valid_packet(lite=False))
            if ticks:
                yield market_pb2.TickBatch(ticks=ticks)
            await asyncio.sleep(0.005)

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1


async def test_a_machine_clock_behind_the_exchange_is_told_with_how_far(harness: Harness, running):
    bus, notes = Bus(), []

    async def on_note(note: ops_pb2.Notification) -> None:
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    clock = ManualClock(EXCHANGE_NS - BEHIND_S * NS)
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.4), FedFeed(harness.src.settings, clock),
                                  clock))

    await eventually(lambda: any(n.title == "Clock behind" for n in notes))

    told = next(n for n in notes if n.title == "Clock behind")
    assert (told.severity, f"~{BEHIND_S} s behind" in told.text) == (ops_pb2.SEVERITY_CRITICAL, True)
