"""`neopulse run`: the monolith in paper mode (or live with --live), with a live status line.

Parses flags into AppSettings, runs services.app.monolith.Monolith, prints the summary. Exit codes: 0 stopped
cleanly; 1 an error (a server that cannot be reached at start, a module that failed to start); 2 bad config; 3 the
stop did not complete (a step failed, or a component, task or call did not stop in time: named on the last line and
in the log); 4 a module failed while running and NeoPulse stopped itself the ordered way (3 when that stop did not
complete either); 130 a second SIGINT/SIGTERM forced the exit (shared.runtime EXIT_*).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from services.app.config import (
    AppSettings,
    check_config,
    duration_s,
    set_market_calendar,
    tcp_port,
    warn_unknown_env,
)
from shared import config as cfg
from shared import logs, runtime
from shared.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run all modules in one process (paper trading by default)")
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG)")
    p.add_argument("--duration", type=duration_s, help="seconds to run; default until Ctrl-C")
    p.add_argument("--speed", type=float, help="simulated session clock speed (60 = one minute per second)")
    p.add_argument("--source", choices=["simulator", "synthetic", "kotak", "replay"], help="market data source")
    p.add_argument("--grpc-port", type=tcp_port, help="gRPC port of the monolith (0 = any free port)")
    p.add_argument("--metrics-port", type=tcp_port, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--no-db", action="store_true", help="run without PostgreSQL (in-memory ledger, no tick store)")
    p.add_argument("--live", action="store_true", help="allow mode=live: real orders through KotakBroker")
    p.set_defaults(handler=handle)


def settings_from(args: argparse.Namespace) -> tuple[AppSettings, dict[str, Any]]:
    toml = cfg.read_toml(args.config)
    overrides: dict[str, Any] = {}
    for flag, name in (("speed", "speed"), ("source", "source"), ("grpc_port", "grpc_port"),
                       ("metrics_port", "metrics_port")):
        if getattr(args, flag) is not None:
            overrides[name] = getattr(args, flag)
    if args.no_db:
        overrides["use_database"] = False
    settings = cfg.load(AppSettings, toml, **overrides)
    check_config(toml)
    return settings, toml


def handle(args: argparse.Namespace) -> int:
    try:
        settings, toml = settings_from(args)
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    warn_unknown_env()
    logs.setup(settings.log_level)
    set_market_calendar(settings, toml)  # validated above (check_config)
    try:
        return asyncio.run(_run(settings, toml, args))
    except BaseException as exc:  # a module's start or run failing arrives wrapped in the TaskGroup's group
        return runtime.exit_code(exc)


async def _run(settings: AppSettings, toml: dict[str, Any], args: argparse.Namespace) -> int:
    from services.app.monolith import (
        Monolith,
        check_kotak_source,
        check_live_grpc,
        check_live_mode,
        check_live_target,
    )
    from services.app.status import StatusBoard
    from services.app.wiring import kotak_stand_ins
    from shared.grpc.config import GrpcSettings
    from shared.metrics import serve_metrics

    missing = _missing_kotak_credentials(toml)
    check_live_mode(settings, args.live, not missing)
    check_live_target(settings, kotak_stand_ins(toml))
    check_live_grpc(settings, cfg.load(GrpcSettings, toml))
    check_kotak_source(settings, missing)
    serve_metrics(metrics_port(settings, cfg.load(GrpcSettings, toml), args.metrics_port is not None),
                  settings.metrics_host)
    app = Monolith(settings, toml)
    board = StatusBoard(app.bus, now_ns=lambda: app.clock.now_ns())
    guard = runtime.StopGuard(settings.stop_budget_s)
    stop = runtime.stop_on_signals(guard)

    async def announce() -> None:
        await app.started.wait()
        print(f"gRPC listening on {app.grpc.host}:{app.bound_port}", flush=True)
        ctl = _neopulse_command()
        print(f"control: {ctl} ctl --target {app.grpc.host}:{app.bound_port} status  (halt, orders, positions, "
              f"watch, ...: {ctl} ctl --help)", flush=True)
        for key, value in app.info.items():
            print(f"{key}: {value}", flush=True)
        try:
            await board.run()  # its clock starts now: the start-up is not the feed's
        except Exception:  # a display (a pipe gone, a read refused): trading goes on without it
            log.exception("the status line failed; trading goes on without it")

    failed: runtime.TaskFailed | None = None
    try:
        await app.run(args.duration, extra=[announce], stop=stop, guard=guard)
    except runtime.TaskFailed as exc:  # stopped the ordered way after it: the summary still says how the day stands
        failed = exc
    logs.flush()  # the last log lines before the summary, not through it
    await board.refresh()  # the day's book as the run left it
    print(board.summary(), flush=True)
    for key, value in app.info.items():
        print(f"{key}: {value}")
    return stop_exit_code(app.left_behind, app.failed_steps, failed, guard)


def stop_exit_code(left_behind: list[str], failed_steps: list[str], failed: Exception | None,
                   guard: runtime.StopGuard) -> int:
    """The run's exit code, its reasons on one line. A stop that did not complete (3) comes before a module that
    failed (4): it is the one that may have left the ledger short (decisions not recorded as not sent, placements
    not awaited), to be checked before a restart."""
    why = [str(failed)] if failed else []
    why += [f"stop steps that failed: {', '.join(failed_steps)}"] if failed_steps else []
    why += [f"left behind: {', '.join(left_behind)}"] if left_behind else []
    line = "; ".join(why)
    if left_behind:  # exit now: the interpreter's own exit would wait for a blocking call that hangs
        guard.force(runtime.EXIT_STOP_LEFT_BEHIND, f"stop incomplete: {line}")
    if failed_steps:
        print(f"neopulse: stop incomplete: {line}", file=sys.stderr)
        return runtime.EXIT_STOP_LEFT_BEHIND
    if failed:
        print(f"neopulse: {line}; stopped", file=sys.stderr)
        return runtime.EXIT_TASK_FAILED
    return 0


def metrics_port(settings: AppSettings, grpc: Any, from_cli: bool) -> int:
    """The port Prometheus scrapes (0: off): the top-level metrics_port, else [grpc] metrics_port (where `neopulse
    serve` reads it, and a config written for both may set it); a --metrics-port on the command line decides alone."""
    return settings.metrics_port or (0 if from_cli else grpc.metrics_port)


def _missing_kotak_credentials(toml: dict[str, Any]) -> list[str]:
    from shared.kotak.config import KotakSettings

    return cfg.load(KotakSettings, toml).missing_credentials()


def _neopulse_command() -> str:
    """How to run `neopulse` from here: the console script beside this interpreter (`make run` puts it in .venv/bin,
    not on PATH), relative to the working directory when under it."""
    script = Path(sys.executable).parent / "neopulse"
    if not script.exists():
        return "neopulse"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
