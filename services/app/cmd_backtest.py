"""`neopulse backtest`: the configured strategies over stored market days, paper-traded, and what they made.

Each IST day from --from to --to (default: the latest day market_ticks holds) that has stored ticks is replayed as
fast as the pipeline takes it through the whole monolith: the strategies as configured, risk with its limits and
the intraday square-off, the OMS with the VirtualBroker's fill rules, charges and paper account. Each day starts
afresh (flat, risk ACTIVE, indicators warmed up from the stored days before it only), as a monolith started that
morning would, and its orders stay in memory: the order ledger and the risk state in the database are never touched.

Prints a table (a line a day: trades, realised and unrealised P&L, charges, net; then each strategy: its P&L before
charges, its charges and net, and its round trips net of their charges (won, lost, breakeven, and those still open
at the end, marked at the last prices); then the days won and the worst drawdown of the running net: realised and
marked P&L after charges, read after every replayed tick batch, across the days) and writes it as JSON with --json;
--trades writes every filled order as a CSV row (day, IST time of its last fill, strategy, symbol, side, quantity,
average price, why it was placed: OrderRequest.reason). With --set NAME.PARAM=V1,V2 (repeatable) it runs every
combination of those values of the strategies' parameters over the same days and prints one line per combination
instead (a sweep). Exit codes: 0 done; 1 a day could not run (its strategies' warm-up could not read the stored
candles: a day is never traded cold); 2 bad config or no stored day in the range.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.app.backtest_report import DayResult, day_result, fills, report, round_trips, sweep_report, write_trades
from services.app.config import AppSettings, set_market_calendar, warn_unknown_env
from services.app.monolith import Monolith
from services.notifier.summary import DailySummary, summarise
from shared import config as cfg
from shared import logs, rpc, runtime
from shared.bus import Bus
from shared.contracts import oms_pb2, trading_pb2
from shared.errors import ConfigError

MAX_DAYS = 366
MAX_VARIANTS = 64  # combinations of --set values in one sweep
# After the day's last tick the book must stay still this long: the last candles' orders and risk's square-off
# (its timer looks every timer_interval_ms, 200) are done.
SETTLE_S = 1.0
SETTLE_WITHIN_S = 30.0
DAY_WITHIN_S = 3_600.0  # a day that takes longer is stopped: something is wrong


def add_parser(sub: Any) -> None:
    p = sub.add_parser("backtest", help="the strategies over stored market days, paper-traded, and what they made",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG): the strategies, risk and OMS settings")
    p.add_argument("--from", dest="first", type=date.fromisoformat, metavar="YYYY-MM-DD",
                   help="the first IST day (default: the latest stored day)")
    p.add_argument("--to", dest="last", type=date.fromisoformat, metavar="YYYY-MM-DD",
                   help="the last IST day (default: --from; alone, that one day)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--trades", type=Path, metavar="PATH", help="also write every filled order here, as CSV")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME.PARAM=V1[,V2...]",
                   help="a strategy's parameter at each of these values (repeatable: every combination runs, over "
                        "the same days, and the report compares them)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        toml = cfg.read_toml(args.config)
        settings = cfg.load(AppSettings, toml)
        if args.first and args.last and args.last < args.first:
            raise ConfigError(f"--to {args.last} is before --from {args.first}")
        if args.first and (args.last or args.first) - args.first > timedelta(days=MAX_DAYS):
            raise ConfigError(f"at most {MAX_DAYS} days at a time")
        if not settings.use_database:
            raise ConfigError("a backtest reads market_ticks: it needs the database (use_database = true)")
        runs = variants(toml, args.sets)
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    warn_unknown_env()
    logs.setup("ERROR")  # a day's fills, notices and square-off warnings would bury the report
    try:
        set_market_calendar(settings, toml)  # the variants differ in strategy parameters only
        results = asyncio.run(backtest(settings, [variant for _, variant in runs], args.first, args.last))
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        return runtime.exit_code(exc)
    swept = [(label, days) for (label, _), days in zip(runs, results, strict=True)]
    print(sweep_report(swept) if args.sets else report(results[0]))
    if args.json is not None:
        doc: Any = ([{"set": label, "days": [asdict(r) for r in days]} for label, days in swept] if args.sets
                    else [asdict(r) for r in results[0]])
        args.json.write_text(json.dumps(doc, indent=2))
    if args.trades is not None:
        write_trades(args.trades, swept, with_set=bool(args.sets))
    return 0


def variants(toml: dict[str, Any], sets: list[str]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Each combination of the --set values (NAME.PARAM=V1,V2,...) as (its label, the config to run): the
    strategies of the config (or the default one) with those parameters. Every one is validated here, before any
    day runs: a ConfigError names the bad --set or parameter."""
    if not sets:
        return [({}, toml)]
    from services.strategy.config import StrategySettings
    from services.strategy.engine import LOSS_LIMIT
    from services.strategy.plugins import strategy_class

    if os.environ.get("NEOPULSE_STRATEGY_STRATEGIES"):
        raise ConfigError("--set changes the strategies of the config file; NEOPULSE_STRATEGY_STRATEGIES would "
                          "replace them: unset it")
    strategies = [s.model_dump() for s in cfg.load(StrategySettings, toml).strategies]
    by_name = {s["name"]: s for s in strategies}
    axes = []
    for text in sets:
        target, _, values = text.partition("=")
        name, _, param = target.partition(".")
        if not name or not param or not values.strip():
            raise ConfigError(f"--set {text!r}: expected NAME.PARAM=VALUE[,VALUE...], "
                              "e.g. momentum_rsi.stop_loss_pct=0.5,1,2")
        if name not in by_name:
            raise ConfigError(f"--set {text}: no strategy named {name!r}; configured: {', '.join(by_name)}")
        known = [*strategy_class(by_name[name]["kind"]).Params.model_fields, LOSS_LIMIT]
        if param not in known:
            raise ConfigError(f"--set {text}: {by_name[name]['kind']} has no parameter {param!r}; known: "
                              f"{', '.join(known)}")
        axes.append([(target, value.strip()) for value in values.split(",")])
    combos = list(itertools.product(*axes))
    if len(combos) > MAX_VARIANTS:
        raise ConfigError(f"--set makes {len(combos)} combinations; at most {MAX_VARIANTS} at a time")
    out = []
    for combo in combos:
        configs = [{**s, "params": dict(s["params"])} for s in strategies]
        for target, value in combo:
            name, _, param = target.partition(".")
            config = next(c for c in configs if c["name"] == name)
            if param == LOSS_LIMIT:  # the strategy's, not its plugin's
                config[param] = value
            else:
                config["params"][param] = value
        variant = {**toml, "strategy": {**toml.get("strategy", {}), "strategies": configs}}
        try:
            cfg.load(StrategySettings, variant)
        except ConfigError as exc:
            raise ConfigError(f"--set {' '.join(f'{t}={v}' for t, v in combo)}: {exc}") from None
        out.append((dict(combo), variant))
    return out


