"""`neopulse sim`: run the Kotak Neo simulator alone (REST + SFeed + order feed on one port) until Ctrl-C.

Point the SDK (or `NEOPULSE_KOTAK_BASE_URL`) at the printed REST base; services.simulator does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from services.app.config import tcp_port
from services.simulator.server import Simulator
from shared import logs
from shared.clock import SimClock


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sim", help="run the Kotak Neo simulator (the real SDK talks to it)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=tcp_port, default=8765, help="port for REST and both websockets (0 = any free port)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic market")
    p.add_argument("--speed", type=float, default=1.0, help="session clock speed (60 = one minute per second)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.seed, args.speed))
    return 0


async def serve(host: str, port: int, seed: int, speed: float, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sim = Simulator(host=host, port=port, seed=seed, clock=SimClock(speed=speed))
    await sim.start()
    print(f"Kotak simulator\n  REST base:  {sim.base_url}\n  SFeed:      {sim.feed_url}\n"
          f"  order feed: {sim.orders_url}\n  login: consumer_key={sim.creds.consumer_key} ucc={sim.creds.ucc} "
          "(simulator test credentials)\nCtrl-C to stop.", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
