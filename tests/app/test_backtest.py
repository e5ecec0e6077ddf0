"""`neopulse backtest` as a process, on days of synthetic ticks stored in a real PostgreSQL: the whole monolith
replays each day (MOMENTUM_RSI, risk, the OMS with the VirtualBroker) and reports what it made. Its orders never
reach the order ledger, and the same days give the same report."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
from datetime import date

import asyncpg
import pytest

from services.app.backtest_report import (
    DayResult,
    max_drawdown_paise,
    report,
    round_trips,
    strategy_line,
)
from services.app.cmd_backtest import variants
from services.ingestion.instrument_store import upsert_instruments
from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.db import partitions
from shared.db.config import DatabaseSettings
from shared.errors import ConfigError
from shared.marketdata import SyntheticMarket, nse_instruments
from tests.grpc.procs import ROOT
from tests.notifier.fake_bot_api import FakeBotApi

SYMBOLS = ["RELIANCE-EQ", "TCS-EQ", "INFY-EQ", "SBIN-EQ", "ITC-EQ"]
THURSDAY, FRIDAY = date(2026, 11, 19), date(2026, 11, 20)
# Market orders: LIMIT orders at a trending synthetic market's close mostly go unfilled, and the test wants trades.
STRATEGY = """
[[strategy.strategies]]
name = "momentum_rsi"
kind = "MOMENTUM_RSI"
[strategy.strategies.params]
order_type = "MARKET"
"""


async def store_session(database: str, day: date, minutes: int, seed: int, at: tuple[int, int] = (9, 15)) -> None:
    """`minutes` of the day's session from `at` IST, a tick of every symbol each second, as ingestion stores them."""
    instruments = nse_instruments(SYMBOLS)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        await upsert_instruments(pool, instruments)
        start = ist_ns(day, *at)
        writer = TickWriter(pool, DatabaseSettings(), clock=ManualClock(start))
        market = SyntheticMarket(instruments, seed=seed, vol_bps=2.0)
        for second in range(minutes * 60):
            writer.offer(market_pb2.TickBatch(ticks=market.next_ticks(start + second * NS, len(SYMBOLS))))
        await writer.close(grace_s=60)
        assert writer.persisted == minutes * 60 * len(SYMBOLS)
    finally:
        await pool.close()


@pytest.fixture
async def bot_api():
    api = FakeBotApi()
    await api.start()
    yield api
    await api.stop()


