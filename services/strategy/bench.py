"""Micro-benchmark of the strategy hot path: candles + MOMENTUM_RSI over pre-built tick batches.

Drives StrategyEngine directly (no bus), on the seeded synthetic market's 50 NSE instruments.
"""

from __future__ import annotations

import time

from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from shared import config as cfg
from shared.clock import ManualClock, ist_ns, last_weekday
from shared.contracts import market_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import SyntheticMarket, nse_instruments

BATCH = 100


def make_batches(n: int, seconds_per_batch: float = 1.0) -> tuple[list[market_pb2.TickBatch], int]:
    """`n` ticks in batches of 100 over 50 instruments; exchange time moves so candles keep closing."""
    from datetime import date

    start = ist_ns(last_weekday(date(2026, 1, 20)), 9, 15)
    market = SyntheticMarket(nse_instruments(), seed=11, vol_bps=6.0)
    batches = []
    for i in range(max(1, n // BATCH)):
        ts = start + int(i * seconds_per_batch * 1e9)
        batches.append(market_pb2.TickBatch(ticks=market.next_ticks(ts, BATCH)))
    return batches, start


def bench_strategy_ticks(n: int) -> float:
    """Ticks per second through candle building and default MOMENTUM_RSI (signals built, not published)."""
    batches, start = make_batches(n)
    instruments = InstrumentBook(nse_instruments())
    strategies = build_strategies(cfg.load(StrategySettings, {}), instruments)
    engine = StrategyEngine(strategies, instruments, ManualClock(start))
    on_ticks = engine.on_ticks
    t0 = time.perf_counter()
    for batch in batches:
        on_ticks(batch.ticks)
    elapsed = time.perf_counter() - t0
    return sum(len(b.ticks) for b in batches) / elapsed


if __name__ == "__main__":
    print(f"{bench_strategy_ticks(500_000):,.0f} ticks/s")
