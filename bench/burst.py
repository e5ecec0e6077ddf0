"""Order-path cost: a burst of signals to orders placed, through risk and the OMS, beside a bare bus.

What a minute's close puts on the order path at once: `size` signals published together; timed from the first
publish to the last order handed to the paper broker (where tick-to-order ends: the signals carry the burst's
start as their tick time, so the broker's own tick-to-order entry for the last order is the measure). Between
bursts the pipeline runs as in the latency benchmark's quiet stretches (a few tick batches, the loop idle in
between), so the order path is as cold as it is there. Much steadier than a p99 over a few hundred orders: it is
the CPU work of the burst.
The baseline: the same signals through a bare bus of the same two hops (signals -> decisions -> the placing
consumer), no-op handlers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.pipeline import make_batches, pct
from shared.bus import Bus, Topic
from shared.contracts import trading_pb2
from shared.marketdata import nse_instruments

GAP_S = 0.004  # between bursts: the loop idles, a tick batch or two goes through


def _signals(burst: int, size: int) -> list[trading_pb2.Signal]:
    """`size` market orders on different instruments, buying on even bursts and selling on odd ones (flat after
    every second burst: no position or exposure cap is reached however many bursts run)."""
    side = trading_pb2.SIDE_BUY if burst % 2 == 0 else trading_pb2.SIDE_SELL
    out = []
    for j, inst in enumerate(nse_instruments()[:size]):
        n = burst * size + j
        out.append(trading_pb2.Signal(
            signal_id=f"burst-{n}", strategy="burst", token=inst.token, exchange_segment=inst.exchange_segment,
            symbol=inst.symbol, side=side, quantity=inst.lot_size or 1, order_type=trading_pb2.ORDER_TYPE_MARKET,
            product=trading_pb2.PRODUCT_MIS, sequence=n))
    return out


async def _order_path(bursts: int, size: int) -> list[int]:
    from bench.pipeline import _pipeline

    took: list[int] = []

    async def drive(bus: Bus, broker: Any) -> None:
        await asyncio.sleep(0.2)  # instruments, first prices
        for b in range(bursts):
            signals = _signals(b, size)
            placed = len(broker.latencies) + size
            t0 = time.time_ns()
            for s in signals:
                s.tick_recv_ns = t0
                await bus.publish(Topic.SIGNALS, s)
            while len(broker.latencies) < placed:  # noqa: ASYNC110 - waits for the burst, timed by the broker
                await asyncio.sleep(0)
            took.append(broker.latencies[placed - 1])  # the last order's placement, from t0
            await asyncio.sleep(GAP_S)

    batches, start = make_batches(20_000, seconds_per_batch=0.01, vol_bps=1.0, batch=20)
    await _pipeline(batches, start, rate=2_000, drive=drive, strategies=False)
    return took[bursts // 8:]  # the first bursts warm up


async def _bare(bursts: int, size: int) -> list[int]:
    bus = Bus(default_maxsize=100_000)
    done = asyncio.Event()
    seen = [0]

    async def relay(msg: Any) -> None:
        await bus.publish(Topic.ORDERS, msg)

    async def sink(msg: Any) -> None:  # where the OMS would hand the order to the broker
        seen[0] += 1
        if seen[0] % size == 0:
            took.append(time.time_ns() - msg.tick_recv_ns)
            done.set()

    took: list[int] = []
    bus.subscribe(Topic.SIGNALS, "relay", relay)
    bus.subscribe(Topic.ORDERS, "sink", sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(bus.run())
        await asyncio.sleep(0)
        for b in range(bursts):
            signals = _signals(b, size)
            done.clear()
            t0 = time.time_ns()
            for s in signals:
                s.tick_recv_ns = t0
                await bus.publish(Topic.SIGNALS, s)
            await done.wait()
            await asyncio.sleep(GAP_S)
        task.cancel()
    return took[bursts // 8:]


async def run(bursts: int = 400, size: int = 7) -> dict[str, Any]:
    base = await _bare(bursts, size)
    path = await _order_path(bursts, size)
    return {"size": size, "bursts": len(path),
            "order_path_p50_us": pct(path, 0.50), "order_path_p90_us": pct(path, 0.90),
            "bare_bus_p50_us": pct(base, 0.50), "bare_bus_p90_us": pct(base, 0.90)}


if __name__ == "__main__":
    print(asyncio.run(run()))
