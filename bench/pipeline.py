"""Monolith pipeline benchmark: ingestion -> strategy -> risk -> oms in one process, against a bare bus.

Throughput (ticks/s, 50 instruments, candles + RSI + orders flowing) and tick-to-order latency at a fixed
offered rate, each beside a baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.ingestion.config import IngestionSettings
from services.ingestion.module import IngestionModule
from services.ingestion.source import SourceStats
from shared import runtime
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns, last_weekday
from shared.contracts import market_pb2, trading_pb2
from shared.marketdata import SyntheticMarket, nse_instruments

BATCH = 100  # throughput runs: ticks per batch
LATENCY_BATCH = 20  # latency runs: about what one SFeed frame carries at this rate (a batch per millisecond)


def make_batches(n_ticks: int, seconds_per_batch: float = 1.0, vol_bps: float = 6.0,
                 batch: int = BATCH) -> tuple[list, int]:
    """Pre-built tick batches over 50 instruments; simulated time advances per batch so candles close."""
    from datetime import datetime

    day = last_weekday(datetime.now().date())
    start = ist_ns(day, 9, 15)
    market = SyntheticMarket(nse_instruments(), seed=11, vol_bps=vol_bps)
    batches = []
    for i in range(n_ticks // batch):
        ts = start + int(i * seconds_per_batch * 1e9)
        batches.append(market_pb2.TickBatch(ticks=market.next_ticks(ts, batch)))
    return batches, start


async def pace_until(at: float) -> None:
    """Wait until perf_counter() reaches `at`: timer sleep, then yield-spin the last 0.5 ms for precision."""
    while (delay := at - time.perf_counter()) > 0:  # noqa: ASYNC110 - a precise pacer, not an event wait
        await asyncio.sleep(delay if delay > 0.0005 else 0)


class PacedSource:
    """Feeds pre-built batches; paced (offered rate) or as fast as the slowest tick consumer allows."""

    name = "bench"

    def __init__(self, batches: list, clock: ManualClock, bus: Bus, rate: float | None = None) -> None:
        self._batches, self.clock, self.bus, self.rate = batches, clock, bus, rate
        self.stats = SourceStats(connected=True)
        self.done = asyncio.Event()

    async def instruments(self):
        return nse_instruments()

    async def batches(self):
        subs = [s for s in self.bus.subscriptions() if s.topic is Topic.TICKS]
        interval = len(self._batches[0].ticks) / self.rate if self.rate else 0.0
        next_at = time.perf_counter()
        for batch in self._batches:
            if self.rate:
                next_at += interval
                await pace_until(next_at)
                now = time.time_ns()
                for t in batch.ticks:
                    t.recv_ns = now
            else:
                # Flow control: offer as fast as the slowest tick consumer takes, never drop.
                while any(s.queue.qsize() > 8 for s in subs):  # noqa: ASYNC110 - polling queue depth is the point
                    await asyncio.sleep(0)
            self.clock.set(batch.ticks[-1].ts_ns)
            yield batch
        self.done.set()
        await asyncio.Event().wait()

    async def reconnect(self, reason: str) -> None:
        return None

    async def close(self) -> None:
        return None


def _toml() -> dict[str, Any]:
    return {
        "risk": {"enforce_market_hours": False, "max_orders_per_second": 10_000, "max_open_orders": 1_000_000,
                 "max_position_quantity": 1_000_000},
    }


async def _pipeline(batches: list, start_ns: int, rate: float | None, busy_poll: bool = False,
                    ledger: Any = None, drive: Callable[[Bus, Any], Awaitable[None]] | None = None,
                    strategies: bool = True) -> dict[str, Any]:
    """`ledger`: the OMS's order ledger (default: in memory). `drive(bus, broker)`: run until it returns instead
    of until the batches are played (it publishes what it measures). `strategies=False`: no strategy configured
    (no signal but those `drive` publishes)."""
    from services.oms.config import OmsSettings
    from services.oms.ledger import MemoryLedger
    from services.oms.module import OmsModule
    from services.risk.config import RiskSettings
    from services.risk.module import RiskModule
    from services.strategy.config import StrategySettings
    from services.strategy.module import StrategyModule
    from shared import config as cfg

    bus, clock = Bus(default_maxsize=100_000), ManualClock(start_ns)
    source = PacedSource(batches, clock, bus, rate)
    toml = _toml()
    if not strategies:
        toml["strategy"] = {"strategies": []}
    broker = timed_broker(clock)
    modules = [
        IngestionModule(bus, IngestionSettings(stall_seconds=3600), source, clock),
        StrategyModule(bus, cfg.load(StrategySettings, toml), clock),
        RiskModule(bus, cfg.load(RiskSettings, toml), clock),
        OmsModule(bus, cfg.load(OmsSettings, toml), broker, ledger or MemoryLedger(), clock),
    ]
    orders = [0]
    ticks_seen = [0]

    async def on_ticks(batch):  # the strategy's neighbour on the same topic: counts what was carried
        ticks_seen[0] += len(batch.ticks)

    async def on_update(u: trading_pb2.OrderUpdate):  # stands in for the notifier and gRPC stream consumers
        if u.status == trading_pb2.ORDER_STATUS_PENDING_NEW:
            orders[0] += 1

    bus.subscribe(Topic.ORDER_UPDATES, "bench", on_update)
    bus.subscribe(Topic.TICKS, "bench", on_ticks, maxsize=1_000_000)
    async with asyncio.TaskGroup() as tg:
        bus_task = tg.create_task(bus.run())
        await asyncio.sleep(0)
        runners = []
        for m in modules:
            await m.start()
        runtime.settle_after_start()  # as the monolith does; the pre-built batches are frozen with the rest
        t0 = time.perf_counter()
        for m in modules:
            runners.append(tg.create_task(m.run()))
        runners.append(tg.create_task(runtime.collect_when_idle()))  # as the monolith does
        if busy_poll:  # as the monolith does with busy_poll = true
            runners.append(tg.create_task(runtime.busy_poll()))
        await (drive(bus, broker) if drive is not None else source.done.wait())
        await bus.drain(within_s=60)
        elapsed = time.perf_counter() - t0
        for r in [*runners, bus_task]:
            r.cancel()
    n = sum(len(b.ticks) for b in batches)
    dropped = sum(s.dropped for s in bus.subscriptions() if s.topic is Topic.TICKS)
    return {"ticks": n, "seconds": elapsed, "ticks_per_s": n / elapsed, "orders": orders[0],
            "dropped_ticks": dropped, "latencies_ns": broker.latencies}


def timed_broker(clock: ManualClock) -> Any:
    """The paper broker, noting each order's tick-to-order time as the OMS hands the order to it.

    That is where tick-to-order ends: the order leaves NeoPulse (with Kotak, the REST call starts there).
    The clock starts at the tick's recv_ns, stamped when its batch was offered."""
    from services.oms.charges import ChargeModel
    from services.oms.virtual_broker import VirtualBroker

    class TimedBroker(VirtualBroker):
        latencies: list[int]

        async def place_order(self, order: trading_pb2.OrderRequest) -> Any:
            if order.tick_recv_ns:
                self.latencies.append(time.time_ns() - order.tick_recv_ns)
            return await super().place_order(order)

    broker = TimedBroker(None, ChargeModel.default(), clock)
    broker.latencies = []
    return broker


