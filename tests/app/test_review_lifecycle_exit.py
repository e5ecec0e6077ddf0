"""`neopulse run`'s exit code says how the run ended, for a supervisor, a cron job or a script: 4 when a module failed
and the run stopped itself the ordered way, 3 when a step of the stop failed (the stop did not complete), each
named on the last line.

Real parts: `neopulse run` processes (synthetic market, paper broker, no database); the failure is injected by
replacing one module method before the command runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.runtime import EXIT_STOP_LEFT_BEHIND, EXIT_TASK_FAILED
from tests.grpc.procs import ROOT

pytestmark = pytest.mark.slow

RUN = ["run", "--no-db", "--source", "synthetic", "--grpc-port", "0", "--metrics-port", "0", "--speed", "60"]


def run_with(patch: str, duration_s: int) -> tuple[int, str]:
    """`neopulse run` with `patch` (Python source) applied first: its exit code and the last line it wrote to
    stderr."""
    script = (f"import sys\n{patch}\nfrom services.app import cli\n"
              f"sys.exit(cli.main({[*RUN, '--duration', str(duration_s)]!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "NEO_LOG_FILE_ENABLED": "false"})
    return done.returncode, done.stderr.strip().splitlines()[-1]


def test_a_run_whose_module_fails_exits_4_naming_it():
    patch = ("from services.strategy.module import StrategyModule\n"
             "async def run(self):\n    raise RuntimeError('strategy crashed')\n"
             "StrategyModule.run = run\n")

    assert run_with(patch, 60) == (EXIT_TASK_FAILED, "neopulse: strategy failed: RuntimeError: strategy crashed; "
                                                     "stopped")


def test_a_run_whose_oms_stop_fails_exits_3_naming_the_step():
    patch = ("from services.oms.module import OmsModule\n"
             "async def stop(self):\n    raise RuntimeError('ledger write of the queued decisions failed')\n"
             "OmsModule.stop = stop\n")

    assert run_with(patch, 2) == (EXIT_STOP_LEFT_BEHIND, "neopulse: stop incomplete: stop steps that failed: oms")


def test_a_run_whose_status_line_fails_trades_on_and_exits_0():
    patch = ("from services.app.status import StatusBoard\n"
             "async def run(self):\n    raise BrokenPipeError('the terminal went away')\n"
             "StatusBoard.run = run\n")

    code, _ = run_with(patch, 2)

    assert code == 0
