"""`neopulse backtest`: the configured strategies over stored market days, paper-traded, and what they made.

Each IST day from --from to --to (default: the latest day market_ticks holds) that has stored ticks is replayed as
fast as the pipeline takes it through the whole monolith: the strategies as configured, risk with its limits and
the intraday square-off, the OMS with the VirtualBroker's fill rules, charges and paper account. Each day starts
afresh (flat, risk ACTIVE, indicators warmed up from the stored days before it only), as a monolith started that
morning would, and its orders stay in memory: the order ledger and the risk state in the database are never touched.

Prints a table (a line a day: trades, realised and unrealised P&L, charges, net; then each strategy, the days won,
the worst drawdown of the days' running net) and writes it as JSON with --json; --trades writes every filled order
as a CSV row (day, IST time of its last fill, strategy, symbol, side, quantity, average price, why it was placed:
OrderRequest.reason). With --set NAME.PARAM=V1,V2 (repeatable) it runs every combination of those values of the
strategies' parameters over the same days and prints one line per combination instead (a sweep). Exit codes: 0
done; 2 bad config or no stored day in the range.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.app.config import AppSettings, warn_unknown_env
from services.notifier.summary import DailySummary, attribute, summarise
from shared import clock, logs, rpc, runtime
from shared import config as cfg
from shared.contracts import oms_pb2, trading_pb2
from shared.errors import ConfigError
from shared.money import fmt_inr
from shared.positions import PositionBook

MAX_DAYS = 366
MAX_VARIANTS = 64  # combinations of --set values in one sweep
# After the day's last tick the book must stay still this long: the last candles' orders and risk's square-off
# (its timer looks every timer_interval_ms, 200) are done.
SETTLE_S = 1.0
SETTLE_WITHIN_S = 30.0
DAY_WITHIN_S = 3_600.0  # a day that takes longer is stopped: something is wrong


@dataclass
class DayResult:
    day: str
    trades: int
    realised_pnl_paise: int
    unrealised_pnl_paise: int
    charges_paise: int
    net_pnl_paise: int
    strategies: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    # Each filled order, in the order of their last fills: FILL_FIELDS.
    fills: list[dict[str, Any]] = field(default_factory=list)


FILL_FIELDS = ("day", "time_ist", "strategy", "symbol", "side", "quantity", "price_paise", "reason")


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
    clock.set_holidays(settings.holidays)
    clock.set_special_sessions(settings.special_session_map())
    try:
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


def write_trades(path: Path, runs: list[tuple[dict[str, str], list[DayResult]]], with_set: bool = False) -> None:
    """Every day's filled orders as CSV, the price in rupees; in a sweep, each row first says its combination."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*(["set"] if with_set else []), *FILL_FIELDS[:-2], "price", "reason"])
        for label, results in runs:
            for r in results:
                for fill in r.fills:
                    row = [fill[name] for name in FILL_FIELDS]
                    row[-2] = f"{fill['price_paise'] / 100:.2f}"
                    writer.writerow([*([set_label(label)] if with_set else []), *row])


def set_label(label: dict[str, str]) -> str:
    return " ".join(f"{target}={value}" for target, value in label.items())


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


async def run_day(settings: AppSettings, toml: dict[str, Any], url: str, day: date) -> DayResult:
    """One day replayed through a monolith of its own (no Telegram, any free gRPC port), read once it is still."""
    from services.app.monolith import Monolith

    day_settings = settings.model_copy(update={
        "mode": "paper", "source": "replay", "replay_day": day, "speed": 0.0, "database_url": SecretStr(url),
        "grpc_port": 0, "metrics_port": 0, "busy_poll": False})
    app = Monolith(day_settings, toml)
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
            summary, orders = await _still_then_summary(app, day)
            out.append(day_result(day, summary, time.monotonic() - began, fills(day, orders), round_trips(orders)))
        finally:
            stop.set()

    try:
        await asyncio.wait_for(app.run(extra=[replay_then_read], stop=stop), DAY_WITHIN_S)
    except TimeoutError:  # its message is empty: "neopulse: " alone said nothing of which day or why
        raise RuntimeError(f"the backtest of {day} did not finish within {DAY_WITHIN_S:g} s; see the log") from None
    if not out:
        raise RuntimeError(f"the backtest of {day} ended without its results; see the log")
    return out[0]