async def backtest(settings: AppSettings, tomls: list[dict[str, Any]], first: date | None,
                   last: date | None) -> list[list[DayResult]]:
    """Every stored day of the range, one after another, for each config (a sweep's combinations), on one database
    (the embedded server started once)."""
    from shared.db.database import EMBEDDED_DB_NAME, ensure_database
    from shared.db.embedded import EmbeddedPostgres

    embedded = None
    url = settings.database_url.get_secret_value() if settings.database_url else None
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = await ensure_database(await asyncio.to_thread(embedded.start), EMBEDDED_DB_NAME)
    try:
        days = await stored_days(url, first, last)
        return [[await run_day(settings, toml, url, day) for day in days] for toml in tomls]
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def stored_days(url: str, first: date | None, last: date | None) -> list[date]:
    """The IST days of [first, last] with ticks in market_ticks; ConfigError when there is none."""
    import asyncpg

    from shared.clock import ist_ns
    from shared.db.queries import latest_tick_day

    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('market_ticks') IS NOT NULL"):  # NeoPulse never ran on it
            raise ConfigError("market_ticks does not exist: this database holds no NeoPulse data (check "
                              "NEOPULSE_DATA_DIR or DATABASE_URL), or run on the simulator or Kotak first")
        first = first or last or await latest_tick_day(conn)
        if first is None:
            raise ConfigError("market_ticks is empty: run on the simulator or Kotak first, so ticks are stored")
        last = last or first
        days = []
        day = first
        while day <= last:
            start, end = ist_ns(day, 0, 0), ist_ns(day + timedelta(days=1), 0, 0)
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM market_ticks WHERE ts >= to_timestamp($1::float8) "
                                   "AND ts < to_timestamp($2::float8))", start / 1e9, end / 1e9):
                days.append(day)
            day += timedelta(days=1)
    finally:
        await conn.close()
    if not days:
        raise ConfigError(f"no ticks stored from {first} to {last}")
    return days


