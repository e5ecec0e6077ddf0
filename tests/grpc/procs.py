"""Helpers to run `neopulse` processes in tests: readiness lines, grpcurl, polling (ports: shared.ports).

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(ROOT / ".venv" / "bin" / "grpcurl")


class Proc:
    """A `neopulse` subprocess whose output is collected; `wait_for_line` blocks until a line appears."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {**os.environ, "NEO_LOG_FILE_ENABLED": "false"}
        self.log = log
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "services.app.cli", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def grpcurl(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=timeout_s)


def grpcurl_json(*args: str) -> dict:
    result = grpcurl(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "{}")


def wait_until(predicate, timeout_s: float = 30.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every_s)
