"""A stop while the embedded server is starting: a cancel of open_database() lets the start finish and then stops the
server before it is re-raised; a forced exit (second signal, stop budget) stops the postmaster the start launched."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import subprocess
import sys
import time
from pathlib import Path

from shared.db.database import open_database
from shared.db.embedded import EmbeddedPostgres, _alive, _read_pidfile
from tests.grpc.procs import ROOT
from tests.helpers import eventually

# A process whose embedded server is starting in a thread when its stop is forced: the moment the postmaster has
# written its pid file (initdb's bootstrap backend writes a negative pid), before it is ready and start() returns.
FORCED_DURING_START = """
import sys, threading, time
from pathlib import Path
from shared import runtime
from shared.db.embedded import EmbeddedPostgres, _read_pidfile

home = Path(sys.argv[1])
threading.Thread(target=EmbeddedPostgres(home).start, daemon=True).start()
while _read_pidfile(home / "pgdata")[0] <= 0:
    time.sleep(0.001)
print(*_read_pidfile(home / "pgdata"), flush=True)
runtime.StopGuard().force(runtime.EXIT_FORCED, "stop forced while the database starts")
"""


def lock_free(home: Path) -> bool:
    """Nobody holds postgres.lock: no start under way in this data dir and no server owned."""
    with open(home / "postgres.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def postmaster(home: Path) -> int:
    """The pid of a running postmaster of this data dir, else 0."""
    pid = _read_pidfile(home / "pgdata")[0]
    return pid if pid > 0 and _alive(pid) else 0


def stop_what_is_left(home: Path, within_s: float = 60.0) -> None:
    """A failed test's clean-up: wait for a start still under way to launch its server, then stop it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and _read_pidfile(home / "pgdata")[2] != "ready":
        time.sleep(0.1)
    with contextlib.suppress(subprocess.SubprocessError):
        EmbeddedPostgres(home)._run("pg_ctl", "-D", str(home / "pgdata"), "-m", "immediate", "-w", "stop")


async def test_a_cancel_during_the_embedded_servers_start_leaves_no_postgres_behind(home):
    opening = asyncio.create_task(open_database(None, home))
    await eventually(lambda: (home / "pgdata").exists(), within=30.0)  # postgres.lock taken, initdb under way
    opening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await opening
    left = (not lock_free(home), postmaster(home))
    try:
        assert left == (False, 0), "a start still under way, or a server left running, after the cancel"
    finally:
        if left != (False, 0):
            stop_what_is_left(home)


def test_a_forced_exit_during_the_embedded_servers_start_stops_the_postmaster_it_launched(home):
    forced = subprocess.run([sys.executable, "-c", FORCED_DURING_START, str(home)], cwd=ROOT, timeout=120,
                            capture_output=True, text=True)
    deadline = time.monotonic() + 15.0  # a fast shutdown, on two shared CPUs
    while postmaster(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = postmaster(home)
    try:
        assert (forced.returncode, left) == (130, 0), forced.stdout + forced.stderr[-2000:]
    finally:
        if left:
            stop_what_is_left(home)