async def backtest(database: str, *args: str, bot_api: str = "") -> subprocess.CompletedProcess:
    """`neopulse backtest ARGS`, with a Telegram bot configured (at `bot_api`): a backtest must not use it."""
    env = {**os.environ, "NEO_LOG_FILE_ENABLED": "false", "NEOPULSE_DATABASE_URL": database,
           "NEOPULSE_SYMBOLS": json.dumps(SYMBOLS), "NEOPULSE_NOTIFIER_TELEGRAM_BOT_TOKEN": "123456:TEST-token",
           "NEOPULSE_NOTIFIER_TELEGRAM_BASE_URL": bot_api or "http://127.0.0.1:9",
           "NEOPULSE_NOTIFIER_ALLOWED_CHAT_IDS": "[42]"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.app.cli", "backtest", *args,
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(proc.pid, proc.returncode, out.decode(), err.decode())


@pytest.mark.slow
async def test_a_backtest_replays_each_stored_day_reports_it_and_leaves_the_ledger_and_telegram_alone(
        database, tmp_path, bot_api):
    await store_session(database, THURSDAY, minutes=45, seed=5)
    await store_session(database, FRIDAY, minutes=40, seed=6, at=(14, 45))  # through the 15:15 square-off
    out, config = tmp_path / "results.json", tmp_path / "strategies.toml"
    config.write_text(STRATEGY)

    trades = tmp_path / "trades.csv"
    done = await backtest(database, "--config", str(config), "--from", "2026-11-18", "--to", "2026-11-20",
                          "--json", str(out), "--trades", str(trades), bot_api=bot_api.url)
    again = await backtest(database, "--config", str(config), "--from", "2026-11-19", "--to", "2026-11-20")

    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert [r["day"] for r in results] == ["2026-11-19", "2026-11-20"]  # the 18th has no ticks
    thursday, friday = results
    for r in results:
        assert r["trades"] > 0 and r["strategies"]["momentum_rsi"]["trades"] > 0
        assert r["net_pnl_paise"] == r["realised_pnl_paise"] + r["unrealised_pnl_paise"] - r["charges_paise"] != 0
    assert set(thursday["strategies"]) == {"momentum_rsi"}  # its ticks end at 10:00, before the square-off
    # Squared off at 15:15, its exits the strategy's own: its line is the day's realised P&L, no "SQUAREOFF" line.
    assert set(friday["strategies"]) == {"momentum_rsi"} and friday["unrealised_pnl_paise"] == 0
    assert friday["strategies"]["momentum_rsi"]["realised_pnl_paise"] == friday["realised_pnl_paise"]
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["day", "trades", "realised", "unrealised", "charges", "net"]
    assert lines[1].startswith("2026-11-19") and lines[2].startswith("2026-11-20") and lines[3].startswith("total")
    assert lines[4].startswith("momentum_rsi: ") and lines[5].startswith("days won ")
    assert again.returncode == 0 and again.stdout == done.stdout  # the same days, the same report
    rows = list(csv.DictReader(trades.read_text().splitlines()))
    assert len(rows) == sum(len(r["fills"]) for r in results) >= thursday["trades"] + friday["trades"]
    assert {row["day"] for row in rows} == {"2026-11-19", "2026-11-20"}
    assert all(row["reason"].startswith(("RSI crossed", "exit ")) for row in rows if row["strategy"] == "momentum_rsi")
    assert {row["reason"] for row in rows if row["strategy"] == "SQUAREOFF"} == {"intraday square-off"}
    assert bot_api.calls == []
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM order_ledger") == 0
    finally:
        await conn.close()


async def store_ticks(database: str, day: date, prices: list[tuple[int, int]]) -> None:
    """SBIN-EQ ticks of `day` from 09:30 IST: (second from then, price in paise)."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        await upsert_instruments(pool, nse_instruments(SYMBOLS))
        start = ist_ns(day, 9, 30)
        writer = TickWriter(pool, DatabaseSettings(), clock=ManualClock(start))
        for second, price in prices:
            writer.offer(market_pb2.TickBatch(ticks=[market_pb2.Tick(
                token=3045, exchange_segment="nse_cm", ts_ns=start + second * NS, ltp_paise=price, ltq=1,
                volume=second + 1)]))
        await writer.close(grace_s=60)
    finally:
        await pool.close()


@pytest.mark.slow
async def test_a_stop_loss_exits_at_the_tick_that_reaches_it_not_at_the_minutes_close(database, tmp_path):
    """An entry at 100.00 (RSI(3) crossing 60 above its EMA at 09:35's close); at 09:36:30 a tick at 98.90, 1.1%
    under, then the minute closes at 101.00. With the stop read on closes only, that close is no stop and the
    position stays open; on ticks it exits at the market there: a loss of Rs 1.10 a share. At 98.90, not at the
    99.20 before it: the paper broker takes its ticks on a stream of its own, and the order made from the 98.90
    used to overtake it there and fill at the tick before (a loss of Rs 0.80)."""
    minutes = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]
    prices = [(m * 60 + 5, price) for m, price in enumerate(minutes)]
    prices += [(360, 100_00), (370, 100_00), (380, 99_20), (390, 98_90), (391, 98_90), (400, 101_00),
               (419, 101_00), (425, 101_00), (480, 101_00), (540, 101_00)]
    await store_ticks(database, THURSDAY, prices)
    config = tmp_path / "stop.toml"
    config.write_text("""
[[strategy.strategies]]
name = "stopped"
kind = "MOMENTUM_RSI"
symbols = ["SBIN-EQ"]
[strategy.strategies.params]
rsi_period = 3
ema_period = 3
order_type = "MARKET"
stop_loss_pct = 1
""")
    out = tmp_path / "stop.json"

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--json", str(out))

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(out.read_text())
    assert (result["trades"], result["unrealised_pnl_paise"]) == (2, 0), done.stdout
    assert result["realised_pnl_paise"] == -110, done.stdout


ORB_PRICES = [(5, 100_00), (40, 101_00), (70, 99_00), (150, 100_50), (185, 100_80), (200, 101_00), (230, 103_00),
              (260, 105_00), (300, 104_00), (400, 104_00), (540, 104_00)]
ORB = """
[[strategy.strategies]]
name = "orb"
kind = "ORB"
symbols = ["SBIN-EQ"]
[strategy.strategies.params]
session_start_ist = "09:30"
range_minutes = 3
"""


@pytest.mark.slow
async def test_an_opening_range_breakout_enters_at_the_break_and_takes_its_target_in_a_backtest(database, tmp_path):
    """ORB on a 3-minute range from 09:30 (99.00-101.00): the tick at 101.00 after it buys, the one at 105.00 (twice
    the risk of 2.00 above the entry) sells; both MARKET orders fill at the ticks that made them: Rs 4.00."""
    done, result, trades = await orb_backtest(database, tmp_path, ORB)

    assert (result["trades"], result["realised_pnl_paise"], result["unrealised_pnl_paise"]) == (2, 400, 0), \
        done.stdout
    assert trades == [
        ["day", "time_ist", "strategy", "symbol", "side", "quantity", "price", "reason"],
        ["2026-11-19", "09:33:20", "orb", "SBIN-EQ", "BUY", "1", "101.00",
         "broke above the opening range ₹99.00-₹101.00 (09:30-09:33 IST): tick ₹101.00"],
        ["2026-11-19", "09:34:20", "orb", "SBIN-EQ", "SELL", "1", "105.00", "target 2R ₹105.00: tick ₹105.00"]]
    assert [fill["price_paise"] for fill in result["fills"]] == [101_00, 105_00]
    assert ("orb: 2 trades, ₹4.00 before charges, charges ₹0.11, net ₹3.89 · 1 round trip net of charges, 100% won, "
            "average win ₹3.89, profit factor -") in done.stdout.splitlines()
    # The replay's clock starts at 0: no tick partitions for 1970 in the trader's database (their DDL locks the
    # live writer out, and the retention then drops them with a misleading log line).
    conn = await asyncpg.connect(database)
    try:
        assert not [d for d in await partitions.existing_days(conn) if d.year == 1970]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_an_orb_trade_leaves_at_exit_at_ist_in_a_backtest(database, tmp_path):
    """ORB without a target and exit_at_ist 09:35: the break at 101.00 buys; the tick at 09:35:00 (104.00) closes
    09:34's candle, the time exit sells at the market there: Rs 3.00."""
    done, result, trades = await orb_backtest(
        database, tmp_path, ORB + 'target_r = 0\nentry_until_ist = "09:34"\nexit_at_ist = "09:35"\n')

    assert (result["trades"], result["realised_pnl_paise"], result["unrealised_pnl_paise"]) == (2, 300, 0), \
        done.stdout
    assert trades[2][1:] == ["09:35:00", "orb", "SBIN-EQ", "SELL", "1", "104.00", "time exit at 09:35 IST"]


async def orb_backtest(database: str, tmp_path, config_text: str) -> tuple[subprocess.CompletedProcess, dict,
                                                                           list[list[str]]]:
    """A backtest of ORB_PRICES stored for Thursday with `config_text`: the process, its day's JSON result and its
    trade CSV's rows (the header first)."""
    await store_ticks(database, THURSDAY, ORB_PRICES)
    config = tmp_path / "orb.toml"
    config.write_text(config_text)
    out, trades = tmp_path / "orb.json", tmp_path / "orb.csv"

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--json", str(out),
                          "--trades", str(trades))

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(out.read_text())
    return done, result, list(csv.reader(trades.read_text().splitlines()))


@pytest.mark.slow
async def test_a_range_without_stored_ticks_exits_2_saying_so(database):
    done = await backtest(database, "--from", "2026-11-16", "--to", "2026-11-17")
    alone = await backtest(database, "--to", "2026-11-17")  # that one day

    assert done.returncode == 2
    assert "no ticks stored from 2026-11-16 to 2026-11-17" in done.stderr
    assert alone.returncode == 2 and "no ticks stored from 2026-11-17 to 2026-11-17" in alone.stderr


@pytest.mark.slow
async def test_a_backtest_on_a_database_neopulse_never_used_exits_2_saying_so(pg_server):
    """A fresh data dir, a typo in NEOPULSE_DATA_DIR or a new DATABASE_URL: one line, not an asyncpg traceback."""
    import uuid

    name = f"b_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        done = await backtest(pg_server.rsplit("/", 1)[0] + f"/{name}")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "market_ticks does not exist: this database holds no NeoPulse data" in done.stderr


def test_to_before_from_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "services.app.cli", "backtest", "--from", "2026-11-20", "--to",
                           "2026-11-19"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NEO_LOG_FILE_ENABLED": "false"})

    assert done.returncode == 2 and "--to 2026-11-19 is before --from 2026-11-20" in done.stderr


def day(net: int, name: str = "d") -> DayResult:
    return DayResult(day=name, trades=1, realised_pnl_paise=net, unrealised_pnl_paise=0, charges_paise=0,
                     net_pnl_paise=net, strategies={"s": {"trades": 1, "realised_pnl_paise": net,
                                                          "unrealised_pnl_paise": 0}})


def test_the_worst_drawdown_is_the_deepest_fall_of_the_running_net_from_its_best():
    assert max_drawdown_paise([day(100), day(-300), day(50), day(-100), day(500)]) == 350  # 100 -> -250
    assert max_drawdown_paise([day(-100), day(-50)]) == 150  # from 0, before any gain
    assert max_drawdown_paise([day(10), day(20)]) == 0


def test_the_report_has_a_line_a_day_the_totals_each_strategy_and_the_days_won():
    lines = report([day(1_000_00, "2026-11-19"), day(-250_50, "2026-11-20")]).splitlines()

    assert lines[1].split() == ["2026-11-19", "1", "₹1,000.00", "₹0.00", "₹0.00", "₹1,000.00"]
    assert lines[3].split() == ["total", "2", "₹749.50", "₹0.00", "₹0.00", "₹749.50"]
    assert lines[4:] == ["s: 2 trades, ₹749.50 before charges, charges ₹0.00, net ₹749.50",
                         "days won 1 of 2 · worst drawdown ₹250.50 (of the running net after charges, read after "
                         "every tick batch) · net ₹749.50"]


def filled(tag: str, side: int, quantity: int, price: int, minute: int, token: int = 3045) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(
        status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=quantity, average_price_paise=price,
        ts_ns=ist_ns(THURSDAY, 10, minute), sequence=minute, request=trading_pb2.OrderRequest(
            token=token, side=side, quantity=quantity, strategy_tag=tag, product=trading_pb2.PRODUCT_MIS))


def test_round_trips_are_each_strategys_positions_opened_and_closed_the_square_off_closing_theirs():
    buy, sell = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
    orders = [
        filled("a", buy, 10, 100_00, 1), filled("a", sell, 10, 103_00, 2),  # +30.00
        filled("a", buy, 5, 100_00, 3), filled("a", sell, 2, 99_00, 4), filled("a", sell, 3, 99_00, 5),  # -5.00
        filled("b", buy, 10, 100_00, 6), filled("b", sell, 20, 101_00, 7),  # +10.00, then short 10 at 101.00
        filled("c", buy, 4, 100_00, 8),  # open at the end: no closed round trip
        filled("d", sell, 5, 99_00, 8),  # short too, but after b: the square-off's 10 are all b's
        filled("SQUAREOFF", buy, 10, 100_00, 9),  # closes b's short (+10.00); c is long: not it
        filled("a", buy, 1, 100_00, 10, token=11536)]

    trips = round_trips(list(reversed(orders)))

    assert {tag: t.closed for tag, t in trips.items() if t.closed} == {"a": [30_00, -5_00], "b": [10_00, 10_00]}


def test_a_strategys_line_gives_its_round_trips_record():
    line = strategy_line("a", {"trades": 5, "realised_pnl_paise": 25_00, "unrealised_pnl_paise": 0,
                               "round_trips_won": 1, "round_trips_lost": 1, "won_paise": 30_00, "lost_paise": -5_00})

    assert line == ("a: 5 trades, ₹25.00 before charges, charges ₹0.00, net ₹25.00 · 2 round trips net of charges, "
                    "50% won, average win ₹30.00, average loss -₹5.00, profit factor 6.00")


@pytest.mark.slow
async def test_a_sweep_runs_each_combination_of_the_set_values_over_the_same_days(database, tmp_path):
    """ORB's day above with a target of 2R (taken: two trades) and with none (the position left open: one)."""
    await store_ticks(database, THURSDAY, ORB_PRICES)
    config, out, trades = tmp_path / "orb.toml", tmp_path / "sweep.json", tmp_path / "sweep.csv"
    config.write_text(ORB)

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--set", "orb.target_r=2,0",
                          "--set", "orb.buffer_pct=0", "--json", str(out), "--trades", str(trades))

    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0][:4] == ["orb.target_r", "orb.buffer_pct", "trades", "net"]
    assert [(row[0], row[1], row[2]) for row in lines[1:]] == [("2", "0", "2"), ("0", "0", "1")]
    assert lines[1][-3:] == ["1", "100%", "-"]  # one round trip, won
    runs = json.loads(out.read_text())
    assert [run["set"] for run in runs] == [{"orb.target_r": "2", "orb.buffer_pct": "0"},
                                             {"orb.target_r": "0", "orb.buffer_pct": "0"}]
    assert [run["days"][0]["trades"] for run in runs] == [2, 1]
    rows = list(csv.DictReader(trades.read_text().splitlines()))
    assert [row["set"] for row in rows] == ["orb.target_r=2 orb.buffer_pct=0"] * 2 + ["orb.target_r=0 orb.buffer_pct=0"]