async def _still_then_summary(app: Any, day: date) -> tuple[DailySummary, list[trading_pb2.OrderUpdate]]:
    """The day's orders and positions once the OMS has applied nothing new for SETTLE_S (the orders of the last
    candles, closed when the replay's clock moved to the end of the day, and their fills)."""
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
    return summarise(day, orders, positions), orders


def fills(day: date, orders: list[trading_pb2.OrderUpdate]) -> list[dict[str, Any]]:
    """The day's filled orders (FILL_FIELDS), by the time of their last fill, each with why it was placed."""
    out = []
    for order in sorted(orders, key=lambda o: (o.ts_ns, o.sequence)):
        if order.filled_quantity <= 0:
            continue
        req = order.request
        out.append({"day": day.isoformat(), "time_ist": clock.ist_datetime(order.ts_ns).strftime("%H:%M:%S"),
                    "strategy": req.strategy_tag, "symbol": req.symbol,
                    "side": trading_pb2.Side.Name(req.side).removeprefix("SIDE_"),
                    "quantity": order.filled_quantity, "price_paise": order.average_price_paise,
                    "reason": req.reason})
    return out


def round_trips(orders: list[trading_pb2.OrderUpdate]) -> dict[str, list[int]]:
    """Each strategy's round trips of the day (a position opened and brought back to flat, or turned over): the P&L
    of each before charges, paise, in the order they closed. A square-off's fill closes the strategies' positions it
    is against, as the daily summary books it (summary.attribute); a position still open at the end is no round
    trip."""
    books: dict[str, PositionBook] = {}
    running: dict[tuple[str, int, int], int] = {}  # (strategy, token, product) -> P&L of the open round trip
    out: dict[str, list[int]] = {}
    for order in sorted((o for o in orders if o.filled_quantity > 0), key=lambda o: (o.ts_ns, o.sequence)):
        for tag, part in attribute(books, order):
            req = part.request
            key = (req.token, req.product or trading_pb2.PRODUCT_MIS)
            pos = books.setdefault(tag, PositionBook()).position(*key)
            before = pos.net_quantity
            realised = books[tag].apply_update(part)
            trip = (tag, *key)
            running[trip] = running.get(trip, 0) + realised
            if before and (pos.net_quantity == 0 or (pos.net_quantity > 0) != (before > 0)):
                out.setdefault(tag, []).append(running.pop(trip))
    return out


def day_result(day: date, s: DailySummary, seconds: float, filled: list[dict[str, Any]] | None = None,
               trips: dict[str, list[int]] | None = None) -> DayResult:
    strategies: dict[str, dict[str, int]] = {}
    for name, d in s.strategies.items():
        mine = (trips or {}).get(name, [])
        strategies[name] = {"trades": d.trades, "realised_pnl_paise": d.realised_pnl_paise,
                            "unrealised_pnl_paise": d.unrealised_pnl_paise,
                            "round_trips_won": sum(p > 0 for p in mine), "round_trips_lost": sum(p <= 0 for p in mine),
                            "won_paise": sum(p for p in mine if p > 0), "lost_paise": sum(p for p in mine if p <= 0)}
    return DayResult(
        day=day.isoformat(), trades=s.trades, realised_pnl_paise=s.realised_pnl_paise,
        unrealised_pnl_paise=s.unrealised_pnl_paise, charges_paise=s.charges_paise, net_pnl_paise=s.net_pnl_paise,
        strategies=strategies, seconds=round(seconds, 1), fills=filled or [])


