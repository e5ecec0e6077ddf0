"""Who gets the stored candles to warm the strategies up from: the monolith's strategy module shares its pool, a
split-mode strategy process opens its own (ingestion serves no candles); a replay and --no-db start cold."""

from __future__ import annotations

from datetime import date

import pytest

from services.app.config import AppSettings
from services.app.monolith import Monolith
from services.app.split import build_module
from services.strategy.module import StrategyModule
from services.strategy.warmup import StoredCandles
from shared.bus import Bus
from shared.clock import ManualClock


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


@pytest.mark.parametrize("more", [{"source": "replay", "replay_day": date(2026, 1, 20)}, {"use_database": False}],
                         ids=["replay", "no-db"])
async def test_a_replay_or_a_run_without_database_gives_the_strategy_no_stored_candles(database, more):
    module = await built_strategy(Monolith(settings(database, **more)))

    assert module.history is None


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
