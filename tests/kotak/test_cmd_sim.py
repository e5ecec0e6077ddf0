"""`neopulse sim` as a real process: prints the REST base and both websocket URLs, serves the SDK, stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys

from shared import config as cfg
from shared.kotak.broker import KotakBroker
from shared.kotak.config import KotakSettings


async def test_sim_command_prints_its_urls_serves_a_login_and_exits_cleanly_on_ctrl_c():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.app.cli", "sim", "--port", "0", "--speed", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    lines: list[str] = []
    async with asyncio.timeout(15):
        while not any("order feed" in line for line in lines):
            lines.append((await proc.stdout.readline()).decode())
    base = next(line.split()[-1] for line in lines if "REST base" in line)
    port = base.rsplit(":", 1)[1]
    settings = cfg.load(KotakSettings, {}).for_simulator(base)
    broker = KotakBroker(settings)
    await broker.start()
    limits = await broker.limits()
    proc.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(proc.wait(), 10)
    assert f"ws://127.0.0.1:{port}/feed" in "".join(lines)
    assert f"ws://127.0.0.1:{port}/orders" in "".join(lines)
    assert limits["net_paise"] == 10_000_000_00
    assert code == 0