def max_drawdown_paise(results: list[DayResult]) -> int:
    """The deepest fall of the running net from its best so far (0 when it never fell)."""
    running = best = worst = 0
    for r in results:
        running += r.net_pnl_paise
        best = max(best, running)
        worst = max(worst, best - running)
    return worst


def strategy_line(name: str, d: dict[str, int]) -> str:
    """'name: N trades, Rs X before charges', then its round trips' record: how many, how many won, the average win
    and loss, and the profit factor (won / lost; "-" with nothing lost)."""
    pnl = d["realised_pnl_paise"] + d["unrealised_pnl_paise"]
    line = f"{name}: {d['trades']} trades, {fmt_inr(pnl)} before charges"
    won, lost = d.get("round_trips_won", 0), d.get("round_trips_lost", 0)
    if not won + lost:
        return line
    line += f" · {won + lost} round trip{'s' if won + lost != 1 else ''}, {won * 100 // (won + lost)}% won"
    if won:
        line += f", average win {fmt_inr(d['won_paise'] // won)}"
    if lost:
        line += f", average loss {fmt_inr(d['lost_paise'] // lost)}"
    factor = f"{d['won_paise'] / -d['lost_paise']:.2f}" if d["lost_paise"] else "-"
    return line + f", profit factor {factor}"


def sweep_report(runs: list[tuple[dict[str, str], list[DayResult]]]) -> str:
    """A line per combination of a sweep: its values, trades, net, days won, worst drawdown, and the round trips of
    all its strategies (how many, the share won, the profit factor)."""
    targets = list(runs[0][0])
    rows = [(*targets, "trades", "net", "days won", "drawdown", "round trips", "won", "profit factor")]
    for label, days in runs:
        won = lost = won_paise = lost_paise = 0
        for r in days:
            for d in r.strategies.values():
                won, lost = won + d.get("round_trips_won", 0), lost + d.get("round_trips_lost", 0)
                won_paise, lost_paise = won_paise + d.get("won_paise", 0), lost_paise + d.get("lost_paise", 0)
        rows.append((*(label[t] for t in targets), str(sum(r.trades for r in days)),
                     fmt_inr(sum(r.net_pnl_paise for r in days)),
                     f"{sum(r.net_pnl_paise > 0 for r in days)} of {len(days)}", fmt_inr(max_drawdown_paise(days)),
                     str(won + lost), f"{won * 100 // (won + lost)}%" if won + lost else "-",
                     f"{won_paise / -lost_paise:.2f}" if lost_paise else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < len(targets) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows)


def report(results: list[DayResult]) -> str:
    rows = [("day", "trades", "realised", "unrealised", "charges", "net")]
    rows += [(r.day, str(r.trades), fmt_inr(r.realised_pnl_paise), fmt_inr(r.unrealised_pnl_paise),
              fmt_inr(r.charges_paise), fmt_inr(r.net_pnl_paise)) for r in results]
    total = sum(r.net_pnl_paise for r in results)
    rows.append(("total", str(sum(r.trades for r in results)), fmt_inr(sum(r.realised_pnl_paise for r in results)),
                 fmt_inr(sum(r.unrealised_pnl_paise for r in results)),
                 fmt_inr(sum(r.charges_paise for r in results)), fmt_inr(total)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
             for row in rows]
    strategies: dict[str, dict[str, int]] = {}
    for r in results:
        for name, d in r.strategies.items():
            acc = strategies.setdefault(name, {})
            for key, value in d.items():
                acc[key] = acc.get(key, 0) + value
    lines += [strategy_line(name, acc) for name, acc in sorted(strategies.items())]
    won = sum(r.net_pnl_paise > 0 for r in results)
    lines.append(f"days won {won} of {len(results)} · worst drawdown {fmt_inr(max_drawdown_paise(results))} · "
                 f"net {fmt_inr(total)}")
    return "\n".join(lines)
