"""`neopulse backtest`, second review: a day's strategies start warm however slow the stored candles are to read (or
the day fails, saying why); the round trips' record is net of charges, a round trip of exactly 0 breaks even and one
still open at the end is shown open; the worst drawdown is that of the running net within the days, not only of
their closes."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from services.app.backtest_report import (
    DayResult,
    max_drawdown_paise,
    round_trips,
    strategy_line,
    strategy_result,
    sweep_report,
)
from services.notifier.summary import StrategyDay
from services.strategy.candles import MINUTE_NS
from services.strategy.warmup import StoredCandles
from shared.clock import NS
from shared.contracts import trading_pb2
from shared.errors import RetryableError
from tests.app.test_backtest import ORB, THURSDAY, backtest, day, filled, store_ticks
from tests.strategy.test_warm_start import (
    FALLING_THEN_JUMP,
    M0915,
    SBIN,
    SMALL,
    Restarted,
    minute_ticks,
    settings,
    store,
)

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


# -- warm-up -------------------------------------------------------------------------------------------------------
async def test_a_backtest_warms_its_strategies_up_however_long_the_stored_candles_take_to_read(db_pool):
    """The read waits behind a lock for longer than warm_up_timeout_s: live, the strategies would start cold."""
    await store(db_pool, minute_ticks(FALLING_THEN_JUMP))
    replay = Restarted(settings(SMALL, warm_up_timeout_s=0.3), M0915 + 6 * MINUTE_NS + 1 * NS, StoredCandles(db_pool))
    replay.module.clock_driven = True  # as Monolith.build makes it for a backtest
    async with db_pool.acquire() as locker, locker.transaction():
        await locker.execute("LOCK TABLE market_ticks IN ACCESS EXCLUSIVE MODE")
        starting = asyncio.create_task(replay.module.start())
        await asyncio.wait({starting}, timeout=0.6)  # twice the timeout: a live start has given up by now

    await starting

    assert list(replay.strategy._closes[SBIN]) == FALLING_THEN_JUMP


async def test_a_backtest_day_whose_warm_up_cannot_read_the_stored_candles_fails_saying_why(database):
    pool = await asyncpg.create_pool(database, min_size=0, max_size=1)
    await pool.close()  # every read fails
    replay = Restarted(settings(SMALL), M0915 + 6 * MINUTE_NS, StoredCandles(pool))
    replay.module.clock_driven = True

    with pytest.raises(RetryableError, match=r"the strategies' warm-up could not read the stored candles before "
                                             r"2026-01-19 09:21 IST \(InterfaceError: .*\); a backtest day does not "
                                             r"start cold"):
        await replay.module.start()


# -- the round trips' record ---------------------------------------------------------------------------------------
def charged(tag: str, side: int, quantity: int, price: int, minute: int, charges: dict[str, int],
            paid: int) -> trading_pb2.OrderUpdate:
    """A filled order (tests.app.test_backtest.filled) whose fills were charged `paid` paise, noted in `charges`."""
    order = filled(tag, side, quantity, price, minute)
    order.internal_id = f"o{minute}"
    charges[order.internal_id] = paid
    return order


def test_each_round_trip_is_net_of_its_orders_charges_a_turning_orders_shared_by_quantity():
    charges: dict[str, int] = {}
    orders = [charged("a", BUY, 10, 100_00, 1, charges, 20_00),
              charged("a", SELL, 20, 101_00, 2, charges, 40_00),  # closes 10 (Rs 20 of it), opens a short of 10
              charged("a", BUY, 10, 100_00, 3, charges, 20_00)]

    trips = round_trips(orders, charges)["a"]

    assert (trips.closed, trips.charges_paise) == ([10_00 - 40_00, 10_00 - 40_00], 80_00)


def test_a_square_offs_charges_are_shared_by_the_strategies_it_closed_in_proportion():
    charges: dict[str, int] = {}
    orders = [charged("a", BUY, 30, 100_00, 1, charges, 0), charged("b", BUY, 10, 100_00, 2, charges, 0),
              charged("SQUAREOFF", SELL, 40, 100_00, 3, charges, 40_00)]

    trips = round_trips(orders, charges)

    assert (trips["a"].closed, trips["b"].closed) == ([-30_00], [-10_00])


def test_a_round_trip_of_exactly_nothing_after_charges_is_breakeven_not_lost():
    charges: dict[str, int] = {}
    orders = [charged("a", BUY, 10, 100_00, 1, charges, 5_00), charged("a", SELL, 10, 101_00, 2, charges, 5_00)]

    figures = strategy_result(StrategyDay(trades=2, realised_pnl_paise=10_00), round_trips(orders, charges)["a"])

    assert (figures["round_trips_won"], figures["round_trips_lost"], figures["round_trips_breakeven"]) == (0, 0, 1)


def test_a_round_trip_open_at_the_end_is_shown_open_marked_at_the_last_price_net_of_its_charges():
    charges: dict[str, int] = {}
    orders = [charged("a", BUY, 10, 100_00, 1, charges, 20)]
    figures = strategy_result(StrategyDay(trades=1, unrealised_pnl_paise=30_00),
                              round_trips(orders, charges, {3045: 103_00})["a"])

    line = strategy_line("a", figures)

    assert line == "a: 1 trades, ₹30.00 before charges, charges ₹0.20, net ₹29.80 · 1 open at the end, marked ₹29.80"


def test_a_strategys_line_gives_its_charges_net_and_round_trips_record_net_of_charges():
    line = strategy_line("a", {"trades": 6, "realised_pnl_paise": 25_00, "unrealised_pnl_paise": 0,
                               "charges_paise": 3_00, "round_trips_won": 1, "round_trips_lost": 1,
                               "round_trips_breakeven": 1, "won_paise": 29_00, "lost_paise": -6_00})

    assert line == ("a: 6 trades, ₹25.00 before charges, charges ₹3.00, net ₹22.00 · 3 round trips net of charges, "
                    "33% won, 1 breakeven, average win ₹29.00, average loss -₹6.00, profit factor 4.83")


def test_a_sweeps_columns_say_its_round_trips_are_net_of_charges():
    header = sweep_report([({"orb.target_r": "2"}, [day(1_00)])]).splitlines()[0]

    assert header.split("  ")[-2:] == ["won (net)", "profit factor (net)"]


@pytest.mark.slow
async def test_a_round_trip_that_loses_after_its_charges_is_reported_lost_beside_its_charges(database, tmp_path):
    """ORB, 1,000 SBIN bought at the break of 101.00 and sold at its target 101.08: Rs 80 before charges, about Rs 83
    of them."""
    await store_ticks(database, THURSDAY, [(5, 100_00), (40, 101_00), (70, 99_00), (150, 100_50), (185, 100_80),
                                           (200, 101_00), (230, 101_08), (260, 101_08), (300, 101_05), (540, 101_05)])
    config, out = tmp_path / "orb.toml", tmp_path / "orb.json"
    config.write_text(ORB + "quantity = 1000\ntarget_r = 0.04\n")

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--json", str(out))

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(out.read_text())
    orb = result["strategies"]["orb"]
    assert (orb["round_trips_won"], orb["round_trips_lost"], orb["charges_paise"], orb["lost_paise"]) == (
        0, 1, result["charges_paise"], 80_00 - result["charges_paise"]), done.stdout


# -- the worst drawdown --------------------------------------------------------------------------------------------
def test_the_worst_drawdown_counts_the_fall_within_a_day_from_the_best_before_it():
    """Both days close up; day 1 was up Rs 6,000 before it closed at Rs 5,000, day 2 down Rs 3,000 (at Rs 2,000 on the
    two days) before it closed up Rs 1,000."""
    up = DayResult(day="1", trades=2, realised_pnl_paise=5_000_00, unrealised_pnl_paise=0, charges_paise=0,
                   net_pnl_paise=5_000_00, intraday_high_paise=6_000_00, intraday_drawdown_paise=1_000_00)
    fell_then_rose = DayResult(day="2", trades=2, realised_pnl_paise=1_000_00, unrealised_pnl_paise=0,
                               charges_paise=0, net_pnl_paise=1_000_00, intraday_low_paise=-3_000_00,
                               intraday_high_paise=1_000_00, intraday_drawdown_paise=3_000_00)

    assert max_drawdown_paise([up, fell_then_rose]) == 4_000_00  # from Rs 6,000 to Rs 2,000


@pytest.mark.slow
async def test_a_backtest_day_that_fell_while_a_position_was_open_and_closed_up_reports_that_fall(database, tmp_path):
    """ORB, 1,000 SBIN bought at the break of 101.00; a tick at 99.50 (Rs 1,500 under, above the stop at 99.00);
    then its target 105.00: the day closes up almost Rs 4,000, having been down Rs 1,500 and the entry's charges."""
    await store_ticks(database, THURSDAY, [(5, 100_00), (40, 101_00), (70, 99_00), (150, 100_50), (185, 100_80),
                                           (200, 101_00), (230, 99_50), (260, 105_00), (300, 104_00), (540, 104_00)])
    config, out = tmp_path / "orb.toml", tmp_path / "orb.json"
    config.write_text(ORB + "quantity = 1000\n")

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--json", str(out))

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(out.read_text())
    fell = result["intraday_drawdown_paise"]
    assert result["net_pnl_paise"] > 0 and 1_500_00 < fell < 1_500_00 + result["charges_paise"], done.stdout
