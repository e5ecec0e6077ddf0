"""Ingestion on the synthetic source: ticks reach the bus and the sink; RPCs; the stall watchdog."""

import asyncio
from datetime import date

import pytest

from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from services.ingestion.synthetic import SyntheticSource, resolve_symbols
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, SimClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2
from shared.errors import ConfigError
from tests.helpers import eventually as until


class ListSink:
    def __init__(self):
        self.batches = []

    def offer(self, batch):
        self.batches.append(batch)

    async def run(self):
        await asyncio.Event().wait()

    async def close(self):
        self.closed = True


async def test_synthetic_ticks_reach_subscribers_and_the_tick_sink(running):
    bus, sink, seen = Bus(), ListSink(), []

    async def on_ticks(batch):
        seen.extend(batch.ticks)

    bus.subscribe(Topic.TICKS, "test", on_ticks)
    settings = IngestionSettings(ticks_per_second=5000, batch_interval_ms=5)
    source = SyntheticSource(settings, SimClock(speed=60), ["RELIANCE-EQ", "TCS-EQ"])
    await running(IngestionModule(bus, settings, source, SimClock(speed=60), tick_sink=sink))
    await until(lambda: len(seen) >= 200)
    assert {t.token for t in seen} == {2885, 11536}
    assert all(t.ltp_paise % 5 == 0 and t.recv_ns > 0 for t in seen)
    assert sum(len(b.ticks) for b in sink.batches) >= 200


async def test_list_instruments_and_feed_status_are_served_on_the_bus(running):
    bus = Bus()
    settings = IngestionSettings(ticks_per_second=1000)
    source = SyntheticSource(settings, SimClock(speed=60), ["SBIN-EQ"])
    module = await running(IngestionModule(bus, settings, source, SimClock(speed=60)))
    reply = await bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
    assert [(i.symbol, i.token, i.tick_size_paise, i.lot_size) for i in reply.instruments] == [("SBIN-EQ", 3045, 5, 1)]
    await until(lambda: module.ticks_total > 0)
    status = await bus.call(rpc.GET_FEED_STATUS, ingestion_pb2.GetFeedStatusRequest())
    assert status.source == "synthetic" and status.connected and status.ticks_total > 0


def test_an_unknown_symbol_is_a_config_error_naming_close_matches():
    with pytest.raises(ConfigError, match=r"'RELIANC-EQ' \(close: RELIANCE-EQ"):
        resolve_symbols(["RELIANCE-EQ", "RELIANC-EQ"])


class MuteSource:
    """A feed whose socket stays connected but says nothing."""

    name = "mute"

    def __init__(self):
        self.stats = SourceStats(connected=True)
        self.reconnected = asyncio.Event()
        self.listed = [market_pb2.Instrument(token=1, symbol="X")]

    async def instruments(self):
        return self.listed

    async def batches(self):
        await asyncio.Event().wait()
        yield  # pragma: no cover

    async def reconnect(self, reason):
        self.stats.reconnects += 1
        self.reconnected.set()

    async def close(self):
        pass


async def test_a_mute_feed_during_market_hours_is_reported_and_reconnected(running):
    bus, notes = Bus(), []

    async def on_note(n):
        notes.append(n)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    source = MuteSource()
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, SimClock(speed=1)))
    await asyncio.wait_for(source.reconnected.wait(), 5)
    await until(lambda: notes)
    assert notes[0].kind == ops_pb2.NOTIFICATION_KIND_FEED and source.stats.reconnects == 1


async def test_the_quiet_before_the_open_is_not_a_stall_at_the_open(running):
    """Silence counts from the bell: the pre-open quiet (or the night) must not fire the watchdog at 09:15."""
    bus, notes = Bus(), []

    async def on_note(note):
        notes.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    clock = ManualClock(ist_ns(date(2025, 11, 25), 9, 10))  # a Tuesday, pre-open: a quiet feed is fine
    source = MuteSource()
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.3), source, clock))
    await asyncio.sleep(0.6)

    clock.set(ist_ns(date(2025, 11, 25), 9, 15))  # the bell
    await asyncio.sleep(0.15)  # open for less than stall_seconds

    assert source.stats.reconnects == 0 and not notes
    await until(lambda: source.stats.reconnects == 1)  # a real stall after the open still counts


async def test_an_mcx_feed_is_watched_in_the_evening_session(running):
    bus = Bus()
    clock = ManualClock(ist_ns(date(2025, 11, 25), 19, 0))  # NSE closed, MCX trading
    source = MuteSource()
    source.listed = [market_pb2.Instrument(token=450_001, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo")]
    await running(IngestionModule(bus, IngestionSettings(stall_seconds=0.2), source, clock))

    await until(lambda: source.stats.reconnects == 1)


class ListedSource(MuteSource):
    def __init__(self, listed):
        super().__init__()
        self.listed = listed


async def test_two_instruments_sharing_a_token_refuse_to_start_naming_both():
    # Tokens repeat across segments; NeoPulse keys an instrument by token, so trading both would mix them up.
    listed = [market_pb2.Instrument(token=35001, symbol="NIFTY26JANFUT", exchange_segment="nse_fo"),
              market_pb2.Instrument(token=35001, symbol="GOLDM26FEBFUT", exchange_segment="mcx_fo")]
    module = IngestionModule(Bus(), IngestionSettings(), ListedSource(listed), ManualClock(0))
    with pytest.raises(ConfigError, match="nse_fo:NIFTY26JANFUT and mcx_fo:GOLDM26FEBFUT share token 35001"):
        await module.start()
    assert not module.ready.is_set()


async def test_an_instrument_listed_twice_is_traded_once():
    reliance = market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm")
    module = IngestionModule(Bus(), IngestionSettings(), ListedSource([reliance, reliance, reliance]), ManualClock(0))
    await module.start()
    assert [i.token for i in module.instruments] == [2885]
