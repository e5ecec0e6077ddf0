"""A database is stamped with what its first run held (paper or live trading, a simulated or the real market), and a
start of another kind is refused: a live OMS once rebuilt its positions from a paper run's fills on the same data dir
(and squared them off with real orders), and live strategies warmed up from the simulator's candles.

Real parts: the migrated test database, the monolith's and split mode's wiring up to the database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date

import pytest

from services.app.config import AppSettings
from services.app.monolith import Monolith
from services.app.split_build import build_module
from shared.bus import Bus
from shared.clock import ManualClock, ist_ns
from shared.db.stamp import claim, stamp
from shared.errors import ConfigError
from tests.app.test_warm_start_wiring import store_tick


async def used(pool) -> None:
    """The database holds something of its first run's (a strategy's saved state)."""
    await pool.execute("INSERT INTO strategy_state (name, value) VALUES ('momentum_rsi', '{}')")


async def refusal(pool, trading: str | None, market: str | None) -> str:
    with pytest.raises(ConfigError) as refused:
        await claim(pool, trading, market)
    return str(refused.value)


async def test_a_live_start_on_a_paper_runs_database_is_refused_saying_what_it_holds_and_the_way_out(db_pool):
    await claim(db_pool, "paper", "simulated")
    await used(db_pool)

    message = await refusal(db_pool, "live", "real")

    assert message.startswith("this database holds paper trading on a simulated market (simulator or synthetic); "
                              "this run is live trading on Kotak's real market: the live OMS would rebuild its "
                              "positions from the paper fills")
    assert "another data_dir" in message and "DATABASE_URL" in message


@pytest.mark.parametrize(("held", "run", "harm"), [
    (("paper", "simulated"), ("paper", "real"), "would warm up from the simulated candles"),  # paper on Kotak
    (("live", "real"), ("paper", "real"), "would rebuild its positions from the real orders"),
    (("paper", "real"), ("paper", "simulated"), "made-up ticks would be stored under the real instruments' tokens"),
])
async def test_a_run_of_another_kind_is_refused_naming_the_harm(db_pool, held, run, harm):
    await claim(db_pool, *held)
    await used(db_pool)

    message = await refusal(db_pool, *run)

    assert harm in message


async def test_a_refused_start_leaves_a_partial_stamp_as_it_was(db_pool):
    await db_pool.execute("INSERT INTO neopulse_meta (key, value) VALUES ('trading', 'paper')")
    await used(db_pool)

    await refusal(db_pool, "live", "real")

    assert dict(await db_pool.fetch("SELECT key, value FROM neopulse_meta")) == {"trading": "paper"}


async def test_the_same_kind_of_run_is_let_through_again(db_pool):
    await claim(db_pool, "live", "real")

    held = await claim(db_pool, "live", "real")

    assert held == {"trading": "live", "market": "real"}


async def test_a_replay_reads_a_live_database_and_claims_nothing(db_pool):
    await claim(db_pool, "live", "real")

    held = await claim(db_pool, None, None)

    assert held == {"trading": "live", "market": "real"}


async def test_a_replay_on_a_fresh_database_leaves_it_unstamped(db_pool):
    await claim(db_pool, None, None)

    assert await db_pool.fetchval("SELECT count(*) FROM neopulse_meta") == 0


async def test_split_processes_racing_on_a_fresh_database_all_start_on_one_stamp(db_pool):
    results = await asyncio.gather(*(claim(db_pool, "paper", "simulated") for _ in range(5)))

    assert results == [{"trading": "paper", "market": "simulated"}] * 5
    assert await db_pool.fetchval("SELECT count(*) FROM neopulse_meta") == 2


async def test_a_stamp_on_a_database_that_holds_nothing_moves_to_the_next_runs_use(db_pool):
    await claim(db_pool, "live", "real")  # a first live start that failed at the Kotak login: nothing written

    held = await claim(db_pool, "paper", "simulated")  # make run on the same data dir

    assert held == {"trading": "paper", "market": "simulated"}
    assert dict(await db_pool.fetch("SELECT key, value FROM neopulse_meta")) == held


@pytest.mark.parametrize("use", [("live", "real"), ("live", "simulated"), ("paper", "real")])
async def test_a_database_used_before_stamps_is_refused_for_live_or_the_real_market_until_its_use_is_confirmed(
        db_pool, use):
    await used(db_pool)  # paper fills, perhaps, from before this release

    message = await refusal(db_pool, *use)

    assert f"confirm it with `neopulse db stamp {use[0]} {use[1]}`" in message
    assert await db_pool.fetchval("SELECT count(*) FROM neopulse_meta") == 0


async def test_a_database_used_before_stamps_and_confirmed_live_is_let_through(db_pool):
    await used(db_pool)
    async with db_pool.acquire() as conn:
        await stamp(conn, "live", "real")  # neopulse db stamp live real

    assert await claim(db_pool, "live", "real") == {"trading": "live", "market": "real"}


async def test_a_database_used_before_stamps_is_stamped_as_this_paper_run_with_one_warning(db_pool, caplog):
    await used(db_pool)
    caplog.set_level(logging.WARNING, logger="shared.db.stamp")

    for _ in range(2):
        await claim(db_pool, "paper", "simulated")

    assert [r.getMessage()[:60] for r in caplog.records] == [
        "this database holds orders or ticks from before NeoPulse rec"]


async def test_a_fresh_database_is_stamped_without_a_warning(db_pool, caplog):
    caplog.set_level(logging.WARNING, logger="shared.db.stamp")

    await claim(db_pool, "paper", "simulated")

    assert caplog.records == []


def run_settings(database: str, **more) -> AppSettings:
    return AppSettings(**{"source": "synthetic", "use_database": True, "database_url": database, "grpc_port": 0,
                          "symbols": ["SBIN-EQ"], **more})


async def build(app: Monolith) -> None:
    try:
        await app.build()
    finally:
        await app._close()


async def test_a_live_monolith_on_a_paper_runs_database_is_refused_before_it_logs_in(database, db_pool):
    await build(Monolith(run_settings(database)))  # `make run`: paper on a generated market
    await used(db_pool)  # ... which saved something
    live = Monolith(run_settings(database, mode="live", source="kotak"))

    with pytest.raises(ConfigError, match="holds paper trading on a simulated market"):
        await build(live)


async def test_a_backtests_replay_builds_on_a_live_database(database, db_pool):
    await claim(db_pool, "live", "real")
    await store_tick(database, ist_ns(date(2026, 1, 20), 9, 30))
    replay = Monolith(run_settings(database, source="replay", replay_day=date(2026, 1, 20)))

    await build(replay)

    assert replay.clock.now_ns() == ist_ns(date(2026, 1, 20), 0, 0)


async def test_a_split_process_on_a_live_database_is_refused(database, db_pool):
    await claim(db_pool, "live", "real")
    await used(db_pool)
    closers: list = []

    try:
        with pytest.raises(ConfigError, match="holds live trading on Kotak's real market; this run is paper trading"):
            await build_module("risk", Bus(), run_settings(database), {}, ManualClock(0), closers)
    finally:
        for close in reversed(closers):
            await close()
