"""`neopulse serve <module>`: one module in its own process (split mode), with its gRPC server.

Parses flags into settings and runs services.app.split.SplitProcess until SIGTERM/SIGINT. Exit codes as `neopulse
run`'s (services.app.cmd_run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from services.app.cmd_run import metrics_port, stop_exit_code
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

if TYPE_CHECKING:
    from services.app.split import SplitSettings
    from shared.grpc.config import GrpcSettings

# The variable the image's HEALTHCHECK probes (deploy/Dockerfile): a serve process listens on it when it is set.
GRPC_PORT_ENV = "NEOPULSE_GRPC_PORT"


def add_parser(sub: Any) -> None:
    from services.app.split import MODULES

    p = sub.add_parser("serve", help="run one module in its own process (split mode)")
    p.add_argument("module", choices=MODULES, help="the module this process runs")
    p.add_argument("--grpc-port", type=tcp_port,
                   help="this module's gRPC port; default NEOPULSE_GRPC_PORT, else the port of [split].<module>_addr")
    p.add_argument("--metrics-port", type=tcp_port, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG); upstream addresses in [split]")
    p.add_argument("--speed", type=float, help="simulated session clock speed (needs [split].session_wall_start_ns)")
    p.add_argument("--no-db", action="store_true", help="oms: in-memory ledger instead of PostgreSQL")
    p.add_argument("--duration", type=duration_s, help="seconds to run; default until SIGTERM/SIGINT")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        app, split, grpc_settings, toml = settings_from(args)
    except ConfigError as exc:
        print(f"neopulse: {exc}", file=sys.stderr)
        return 2
    warn_unknown_env()
    logs.setup(app.log_level)
    set_market_calendar(app, toml)  # validated above (check_config)
    port = listen_port(args.module, split, app.grpc_port, args.grpc_port)
    metrics = metrics_port(app, grpc_settings, args.metrics_port is not None)
    try:
        return asyncio.run(_serve(args.module, app, split, grpc_settings, toml, port, metrics, args.duration))
    except BaseException as exc:  # start-up errors arrive wrapped in the TaskGroup's ExceptionGroup
        return runtime.exit_code(exc)


def settings_from(args: argparse.Namespace) -> tuple[AppSettings, SplitSettings, GrpcSettings, dict[str, Any]]:
    """The settings `serve` runs with, or a ConfigError for what split mode does not run."""
    from services.app.split import SplitSettings
    from shared.grpc.config import GrpcSettings

    toml = cfg.read_toml(args.config)
    overrides: dict[str, Any] = {"use_database": False} if args.no_db else {}
    for name in ("speed", "metrics_port"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    app = cfg.load(AppSettings, toml, **overrides)
    check_config(toml)
    split = cfg.load(SplitSettings, toml)
    grpc_settings = cfg.load(GrpcSettings, toml)
    if app.mode == "live":  # the split OMS fills on paper only: "live" here would be a paper run called live
        raise ConfigError("mode=live runs as the monolith only (neopulse run --live); split mode paper-trades")
    if app.source in ("kotak", "replay"):  # split ingestion only generates ticks: it would store made-up ones
        raise ConfigError(f"source={app.source} runs as the monolith only (neopulse run); split mode's ingestion "
                          "generates a synthetic market: set NEOPULSE_SOURCE=synthetic")
    if args.speed is not None and not split.session_wall_start_ns:
        # Without the shared session start each process runs on the real clock (SplitProcess.clock): the flag would
        # do nothing, and five processes given it would not agree on the simulated time anyway.
        raise ConfigError(f"--speed {args.speed:g} needs [split] session_wall_start_ns "
                          "(NEOPULSE_SPLIT_SESSION_WALL_START_NS), the unix time in ns at which the simulated 09:15 "
                          "IST began, the same in all five processes; set it, or leave --speed out to run in real time")
    return app, split, grpc_settings, toml


def listen_port(module: str, split: SplitSettings, env_port: int, cli_port: int | None) -> int:
    """The module's gRPC port: --grpc-port, else NEOPULSE_GRPC_PORT (`env_port`, the port the image's health check
    probes), else the port of its [split] address. A grpc_port in the config file is the monolith's and is not read:
    one file serves all five processes."""
    if cli_port is not None:
        return cli_port
    if GRPC_PORT_ENV in os.environ:
        return env_port
    return int(split.addr(module).rsplit(":", 1)[1])


async def _serve(module: str, app: AppSettings, split: Any, grpc_settings: Any, toml: dict[str, Any], port: int,
                 metrics: int, duration: float | None) -> int:
    from services.app.split import SplitProcess
    from shared.metrics import serve_metrics

    serve_metrics(metrics, app.metrics_host)
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
