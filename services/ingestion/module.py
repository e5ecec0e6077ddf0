"""The ingestion module: pumps a MarketSource onto the bus, persists ticks, watches for a stalled feed.

Serves IngestionService's unary RPCs over the bus; publishes TICKS and feed NOTIFICATIONS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Protocol

from prometheus_client import Counter, Gauge

from services.ingestion.config import IngestionSettings
from services.ingestion.source import MarketSource
from services.ingestion.watch import (
    DELAY_WINDOWS,
    STALL_CRITICAL_S,
    STALL_TOLD_EVERY_S,
    FeedDelay,
    FeedOutage,
    StoreWatch,
    span,
)
from shared import rpc, runtime
from shared.bus import Bus, Topic
from shared.clock import NS, Clock, day_of, is_trading_day, ist_ns, segment_open
from shared.component import Component
from shared.contracts import ingestion_pb2, market_pb2, ops_pb2
from shared.errors import NeoPulseError, RetryableError
from shared.instruments import one_per_token
from shared.metrics import start_at_zero

log = logging.getLogger(__name__)

TICKS = Counter("neopulse_ingestion_ticks", "Ticks received from the source", ["source"])
BATCHES = Counter("neopulse_ingestion_batches", "Tick batches published", ["source"])
STALLS = Counter("neopulse_ingestion_feed_stalls", "Stall-watchdog reconnects", ["source"])
TICK_RATE = Gauge("neopulse_ingestion_ticks_per_second", "Ticks per second over the last second", ["source"])
RECONNECTS = Gauge("neopulse_ingestion_feed_reconnects", "Feed reconnects since start", ["source"])
MALFORMED = Gauge("neopulse_ingestion_malformed_packets", "Malformed feed packets counted and skipped", ["source"])
CONNECTED = Gauge("neopulse_ingestion_feed_connected", "1 while the feed is connected", ["source"])
SINK_ERRORS = Counter("neopulse_ingestion_tick_sink_errors", "Tick sink failures (market data went on)", ["source"])
STALL_BACKOFF_MAX_S = 60.0  # a feed that stays mute is reconnected at least this often (a broken socket heals)
DROPS_TOLD_EVERY_S = 60.0  # ticks shed for a slow consumer are told at most this often, with the count since
# A source that can re-read its instrument master (Kotak's scrip master, published under a new date folder each day)
# is re-read at this IST time of each trading day it has not been since: after Kotak publishes the day's files, before
# MCX and NSE's pre-open at 09:00; not at midnight, when the new day's files do not exist yet.
REREAD_AT_IST = (8, 45)
REREAD_RETRY_S = 300.0  # a re-read Kotak did not answer is tried again this long after, yesterday's list kept meanwhile


class TickSink(Protocol):
    """Where every tick is persisted (services/ingestion/tick_writer.TickWriter); the module runs and closes it."""

    def offer(self, batch: market_pb2.TickBatch) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


InstrumentSink = Callable[[list[market_pb2.Instrument]], Awaitable[None]]


class IngestionModule(Component):
    name = "ingestion"

    def __init__(self, bus: Bus, settings: IngestionSettings, source: MarketSource, clock: Clock,
                 tick_sink: TickSink | None = None, instrument_sink: InstrumentSink | None = None,
                 settle_batches: bool = False) -> None:
        super().__init__(bus)
        self.settings = settings
        self.source = source
        self.clock = clock
        self.tick_sink = tick_sink
        self.instrument_sink = instrument_sink
        self.instruments: list[market_pb2.Instrument] = []
        self._read_ns = 0  # when the instrument master listed was read (clock ns)
        self.ticks_total = 0
        self.ticks_per_second = 0.0
        self.last_tick_ns = 0
        self._last_tick_mono = time.monotonic()
        self.dropped_ticks = 0  # ticks in the batches the TICKS topic shed for a slow consumer (all consumers)
        self._drops_told, self._drops_told_at = 0, -DROPS_TOLD_EVERY_S  # dropped_ticks when last told, and when
        self._drops_by: set[str] = set()  # the consumers that shed since then
        self.delay = FeedDelay(settings.feed_delay_s)
        # Ticks the source refused as ahead of this machine's clock (KotakFeedSource.ahead_ticks) and ticks taken, at
        # the last watchdog window; windows in a row mostly refused; and whether the clock was told.
        self._ahead_seen = self._ticks_seen = self._ahead_run = 0
        self._clock_told = False
        self.store = StoreWatch()
        self.earlier_day_ticks = 0  # published, not stored: a feed's snapshot of an earlier day's last trade
        self._midnight_ns = self._next_midnight_ns = 0  # today's IST midnight and the next, for the tick store
        self._ended = False  # the source said it has no more ticks (end of a replay)
        # A lossless source's next batch waits for the whole pipeline at rest (Bus.quiet), not only for the tick
        # consumers: a backtest, whose results must not depend on how busy the machine is.
        self.settle_batches = settle_batches
        # With settle_batches: the other components' clock timers (Component.on_clock), a turn after every batch.
        self.clock_hooks: list[Callable[[], Awaitable[None]]] = []
        # Set: the first batch waits for it (a backtest's: every module started, the strategies warmed up; the ticks
        # a module still starting would take, or not, were the same replay's two runs' difference).
        self.start_gate: asyncio.Event | None = None
        self.ended = asyncio.Event()  # set then, once the consumers have taken every tick (a backtest's day is over)

    async def start(self) -> None:
        stats, name = self.source.stats, self.source.name
        RECONNECTS.labels(name).set_function(lambda: stats.reconnects)
        MALFORMED.labels(name).set_function(lambda: stats.malformed_packets)
        CONNECTED.labels(name).set_function(lambda: float(stats.connected))
        start_at_zero(STALLS, name)  # NeoPulseFeedStalled fires from the first stall
        self.instruments = one_per_token(await self.source.instruments())
        self._read_ns = self.clock.now_ns()
        if self.instrument_sink is not None:
            await self.instrument_sink(self.instruments)
        self.bus.handle(rpc.LIST_INSTRUMENTS, self._list_instruments)
        self.bus.handle(rpc.GET_FEED_STATUS, self._feed_status)
        log.info("ingestion ready", extra={"source": self.source.name, "instruments": len(self.instruments)})
        self.ready.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.tick_sink is not None:
                tg.create_task(self._run_sink(self.tick_sink), name="ingestion:tick-writer")
            tg.create_task(self._pump(), name="ingestion:pump")
            # Closing the source ends the pump's iteration even if the feed swallowed the pump's cancel.
            tg.create_task(runtime.close_when_cancelled(self.source.close), name="ingestion:close-source")
            tg.create_task(self._rate_meter(), name="ingestion:rate")
            tg.create_task(self._watchdog(), name="ingestion:watchdog")
            done = getattr(self.source, "done", None)
            if isinstance(done, asyncio.Event):
                tg.create_task(self._end_of_data(done), name="ingestion:end-of-data")
            refresh = getattr(self.source, "refresh_instruments", None)
            if callable(refresh):
                tg.create_task(self._reread_daily(refresh), name="ingestion:instrument-master")

    async def stop(self) -> None:
        await self.source.close()
        if self.tick_sink is not None:
            await self.tick_sink.close()  # flush what is buffered; unwritten ticks are counted

    async def _run_sink(self, sink: TickSink) -> None:
        """The tick store is a side path: its failure is logged and counted, never the end of market data."""
        try:
            await sink.run()
        except Exception:
            SINK_ERRORS.labels(self.source.name).inc()
            log.exception("tick sink stopped; market data goes on without it", extra={"source": self.source.name})

    async def _pump(self) -> None:
        publish = self.bus.publish_nowait
        sink = self.tick_sink
        ticks_metric = TICKS.labels(self.source.name)
        batches_metric = BATCHES.labels(self.source.name)
        lossless = getattr(self.source, "lossless", False)
        if self.start_gate is not None:
            await self.start_gate.wait()
        async for batch in self.source.batches():
            n = len(batch.ticks)
            if not n:
                continue
            self.ticks_total += n
            last = batch.ticks[n - 1]
            self.last_tick_ns = last.ts_ns
            self._last_tick_mono = time.monotonic()
            if last.ltq:  # a trade: one sample a batch keeps the hot path O(1); a window holds many batches
                self.delay.saw(self.clock.now_ns() - last.ts_ns)
            self._count_shed()
            publish(Topic.TICKS, batch)
            if sink is not None:
                self._offer(sink, batch)
            ticks_metric.inc(n)
            batches_metric.inc()
            if lossless:
                await (self._settle() if self.settle_batches else self._consumers_caught_up())
        await self._end_of_data()

    async def _settle(self) -> None:
        """The pipeline at rest, a turn of every clock timer at the clock of the batch just taken, and at rest again."""
        await self.bus.quiet()
        for hook in self.clock_hooks:
            await hook()
        await self.bus.quiet()

    async def _end_of_data(self, done: asyncio.Event | None = None) -> None:
        """The source has no more ticks (a replay's `done`, or batches() returned): say so, stop the watchdog."""
        if done is not None:
            await done.wait()
            if self.settle_batches:  # the clock has moved to the end of the range: the last minute's turn
                await self._settle()
        task = asyncio.current_task()
        if self._ended or (task is not None and task.cancelling()):  # at shutdown a closed feed is no news
            return
        self._ended = True
        self.ended.set()
        log.info("market source ended", extra={"source": self.source.name, "ticks": self.ticks_total})
        await self._report_drops()  # the watchdog stops now: what it did not tell yet
        await self._notify("Market data ended", f"{self.source.name}: no more ticks after {self.ticks_total}.",
                           ops_pb2.SEVERITY_INFO)

    def _count_shed(self) -> None:
        """Count the ticks the next publish sheds: the oldest batch of each full TICKS queue (the bus counts shed
        messages, and a batch is a whole feed frame of ticks). Peeks at the queue's deque, as the bus itself does."""
        for sub in self.bus.subscribers(Topic.TICKS):
            if sub.queue.full():
                self.dropped_ticks += len(sub.queue._queue[0].ticks)  # type: ignore[attr-defined]
                self._drops_by.add(sub.name)

    async def _report_drops(self) -> None:
        """Tell of ticks shed for a slow consumer (stops and candle highs may be among them): at once, then at most
        every DROPS_TOLD_EVERY_S with the count since."""
        shed, now = self.dropped_ticks - self._drops_told, time.monotonic()
        if not shed or now - self._drops_told_at < DROPS_TOLD_EVERY_S:
            return
        by = ", ".join(sorted(self._drops_by))
        self._drops_told, self._drops_told_at, self._drops_by = self.dropped_ticks, now, set()
        log.warning("ticks dropped for a slow consumer", extra={"source": self.source.name, "ticks": shed,
                                                                "consumers": by})
        await self._notify("Ticks dropped", f"{shed} ticks shed because {by} fell behind the feed: candles and stops "
                                            "fed from it may have missed them. Check the machine's load.",
                           ops_pb2.SEVERITY_WARNING)

    async def _report_delay(self, is_open: bool) -> None:
        """Tell once when the feed starts running behind the exchange by more than [ingestion] feed_delay_s, and once
        when it has caught up: a candle closes close_grace_ms after its minute, and later ticks are left out of it."""
        if not is_open:
            self.delay.reset()
            return
        lag = self.delay.end_window()
        if lag is None:
            return
        if self.delay.delayed:
            log.warning("feed delayed", extra={"source": self.source.name, "lag_s": round(lag / NS, 1)})
            await self._notify("Feed delayed", f"Trades arrive {lag / NS:.0f} s after their exchange time (more than "
                                               f"{self.settings.feed_delay_s:g} s); candles may miss ticks that "
                                               "come after they "
                                               "close.", ops_pb2.SEVERITY_WARNING)
        else:
            log.info("feed delay cleared", extra={"source": self.source.name, "lag_s": round(lag / NS, 1)})
            await self._notify("Feed delay cleared", f"Trades arrive {lag / NS:.1f} s after their exchange time "
                                                     "again.", ops_pb2.SEVERITY_INFO)

    def _offer(self, sink: TickSink, batch: market_pb2.TickBatch) -> None:
        """Hand the batch to the tick store, but for ticks of an earlier IST day: the snapshot a feed sends at every
        (re)subscribe carries an illiquid instrument's last trade of yesterday with today's quotes, and stored it
        would put today's bid/ask into yesterday's partition (a backtest of that day would fill at them). They are
        published all the same: risk and the strategies take the last price from them."""
        now = self.clock.now_ns()
        if now >= self._next_midnight_ns:
            day = day_of(now)
            self._midnight_ns, self._next_midnight_ns = ist_ns(day, 0, 0), ist_ns(day + timedelta(days=1), 0, 0)
        midnight = self._midnight_ns
        if any(t.ts_ns < midnight for t in batch.ticks):
            kept = [t for t in batch.ticks if t.ts_ns >= midnight]
            self.earlier_day_ticks += len(batch.ticks) - len(kept)
            if not kept:
                return
            batch = market_pb2.TickBatch(ticks=kept)
        try:
            sink.offer(batch)
        except Exception:
            SINK_ERRORS.labels(self.source.name).inc()
            log.exception("tick sink refused a batch", extra={"source": self.source.name})

    async def _consumers_caught_up(self) -> None:
        """A replay runs as fast as the strategies take it: the tick topic would shed what they cannot keep up
        with, and the replay clock (moved with the next batch) would close candles before their ticks arrive."""
        for sub in self.bus.subscriptions():
            if sub.topic is Topic.TICKS and sub.handler is not None:
                await sub.queue.join()

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
        """A socket can stay connected yet mute (Kotak after the session rollover): reconnect it, waiting twice as
        long after each reconnect that brought nothing (up to STALL_BACKOFF_MAX_S). An outage is told when it
        starts, again (CRITICAL) after STALL_CRITICAL_S and every STALL_TOLD_EVERY_S in market hours, and when ticks
        come back."""
        stall = self.settings.stall_seconds
        # The feed should tick while any of its instruments' markets is open (MCX into the night).
        segments = {i.exchange_segment for i in self.instruments} or {""}
        was_open = False
        wait, outage = stall, None
        malformed_at_tick, ticks_seen = self.source.stats.malformed_packets, self.ticks_total
        while not self._ended:
            await asyncio.sleep(min(1.0, stall / 4))
            now, mono = self.clock.now_ns(), time.monotonic()
            is_open = any(segment_open(segment, now) for segment in segments)
            if is_open and not was_open:  # silence counts from the open, not from yesterday's last tick
                self._last_tick_mono = max(self._last_tick_mono, mono)
                wait = stall
                if outage is not None:  # still no tick since the day before: told again if the open brings none
                    outage.since, outage.next_told_at = mono, mono + stall
            was_open = is_open
            await self._report_drops()
            await self._report_delay(is_open)
            await self._report_clock(is_open)
            await self._report_store()
            if self.ticks_total != ticks_seen:
                ticks_seen, malformed_at_tick = self.ticks_total, self.source.stats.malformed_packets
            if outage is not None and self.ticks_total != outage.ticks:  # ticks came: the next silence is news
                await self._feed_back(outage, mono)
                wait, outage = stall, None
            elif outage is not None and is_open and mono >= outage.next_told_at:
                await self._still_stalled(outage, mono)
            silent = mono - self._last_tick_mono
            if silent < wait or not is_open or self._ended:
                continue
            STALLS.labels(self.source.name).inc()
            log.warning("feed stalled; reconnecting", extra={"source": self.source.name, "silent_s": round(silent, 1)})
            if outage is None:
                outage = FeedOutage(self._last_tick_mono, self.ticks_total, self._last_tick_mono + STALL_CRITICAL_S)
                refused = self.source.stats.malformed_packets - malformed_at_tick
                why = (" Its ticks are refused: this machine's clock is behind the exchange's." if self._clock_told
                       else f" {refused} packets were refused meanwhile (see the log)." if refused else "")
                await self._notify("Feed stalled", f"No ticks for {silent:.0f}s while the market is open; "
                                                   f"reconnecting.{why}", ops_pb2.SEVERITY_WARNING)
            outage.reconnects, outage.ticks = outage.reconnects + 1, self.ticks_total
            try:
                await self.source.reconnect("stall")
            except Exception:
                log.exception("reconnect after stall failed", extra={"source": self.source.name})
            self._last_tick_mono = time.monotonic()  # after the reconnect: a slow one is not a new stall
            wait = min(wait * 2, max(stall, STALL_BACKOFF_MAX_S))

    async def _reread_daily(self, refresh: Callable[[], Awaitable[list[market_pb2.Instrument]]]) -> None:
        """A process running across days lists the day's contracts: the instrument master is read again at
        REREAD_AT_IST of each trading day it was not read since. Kotak not answering keeps the list held and tries
        again every REREAD_RETRY_S; a list that cannot replace it (ConfigError: a symbol gone) is kept for the day."""
        await self._report_master_day()
        retry_at, told_on = 0.0, None
        while not self._ended:
            await asyncio.sleep(min(1.0, self.settings.stall_seconds / 4))
            now = self.clock.now_ns()
            due = ist_ns(day_of(now), *REREAD_AT_IST)
            if now < due or self._read_ns >= due or not is_trading_day(day_of(now)) or time.monotonic() < retry_at:
                continue
            try:
                fresh = one_per_token(await refresh())
            except Exception as exc:  # a failed re-read must not end market data: the list held stays
                retry_at, told_on = await self._reread_failed(exc, now, told_on)
                continue
            self.instruments, self._read_ns = fresh, now
            log.info("instrument master read again", extra={"source": self.source.name, "instruments": len(fresh)})
            await self._store_instruments(fresh)
            await self._report_master_day()

    async def _reread_failed(self, exc: Exception, now: int, told_on: date | None) -> tuple[float, date]:
        """Keep the list held, and say so (told once a day). Returns when to try again, and the day it was told."""
        retry = isinstance(exc, RetryableError) or not isinstance(exc, NeoPulseError)
        if not retry:
            self._read_ns = now  # a symbol gone from it, or its token changed: reading it again today changes nothing
        log.warning("instrument master not read again; the list held is kept", exc_info=not isinstance(
            exc, NeoPulseError), extra={"source": self.source.name, "error": str(exc),
                                        "retry_in_s": REREAD_RETRY_S if retry else None})
        if told_on != day_of(now):
            again = f"; trying again every {REREAD_RETRY_S:g} s" if retry else ""
            await self._notify("Instrument master not read again", f"{exc}. The instruments read earlier (contracts, "
                               f"lot, tick and freeze) are still listed{again}.", ops_pb2.SEVERITY_WARNING)
        return time.monotonic() + REREAD_RETRY_S, day_of(now)

    async def _store_instruments(self, instruments: list[market_pb2.Instrument]) -> None:
        """The re-read list into the instrument store (a restart today falls back on it): a failure is logged."""
        if self.instrument_sink is None:
            return
        try:
            await self.instrument_sink(instruments)
        except Exception:
            log.exception("instrument master read again, but not stored", extra={"source": self.source.name})

    async def _report_master_day(self) -> None:
        """Tell when the instrument master's files are not today's (Kotak had not published the day's): contracts
        listed since, and lot, tick and freeze revisions, are missing. Before REREAD_AT_IST only logged: it is read
        again then."""
        files_day: date | None = getattr(self.source, "master_day", None)
        now = self.clock.now_ns()
        today = day_of(now)
        if files_day is None or files_day >= today or not is_trading_day(today):
            return
        log.warning("instrument master files are not today's", extra={"source": self.source.name,
                                                                       "files_day": str(files_day)})
        if now >= ist_ns(today, *REREAD_AT_IST):
            await self._notify("Instrument master not today's", f"Kotak's scrip master files are dated {files_day}, "
                               f"not today ({today}): contracts listed since, and lot, tick and freeze changes, are "
                               "missing. Restart NeoPulse once Kotak publishes today's.", ops_pb2.SEVERITY_WARNING)

    async def _still_stalled(self, outage: FeedOutage, now: float) -> None:
        """Tell again a stall that lasts: CRITICAL once it is STALL_CRITICAL_S old, then every STALL_TOLD_EVERY_S."""
        lasted = now - outage.since
        critical = lasted >= STALL_CRITICAL_S
        outage.next_told_at = now + STALL_TOLD_EVERY_S if critical else outage.since + STALL_CRITICAL_S
        log.warning("feed still stalled", extra={"source": self.source.name, "silent_s": round(lasted),
                                                 "reconnects": outage.reconnects})
        await self._notify("Feed still stalled", f"No ticks for {span(lasted)} ({outage.reconnects} reconnects); "
                                                 "stops and exits watched on ticks are blind meanwhile. Check the "
                                                 "network and the broker's status.",
                           ops_pb2.SEVERITY_CRITICAL if critical else ops_pb2.SEVERITY_WARNING)

    async def _feed_back(self, outage: FeedOutage, now: float) -> None:
        lasted = now - outage.since
        log.info("feed back", extra={"source": self.source.name, "silent_s": round(lasted),
                                     "reconnects": outage.reconnects})
        await self._notify("Feed back", f"Ticks again after {span(lasted)} ({outage.reconnects} reconnects).",
                           ops_pb2.SEVERITY_INFO)

    async def _report_clock(self, is_open: bool) -> None:
        """Tell once when this machine's clock runs behind the exchange's: the source refuses most ticks as ahead
        of it (KotakFeedSource.ahead_ticks) for DELAY_WINDOWS windows in a row. No tick reaches the strategies
        then, and no reconnect helps; it is said again only after a window of ticks taken with none refused."""
        ahead = getattr(self.source, "ahead_ticks", 0)
        refused, taken = ahead - self._ahead_seen, self.ticks_total - self._ticks_seen
        self._ahead_seen, self._ticks_seen = ahead, self.ticks_total
        if not is_open:
            self._ahead_run = 0
            return
        if not refused and not taken:  # a quiet window (a thin feed) neither makes nor breaks a run
            return
        if taken and not refused:
            self._clock_told = False
        self._ahead_run = self._ahead_run + 1 if refused > taken else 0
        if self._ahead_run < DELAY_WINDOWS or self._clock_told:
            return
        self._clock_told = True
        behind_s = getattr(self.source, "ahead_by_ns", 0) / NS
        log.error("machine clock behind the exchange", extra={"source": self.source.name, "behind_s": round(behind_s)})
        await self._notify("Clock behind", f"This machine's clock is ~{behind_s:.0f} s behind the exchange's: ticks "
                                           "are refused as ahead of it. Sync it (NTP).", ops_pb2.SEVERITY_CRITICAL)

    async def _report_store(self) -> None:
        if self.tick_sink is not None:
            await self.store.check(self.tick_sink, self._notify, self.source.name)

    async def _notify(self, title: str, text: str, severity: ops_pb2.Severity) -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_FEED, severity=severity, title=title,
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
            dropped_ticks=self.dropped_ticks)