@pytest.mark.parametrize(("sets", "said"), [
    (["momentum_rsi.stop_loss_pct"], "expected NAME.PARAM=VALUE[,VALUE...]"),
    (["nobody.stop_loss_pct=1"], "no strategy named 'nobody'; configured: momentum_rsi"),
    (["momentum_rsi.no_such=1"], "MOMENTUM_RSI has no parameter 'no_such'; known: rsi_period"),
    (["momentum_rsi.rsi_period=7,-3"], "--set momentum_rsi.rsi_period=-3: "),
    (["momentum_rsi.rsi_period=" + ",".join(map(str, range(2, 12))), "momentum_rsi.ema_period=" +
      ",".join(map(str, range(2, 12)))], "100 combinations; at most 64")])
def test_a_bad_set_is_a_config_error_naming_it(sets, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        variants({}, sets)


def test_each_combination_of_the_set_values_is_a_config_of_its_own():
    runs = variants({"strategy": {"close_grace_ms": 500}},
                    ["momentum_rsi.stop_loss_pct=0.5, 1", "momentum_rsi.order_type=MARKET",
                     "momentum_rsi.max_daily_loss=2500"])

    fixed = {"momentum_rsi.order_type": "MARKET", "momentum_rsi.max_daily_loss": "2500"}
    assert [label for label, _ in runs] == [{"momentum_rsi.stop_loss_pct": "0.5", **fixed},
                                            {"momentum_rsi.stop_loss_pct": "1", **fixed}]
    strategy = runs[1][1]["strategy"]
    assert strategy["close_grace_ms"] == 500
    assert strategy["strategies"][0]["params"] == {"stop_loss_pct": "1", "order_type": "MARKET"}
    assert strategy["strategies"][0]["max_daily_loss"] == "2500"  # the strategy's limit, beside its params
    assert variants({"a": 1}, []) == [({}, {"a": 1})]


def test_speed_0_is_for_a_replay_only():
    from services.app.config import AppSettings
    from shared import config as cfg
    from shared.errors import ConfigError

    assert cfg.load(AppSettings, {}, source="replay", speed=0).speed == 0
    with pytest.raises(ConfigError, match=r"speed 0 .* is for source = replay"):
        cfg.load(AppSettings, {}, source="synthetic", speed=0)
