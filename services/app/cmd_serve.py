"""`neopulse serve <module>`: one module in its own process (split mode), with its gRPC server.

Parses flags into settings and runs services.app.split.SplitProcess until SIGTERM/SIGINT. Exit codes as `neopulse
run`'s (services.app.cmd_run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from services.app.config import AppSettings, check_config, duration_s, tcp_port, warn_unknown_env
from shared import clock, logs, runtime
from shared import config as cfg
from shared.errors import ConfigError


def add_parser(sub: Any) -> None:
    from services.app.split import MODULES

    p = sub.add_parser("serve", help="run one module in its own process (split mode)")
    p.add_argument("module", choices=MODULES, help="the module this process runs")
    p.add_argument("--grpc-port", type=tcp_port, help="this module's gRPC port; default from [split].<module>_addr")
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG); upstream addresses in [split]")
    p.add_argument("--speed", type=float, help="simulated session clock speed (needs [split].session_wall_start_ns)")
    p.add_argument("--no-db", action="store_true", help="oms: in-memory ledger instead of PostgreSQL")
    p.add_argument("--duration", type=duration_s, help="seconds to run; default until SIGTERM/SIGINT")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from services.app.split import SplitSettings
    from shared.grpc.config import GrpcSettings

    try:
        toml = cfg.read_toml(args.config)
        overrides: dict[str, Any] = {"use_database": False} if args.no_db else {}
        if args.speed is not None:
            overrides["speed"] = args.speed
        app = cfg.load(AppSettings, toml, **overrides)
        check_config(toml)
        split = cfg.load(SplitSettings, toml)
        grpc_settings = cfg.load(GrpcSettings, toml)
        if app.mode == "live":  # the split OMS fills on paper only: "live" here would be a paper run called live
            raise ConfigError("mode=live runs as the monolith only (neopulse run --live); split mode paper-trades")
        if app.source in ("kotak", "replay"):  # split ingestion only generates ticks: it would store made-up ones
            raise ConfigError(f"source={app.source} runs as the monolith only (neopulse run); split mode's ingestion "
                              "generates a synthetic market: set NEOPULSE_SOURCE=synthetic")
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    warn_unknown_env()
    logs.setup(app.log_level)
    clock.set_holidays(app.holidays)
    clock.set_special_sessions(app.special_session_map())
    port = args.grpc_port if args.grpc_port is not None else int(split.addr(args.module).rsplit(":", 1)[1])
    try:
        return asyncio.run(_serve(args.module, app, split, grpc_settings, toml, port, args.duration))
    except BaseException as exc:  # start-up errors arrive wrapped in the TaskGroup's ExceptionGroup
        return runtime.exit_code(exc)


async def _serve(module: str, app: AppSettings, split: Any, grpc_settings: Any, toml: dict[str, Any], port: int,
                 duration: float | None) -> int:
    from services.app.cmd_run import stop_exit_code
    from services.app.split import SplitProcess
    from shared.metrics import serve_metrics

    serve_metrics(grpc_settings.metrics_port or app.metrics_port, app.metrics_host)
    # As `neopulse run`: the stop, however it began (a signal, --duration, a module that failed), has a deadline
    # (then exit 3); a second signal forces the exit (130).
    guard = runtime.StopGuard(app.stop_budget_s)
    stop = runtime.stop_on_signals(guard)
    process = SplitProcess(module, app, split, grpc_settings, toml, port, guard=guard)

    async def announce() -> None:
        await process.started.wait()
        print(f"gRPC listening on {grpc_settings.host}:{process.bound_port} ({module})", flush=True)
        if duration is not None:
            await asyncio.sleep(duration)
            stop.set()

    failed: runtime.TaskFailed | None = None
    async with asyncio.TaskGroup() as tg:
        announcer = tg.create_task(announce())
        try:
            await process.run(stop)
        except runtime.TaskFailed as exc:  # logged, and the process stopped the ordered way after it
            failed = exc
        announcer.cancel()
    # The exit codes of `neopulse run`: 3 the stop did not complete, 4 a module failed (and stopped in order), else 0.
    return stop_exit_code(process.left_behind, process.failed_steps, failed, guard)
