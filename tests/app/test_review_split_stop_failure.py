"""A split module whose run() fails is still stopped the ordered way (for the OMS: every decision it took settled,
the ledger lease released), then the process ends in runtime.TaskFailed and `neopulse serve` exits 4, instead of a
cancelled TaskGroup that skips the stop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.app import split as split_mod
from services.app.config import AppSettings
from services.app.split import Needs, SplitProcess, SplitSettings
from services.oms.module import OmsModule
from shared.grpc.config import GrpcSettings
from shared.runtime import EXIT_TASK_FAILED, TaskFailed

ROOT = Path(__file__).resolve().parents[2]
# `neopulse serve` with ingestion's run failing a moment after the start: a real process.
SERVE_WITH_A_RUN_THAT_FAILS = """
import asyncio, sys
from services.app import cli
from services.ingestion.module import IngestionModule

async def run_that_fails(self):
    await asyncio.sleep(0.5)
    raise RuntimeError("feed loop crashed")

IngestionModule.run = run_that_fails
sys.exit(cli.main(sys.argv[1:]))
"""


async def test_a_split_oms_whose_run_fails_is_stopped_with_its_decisions_settled(monkeypatch):
    monkeypatch.setattr(split_mod, "STARTS_AFTER", {})
    monkeypatch.setattr(split_mod, "NEEDS", {**split_mod.NEEDS, "oms": Needs()})
    running: list[OmsModule] = []

    async def run_that_fails(self: OmsModule) -> None:
        running.append(self)
        await asyncio.sleep(0.1)
        raise RuntimeError("broker-event loop crashed")

    monkeypatch.setattr(OmsModule, "run", run_that_fails)
    app = AppSettings(source="synthetic", use_database=False, speed=1.0, symbols=["SBIN-EQ"])
    process = SplitProcess("oms", app, SplitSettings(session_wall_start_ns=time.time_ns()), GrpcSettings(), {}, 0)

    with pytest.raises(TaskFailed, match="broker-event loop crashed"):
        await asyncio.wait_for(process.run(asyncio.Event()), 60)

    assert running[0].decisions_settled  # set by OmsModule.stop: it ran


def test_neopulse_serve_whose_module_fails_stops_and_exits_with_the_module_failure_code():
    env = {**os.environ, "NEO_LOG_FILE_ENABLED": "false"}
    result = subprocess.run([sys.executable, "-c", SERVE_WITH_A_RUN_THAT_FAILS, "serve", "ingestion", "--no-db",
                             "--grpc-port", "0"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    assert result.returncode == EXIT_TASK_FAILED, result.stdout + result.stderr[-3000:]