async def _bare_bus(batches: list, rate: float | None, hops: int = 4) -> dict[str, Any]:
    """The same batches through `hops` chained topics with no-op handlers."""
    bus = Bus(default_maxsize=100_000)
    topics = [Topic.TICKS, Topic.SIGNALS, Topic.ORDERS, Topic.ORDER_UPDATES][:hops]
    latencies: list[int] = []
    done = asyncio.Event()
    count = [0]

    def relay(nxt):
        async def handler(msg):
            await bus.publish(nxt, msg)
        return handler

    async def sink(msg):
        count[0] += 1
        latencies.append(time.time_ns() - msg.ticks[0].recv_ns)
        if count[0] == len(batches):
            done.set()

    for a, b in zip(topics, topics[1:], strict=False):  # noqa: RUF007 - pairs of a four-item list
        bus.subscribe(a, f"relay-{a}", relay(b))
    bus.subscribe(topics[-1], "sink", sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(bus.run())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        interval = len(batches[0].ticks) / rate if rate else 0.0
        next_at = t0
        for batch in batches:
            if rate:
                next_at += interval
                await pace_until(next_at)
            now = time.time_ns()
            batch.ticks[0].recv_ns = now
            bus.publish_nowait(topics[0], batch)
            if not rate:
                await asyncio.sleep(0)  # let the relays run, as the paced pipeline source does
        await done.wait()
        elapsed = time.perf_counter() - t0
        task.cancel()
    n = sum(len(b.ticks) for b in batches)
    return {"ticks": n, "seconds": elapsed, "ticks_per_s": n / elapsed, "latencies_ns": latencies}


async def ledger_latency(seconds: float = 12.0, rate: float = 20_000) -> dict[str, Any]:
    """Tick-to-order as `neopulse run` has it: the order ledger in PostgreSQL (embedded in a temporary directory,
    or DATABASE_URL), written ahead of every order; beside the in-memory ledger, in the same run."""
    from services.oms.ledger_pg import PgLedger
    from shared.db.database import open_database

    batches, start = make_batches(int(rate * seconds), seconds_per_batch=2.0 * LATENCY_BATCH / BATCH,
                                  vol_bps=12.0, batch=LATENCY_BATCH)
    memory = await _pipeline(batches, start, rate)
    with tempfile.TemporaryDirectory(prefix="neopulse-bench-") as tmp:
        db = await open_database(os.environ.get("DATABASE_URL"), Path(tmp))
        try:
            pg = await _pipeline(batches, start, rate, ledger=PgLedger(db.pool))
        finally:
            await db.close()
    return {"orders": len(pg["latencies_ns"]), "offered_ticks_per_s": rate,
            "pg_p50_us": pct(pg["latencies_ns"], 0.50), "pg_p99_us": pct(pg["latencies_ns"], 0.99),
            "memory_p50_us": pct(memory["latencies_ns"], 0.50), "memory_p99_us": pct(memory["latencies_ns"], 0.99)}


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0  # µs


async def run(throughput_ticks: int = 600_000, latency_seconds: float = 12.0, rate: float = 20_000) -> dict[str, Any]:
    batches, start = make_batches(throughput_ticks)
    base = await _bare_bus(batches, None)
    pipe = await _pipeline(batches, start, None)
    # Simulated time runs 2 s per 100 ticks, so candles close (and orders flow) every 150 ms of real time.
    lat_batches, lat_start = make_batches(int(rate * latency_seconds), seconds_per_batch=2.0 * LATENCY_BATCH / BATCH,
                                          vol_bps=12.0, batch=LATENCY_BATCH)
    base_lat = await _bare_bus(lat_batches, rate)
    pipe_lat = await _pipeline(lat_batches, lat_start, rate)
    polled = await _pipeline(lat_batches, lat_start, rate, busy_poll=True)
    return {
        "throughput": {
            "pipeline_ticks_per_s": pipe["ticks_per_s"], "bare_bus_ticks_per_s": base["ticks_per_s"],
            "ratio": pipe["ticks_per_s"] / base["ticks_per_s"], "orders": pipe["orders"],
            "dropped_ticks": pipe["dropped_ticks"], "target_ticks_per_s": 200_000,
        },
        "latency": {
            "offered_ticks_per_s": rate, "ticks_per_batch": LATENCY_BATCH, "orders": len(pipe_lat["latencies_ns"]),
            "pipeline_p50_us": pct(pipe_lat["latencies_ns"], 0.50),
            "pipeline_p99_us": pct(pipe_lat["latencies_ns"], 0.99),
            "bare_bus_p50_us": pct(base_lat["latencies_ns"], 0.50),
            "bare_bus_p99_us": pct(base_lat["latencies_ns"], 0.99),
            "busy_poll_orders": len(polled["latencies_ns"]),
            "busy_poll_p50_us": pct(polled["latencies_ns"], 0.50),
            "busy_poll_p99_us": pct(polled["latencies_ns"], 0.99),
            "target_p99_us": 1000,
        },
    }


if __name__ == "__main__":
    print(asyncio.run(run()))