class NetCurve:
    """The day's running net (realised + unrealised - charges, the OMS's positions marked at their last ticks), read
    after every replayed batch once the pipeline is at rest (a clock hook of the replay: the same days, the same
    curve): its lowest, its highest and its deepest fall from its best so far, from 0 (flat, before the open)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.low_paise = self.high_paise = self.drawdown_paise = 0

    async def on_clock(self) -> None:
        book = await self.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        self.add(book.realised_pnl_paise + book.unrealised_pnl_paise - book.charges_paise)

    def add(self, net_paise: int) -> None:
        self.low_paise, self.high_paise = min(self.low_paise, net_paise), max(self.high_paise, net_paise)
        self.drawdown_paise = max(self.drawdown_paise, self.high_paise - net_paise)


class BacktestDay(Monolith):
    """A day's monolith whose replay also reads its running net after every batch (NetCurve)."""

    def __init__(self, settings: AppSettings, toml: dict[str, Any]) -> None:
        super().__init__(settings, toml)
        self.curve = NetCurve(self.bus)

    async def build(self) -> None:
        await super().build()
        ingestion = next(c for c in self.components if c.name == "ingestion")
        ingestion.clock_hooks.append(self.curve.on_clock)  # type: ignore[attr-defined]  # after the modules' turns


async def run_day(settings: AppSettings, toml: dict[str, Any], url: str, day: date) -> DayResult:
    """One day replayed through a monolith of its own (no Telegram, any free gRPC port), read once it is still."""
    day_settings = settings.model_copy(update={
        "mode": "paper", "source": "replay", "replay_day": day, "speed": 0.0, "database_url": SecretStr(url),
        "grpc_port": 0, "metrics_port": 0, "busy_poll": False})
    app = BacktestDay(day_settings, toml)
    # Its fills are not the trader's: nothing goes to Telegram, whatever the config or the environment say.
    app.notifier_overrides = {"telegram_bot_token": None, "telegram_bot_token_file": None,
                              "daily_summary_time_ist": ""}
    app.settle_batches = True  # the same days, the same results
    stop = asyncio.Event()
    out: list[DayResult] = []
    began = time.monotonic()

    async def replay_then_read() -> None:
        try:
            await app.started.wait()
            ingestion = next(c for c in app.components if c.name == "ingestion")
            await ingestion.ended.wait()  # type: ignore[attr-defined]
            summary, orders, positions = await _still_then_summary(app, day)
            oms = next(c for c in app.components if c.name == "oms")
            charges = await oms.ledger.fill_charges(day)  # type: ignore[attr-defined]  # by order, as booked
            marks = {p.token: p.last_price_paise for p in positions.positions if p.last_price_paise}
            app.curve.add(summary.net_pnl_paise)
            out.append(day_result(day, summary, time.monotonic() - began, fills(day, orders),
                                  round_trips(orders, charges, marks), app.curve))
        finally:
            stop.set()

    try:
        await asyncio.wait_for(app.run(extra=[replay_then_read], stop=stop), DAY_WITHIN_S)
    except TimeoutError:  # its message is empty: "neopulse: " alone said nothing of which day or why
        raise RuntimeError(f"the backtest of {day} did not finish within {DAY_WITHIN_S:g} s; see the log") from None
    if not out:
        raise RuntimeError(f"the backtest of {day} ended without its results; see the log")
    return out[0]


async def _still_then_summary(app: Any, day: date) -> tuple[DailySummary, list[trading_pb2.OrderUpdate],
                                                            oms_pb2.ListPositionsResponse]:
    """The day's summary, orders and positions once the OMS has applied nothing new for SETTLE_S (the orders of the
    last candles, closed when the replay's clock moved to the end of the day, and their fills)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_WITHIN_S
    seen = -1
    while True:
        await app.bus.drain()
        positions = await app.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        if positions.as_of_sequence == seen or loop.time() > deadline:
            break
        seen = positions.as_of_sequence
        await asyncio.sleep(SETTLE_S)
    orders = list((await app.bus.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(limit=1_000_000))).orders)
    return summarise(day, orders, positions), orders, positions
