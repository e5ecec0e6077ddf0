"""Who gets the stored candles to warm the strategies up from: the monolith's strategy module shares its pool, a
split-mode strategy process opens its own (ingestion serves no candles); --no-db starts cold. A replay (a backtest's
day) warms up from the days before its own, as a live start that morning would."""

from __future__ import annotations

from datetime import date

from services.app.config import AppSettings
from services.app.monolith import Monolith
from services.app.split_build import build_module
from services.strategy.module import StrategyModule
from services.strategy.warmup import StoredCandles
from shared.bus import Bus
from shared.clock import ManualClock, day_of, ist_ns


def settings(database: str, **more) -> AppSettings:
    return AppSettings(**{"source": "synthetic", "use_database": True, "database_url": database, "grpc_port": 0,
                          "symbols": ["SBIN-EQ"], **more})


async def built_strategy(app: Monolith) -> StrategyModule:
    try:
        await app.build()
    finally:
        await app._close()
    (module,) = [c for c in app.components if isinstance(c, StrategyModule)]
    return module


async def test_the_monolith_strategy_reads_the_stored_candles_through_the_monoliths_pool(database):
    app = Monolith(settings(database))

    module = await built_strategy(app)

    assert isinstance(module.history, StoredCandles) and module.history.pool is app.database.pool


async def test_a_run_without_database_gives_the_strategy_no_stored_candles(database):
    module = await built_strategy(Monolith(settings(database, use_database=False)))

    assert module.history is None


async def test_a_replay_warms_up_from_the_days_before_its_own_and_never_from_it(database):
    app = Monolith(settings(database, source="replay", replay_day=date(2026, 1, 20)))
    await store_tick(database, ist_ns(date(2026, 1, 20), 9, 30))  # the replayed day's ticks: market_ticks not empty

    module = await built_strategy(app)

    assert isinstance(module.history, StoredCandles)
    assert app.clock.now_ns() == ist_ns(date(2026, 1, 20), 0, 0)  # the warm-up's cutoff: before the day's first tick


async def store_tick(database: str, ts_ns: int) -> None:
    import asyncpg

    from shared.db import partitions

    conn = await asyncpg.connect(database)
    try:
        await partitions.ensure_days(conn, [day_of(ts_ns)])
        await conn.execute(
            "INSERT INTO market_ticks (ts, token, seq, exchange_segment, ltp, ltq, volume, bid, ask, bid_qty, ask_qty,"
            " open, high, low, close, oi, atp) VALUES (to_timestamp($1::float8), 3045, 1, 'nse_cm', 60000, 1, 1, 0, 0,"
            " 0, 0, 0, 0, 0, 0, 0, 0)", ts_ns / 1e9)
    finally:
        await conn.close()


async def test_a_split_mode_strategy_process_opens_its_own_pool_for_the_stored_candles(database):
    closers: list = []
    try:
        module = await build_module("strategy", Bus(), settings(database), {}, ManualClock(0), closers)

        assert isinstance(module.history, StoredCandles)
        assert await module.history.pool.fetchval("SELECT count(*) FROM market_ticks") == 0
    finally:
        for close in reversed(closers):
            await close()


async def test_a_split_mode_strategy_process_without_database_has_no_stored_candles(database):
    closers: list = []
    module = await build_module("strategy", Bus(), settings(database, use_database=False), {}, ManualClock(0), closers)

    assert module.history is None and closers == []
