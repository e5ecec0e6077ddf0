"""Helpers to run `neopulse` processes in tests: readiness lines, grpcurl, polling (ports: shared.ports), and Procs,
which stops every process a test started whatever the test did (the `procs` fixture, tests/conftest.py).

Used by the monolith and split-mode tests; everything here is synchronous (the servers are other processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(ROOT / ".venv" / "bin" / "grpcurl")


# The synthetic walk's trend, at its steepest, moves a price ~1 % a second at the default volatility (more at --speed
# 60); a fifth of it keeps a price read seconds before an order or a change inside risk's 5 % band on a busy machine.
CALM = {"NEOPULSE_INGESTION_VOLATILITY_BPS": "0.2"}
FORCED_EXIT_WAIT_S = 10.0  # a second SIGTERM forces a neopulse process out (shared.runtime) within seconds
# Every Proc the running test started (tests/conftest.py: the end of each one's output goes with a failure's report,
# as CI keeps no tmp_path).
STARTED: list[Proc] = []


class Proc:
    """A `neopulse` subprocess whose output is collected; `wait_for_line` blocks until a line appears. `env` is
    added to this process's environment (a None value removes the variable)."""

    def __init__(self, args: list[str], log: Path, env: Mapping[str, str | None] | None = None,
                 sigint_ignored: bool = False) -> None:
        environ = {**os.environ, "NEO_LOG_FILE_ENABLED": "false"}
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        self.log = log
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        # sigint_ignored: started as a background job of a script is (SIGINT ignored), whatever runs the tests.
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.proc = subprocess.Popen([sys.executable, "-m", "services.app.cli", *args], cwd=ROOT, env=environ,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=ignore)
        self.args = args
        STARTED.append(self)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as out:
            for line in self.proc.stdout:
                out.write(line)
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for_line(self, text: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"{text!r} not printed; see {self.log}:\n" + "".join(self.lines[-20:]))
                self._cond.wait(min(left, 0.5))

    def tail(self, lines: int = 15, width: int = 400) -> str:
        with self._cond:
            return "".join(line if len(line) <= width else line[:width] + "...\n" for line in self.lines[-lines:])

    def output(self, timeout_s: float) -> tuple[int, str]:
        """Wait for the process to exit (TimeoutExpired after `timeout_s`): its exit code and everything it printed."""
        code = self.proc.wait(timeout_s)
        with self._cond:
            while not self._eof:
                self._cond.wait(0.5)
            return code, "".join(self.lines)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait `timeout_s`; then a second SIGTERM (neopulse's forced exit, which still stops the
        embedded PostgreSQL it started); SIGKILL only when that does not end it either."""
        return end(self.proc, timeout_s, signal.SIGTERM, signal.SIGTERM)


def end(proc: subprocess.Popen, timeout_s: float, *signals: signal.Signals) -> int:
    """Send each of `signals` in turn until `proc` exits (waiting `timeout_s` after the first, FORCED_EXIT_WAIT_S
    after the others), then SIGKILL; returns its exit code."""
    for i, sig in enumerate(signals):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            return proc.wait(timeout_s if i == 0 else FORCED_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


class Procs:
    """The processes one test starts: stop_all() (the `procs` fixture's teardown) ends each, newest first, whether
    the test passed, failed an assertion or timed out."""

    def __init__(self) -> None:
        self._started: list[Proc | subprocess.Popen] = []

    def neopulse(self, args: list[str], log: Path, env: Mapping[str, str | None] | None = None) -> Proc:
        proc = Proc(args, log, env)
        self._started.append(proc)
        return proc

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Any other process (grpcurl, a script): subprocess.Popen(argv, **kwargs), ended with SIGTERM then SIGKILL."""
        proc = subprocess.Popen(argv, **kwargs)
        self._started.append(proc)
        return proc

    def stop_all(self, timeout_s: float = 20.0) -> None:
        while self._started:
            proc = self._started.pop()
            if isinstance(proc, Proc):
                proc.stop(timeout_s)
            else:
                end(proc, timeout_s, signal.SIGTERM)


def grpcurl(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=timeout_s)


def grpcurl_json(*args: str) -> dict:
    result = grpcurl(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "{}")


def ctl(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """`neopulse ctl ARGS` run to its end: its exit code, stdout and stderr."""
    environ = {**os.environ, "NEO_LOG_FILE_ENABLED": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "services.app.cli", "ctl", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=timeout_s)


def wait_until(predicate, timeout_s: float = 30.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every_s)
