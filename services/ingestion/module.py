"""The ingestion module: pumps a MarketSource onto the bus, persists ticks, watches for a stalled feed.

Serves IngestionService's unary RPCs over the bus; publishes TICKS and feed NOTIFICATIONS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Counter, Gauge

from services.ingestion.config import IngestionSettings
from services.ingestion.source import MarketSource
from shared import rpc, runtime
from shared.bus import Bus, Topic
from shared.clock import Clock, is_market_open, session_of
from shared.component import Component
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2

log = logging.getLogger(__name__)

TICKS = Counter("neopulse_ingestion_ticks", "Ticks received from the source", ["source"])
BATCHES = Counter("neopulse_ingestion_batches", "Tick batches published", ["source"])
STALLS = Counter("neopulse_ingestion_feed_stalls", "Stall-watchdog reconnects", ["source"])
TICK_RATE = Gauge("neopulse_ingestion_ticks_per_second", "Ticks per second over the last second", ["source"])
RECONNECTS = Gauge("neopulse_ingestion_feed_reconnects", "Feed reconnects since start", ["source"])
MALFORMED = Gauge("neopulse_ingestion_malformed_packets", "Malformed feed packets counted and skipped", ["source"])
CONNECTED = Gauge("neopulse_ingestion_feed_connected", "1 while the feed is connected", ["source"])


class TickSink(Protocol):
    """Where every tick is persisted (services/ingestion/tick_writer.TickWriter); the module runs and closes it."""

    def offer(self, batch: market_pb2.TickBatch) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


InstrumentSink = Callable[[list[market_pb2.Instrument]], Awaitable[None]]


class IngestionModule(Component):
    name = "ingestion"

    def __init__(self, bus: Bus, settings: IngestionSettings, source: MarketSource, clock: Clock,
                 tick_sink: TickSink | None = None, instrument_sink: InstrumentSink | None = None) -> None:
        super().__init__(bus)
        self.settings = settings
        self.source = source
        self.clock = clock
        self.tick_sink = tick_sink
        self.instrument_sink = instrument_sink
        self.instruments: list[market_pb2.Instrument] = []
        self.ticks_total = 0
        self.ticks_per_second = 0.0
        self.last_tick_ns = 0
        self._last_tick_mono = time.monotonic()

    async def start(self) -> None:
        stats, name = self.source.stats, self.source.name
        RECONNECTS.labels(name).set_function(lambda: stats.reconnects)
        MALFORMED.labels(name).set_function(lambda: stats.malformed_packets)
        CONNECTED.labels(name).set_function(lambda: float(stats.connected))
        self.instruments = await self.source.instruments()
        if self.instrument_sink is not None:
            await self.instrument_sink(self.instruments)
        self.bus.handle(rpc.LIST_INSTRUMENTS, self._list_instruments)
        self.bus.handle(rpc.GET_FEED_STATUS, self._feed_status)
        log.info("ingestion ready", extra={"source": self.source.name, "instruments": len(self.instruments)})
        self.ready.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.tick_sink is not None:
                tg.create_task(self.tick_sink.run(), name="ingestion:tick-writer")
            tg.create_task(self._pump(), name="ingestion:pump")
            # Closing the source ends the pump's iteration even if the feed swallowed the pump's cancel.
            tg.create_task(runtime.close_when_cancelled(self.source.close), name="ingestion:close-source")
            tg.create_task(self._rate_meter(), name="ingestion:rate")
            tg.create_task(self._watchdog(), name="ingestion:watchdog")

    async def stop(self) -> None:
        await self.source.close()
        if self.tick_sink is not None:
            await self.tick_sink.close()  # flush what is buffered; unwritten ticks are counted

    async def _pump(self) -> None:
        publish = self.bus.publish_nowait
        sink = self.tick_sink
        ticks_metric = TICKS.labels(self.source.name)
        batches_metric = BATCHES.labels(self.source.name)
        async for batch in self.source.batches():
            n = len(batch.ticks)
            if not n:
                continue
            self.ticks_total += n
            self.last_tick_ns = batch.ticks[n - 1].ts_ns
            self._last_tick_mono = time.monotonic()
            publish(Topic.TICKS, batch)
            if sink is not None:
                sink.offer(batch)
            ticks_metric.inc(n)
            batches_metric.inc()

    async def _rate_meter(self) -> None:
        gauge = TICK_RATE.labels(self.source.name)
        last, last_t = self.ticks_total, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            self.ticks_per_second = (self.ticks_total - last) / (now - last_t)
            gauge.set(self.ticks_per_second)
            last, last_t = self.ticks_total, now

    async def _watchdog(self) -> None:
        """A socket can stay connected yet mute (Kotak after the session rollover): reconnect it."""
        stall = self.settings.stall_seconds
        # The feed should tick while any of its instruments' markets is open (MCX into the night).
        sessions = {session_of(i.exchange_segment) for i in self.instruments} or {session_of("")}
        was_open = False
        while True:
            await asyncio.sleep(min(1.0, stall / 4))
            now = self.clock.now_ns()
            is_open = any(is_market_open(now, opens, closes) for opens, closes in sessions)
            if is_open and not was_open:  # silence counts from the open, not from yesterday's last tick
                self._last_tick_mono = max(self._last_tick_mono, time.monotonic())
            was_open = is_open
            silent = time.monotonic() - self._last_tick_mono
            if silent < stall or not is_open:
                continue
            STALLS.labels(self.source.name).inc()
            log.warning("feed stalled; reconnecting", extra={"source": self.source.name, "silent_s": round(silent, 1)})
            await self._notify(f"No ticks for {silent:.0f}s while the market is open; reconnecting.")
            self._last_tick_mono = time.monotonic()
            try:
                await self.source.reconnect("stall")
            except Exception:
                log.exception("reconnect after stall failed", extra={"source": self.source.name})

    async def _notify(self, text: str) -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_FEED, severity=ops_pb2.SEVERITY_WARNING, title="Feed stalled",
            text=text, ts_ns=time.time_ns(), source=self.name, fields={"source": self.source.name}))

    async def _list_instruments(
            self, request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=self.instruments)

    async def _feed_status(self, request: ingestion_pb2.GetFeedStatusRequest) -> ingestion_pb2.GetFeedStatusResponse:
        stats = self.source.stats
        return ingestion_pb2.GetFeedStatusResponse(
            source=self.source.name, connected=stats.connected, ticks_total=self.ticks_total,
            ticks_per_second=self.ticks_per_second, last_tick_ns=self.last_tick_ns,
            reconnects=stats.reconnects, malformed_packets=stats.malformed_packets,
            dropped_ticks=sum(s.dropped for s in self.bus.subscriptions() if s.topic is Topic.TICKS))
