"""Launching the embedded postmaster (pg_ctl) and waiting for it to be ready, through crash recovery however long.

Reads postmaster.pid (its 8th line is PostgreSQL's status: "starting" until the server takes connections, which after
a crash covers the fsync of the data dir and the WAL replay) and the server log; used by shared/db/embedded.py.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import pwd
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shared.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # a clean start is ready well within this
RECOVERY_TIMEOUT_S = 3600.0  # a server still starting (recovering after a crash) is waited for this long in all
PROGRESS_EVERY_S = 10.0
PORT_TAKEN = "Address already in use"  # the postmaster's bind() error in its log: another process took the port


class Started(enum.Enum):
    READY = "ready"
    PORT_TAKEN = "port taken"  # the postmaster exited: another process listens on the port
    FAILED = "failed"  # the postmaster exited (or never ran): the reason is in its log
    STILL_STARTING = "still starting"  # alive but not ready when the patience ran out: left running
    # pg_ctl killed by a signal before the server logged anything: as root it is forked (not vfork'd: it runs as
    # another user), and a fork handler of a library with threads (gRPC's) can kill the child before its exec.
    LAUNCHER_DIED = "launcher died"


@dataclass(frozen=True)
class Patience:
    """How long a start waits for the server. A clean start is ready within `start_s`. A server still starting after
    that is recovering after a crash (it fsyncs the data dir, then replays the WAL since the last checkpoint: up to
    max_wal_size, 1 GB by default, and minutes on a slow disk): it is waited for while it lives, up to `recovery_s`
    in all, its progress logged every `progress_every_s`, and never stopped, since a recovery cut short starts over
    from the same checkpoint the next time."""

    start_s: float = START_TIMEOUT_S
    recovery_s: float = RECOVERY_TIMEOUT_S
    progress_every_s: float = PROGRESS_EVERY_S


class Wait:
    """One wait for the postmaster of `pgdata` to be ready: when to give up, and its progress in the log meanwhile."""

    def __init__(self, pgdata: Path, patience: Patience) -> None:
        self.pgdata, self.patience = pgdata, patience
        self.began = time.monotonic()
        self._note_at = patience.start_s

    def waited_s(self) -> float:
        return time.monotonic() - self.began

    def over(self, starting: bool) -> bool:
        """Give up now? Never within start_s; after it, when the postmaster is not `starting` (alive, not ready yet),
        or when recovery_s has passed."""
        waited = self.waited_s()
        if waited <= self.patience.start_s:
            return False
        if not starting or waited > self.patience.recovery_s:
            return True
        if waited >= self._note_at:
            self._note(waited)
        return False

    def still_recovering(self) -> str:
        """Why a start gives up on a server still starting at the end of the patience (left running)."""
        return (f"embedded PostgreSQL in {self.pgdata} is still starting after {self.waited_s():.0f} s: it is "
                f"recovering after a crash (progress in {self.pgdata / 'postgres.log'}); it was left running to "
                "finish: start again to wait for it")

    def _note(self, waited: float) -> None:
        pid, _, status = read_pidfile(self.pgdata)
        if status != "starting":  # not through its first steps yet: nothing to say
            return
        logfile = self.pgdata / "postgres.log"
        log.info("PostgreSQL is recovering after a crash; waiting", extra={
            "pgdata": str(self.pgdata), "pid": pid, "waited_s": round(waited),
            "give_up_after_s": self.patience.recovery_s, "log": tail(logfile, max(0, _size(logfile) - 4096))})
        self._note_at = waited + self.patience.progress_every_s


def launch(pg_ctl: list[str], run_as: dict[str, Any], port: int, wait: Wait,
           abandoned: Callable[[], bool]) -> tuple[Started, str]:
    """Run `pg_ctl ... start` and wait (see Wait): READY once the server takes connections on `port`, PORT_TAKEN or
    FAILED with the reason as soon as the postmaster has exited, STILL_STARTING when it is alive but not ready when
    the patience runs out (it is left running), FAILED when `abandoned()` (the process is exiting)."""
    logfile = wait.pgdata / "postgres.log"
    since = _size(logfile)
    pg_ctl_wait_s = str(int(wait.patience.recovery_s) + 60)  # outlasts ours: we decide when to stop waiting
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: the daemonised postmaster could inherit a pipe
        # pg_ctl -w watches the postmaster it forked and exits as soon as it dies, even before postmaster.pid exists.
        # In a session of its own: a Ctrl-C at the terminal would reach it, and it passes SIGINT on to the server.
        proc = subprocess.Popen([*pg_ctl, "-w", "-t", pg_ctl_wait_s, "start"], text=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, cwd="/", start_new_session=True, **run_as)
        try:
            started = _await(proc, port, wait, abandoned)
        finally:
            if proc.poll() is None:
                proc.terminate()  # pg_ctl only: SIGTERM leaves the server it started running
            proc.wait()
        err.seek(0)
        pg_ctl_said = err.read().strip().replace("\n", " | ")
    if started is not Started.FAILED:
        return started, ""
    if proc.returncode is not None and proc.returncode < 0 and not _read(logfile, since):
        return Started.LAUNCHER_DIED, f"pg_ctl ended by signal {-proc.returncode} before the server started"
    if PORT_TAKEN in _read(logfile, since):
        return Started.PORT_TAKEN, tail(logfile, since)
    return Started.FAILED, tail(logfile, since) or pg_ctl_said or "no reason logged"


def _await(proc: subprocess.Popen[str], port: int, wait: Wait, abandoned: Callable[[], bool]) -> Started:
    while not abandoned():
        _, pid_port, status = read_pidfile(wait.pgdata)
        if status == "ready" and pid_port == port and accepts(port):
            return Started.READY
        if proc.poll() not in (None, 0):  # 0: pg_ctl saw it ready
            return Started.FAILED  # the postmaster exited: the log says why
        if wait.over(starting=True):
            return Started.STILL_STARTING
        time.sleep(0.02)
    return Started.FAILED


def await_orphan(pgdata: Path, patience: Patience, abandoned: Callable[[], bool]) -> None:
    """Wait while a postmaster of `pgdata` that no process owns (its owner crashed) is still starting: it may be
    recovering after a crash. ConfigError when the patience runs out, the server left running."""
    wait = Wait(pgdata, patience)
    while still_starting(pgdata) and not abandoned():
        if wait.over(starting=True):
            raise ConfigError(wait.still_recovering())
        time.sleep(0.05)


def still_starting(pgdata: Path) -> bool:
    """A postmaster of `pgdata` is alive and not ready yet (after a crash: recovering)."""
    pid, _, status = read_pidfile(pgdata)
    return status in ("", "starting") and is_postmaster_of(pid, pgdata)


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess arguments to run a program as `user` (None: as we are), with that user's own groups, not ours (as
    root: group root would reach whatever root's group may)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}


def check_major(pgdata: Path, postgres: Path) -> None:
    """ConfigError when `pgdata` was made by another major version of PostgreSQL than the `postgres` binary: that
    server would refuse it, and say so only in its log."""
    try:
        made_by = (pgdata / "PG_VERSION").read_text().strip()
    except OSError:
        return
    bundled = bundled_major(postgres)
    if made_by and bundled and made_by != bundled:
        raise ConfigError(
            f"the database in {pgdata} was made by PostgreSQL {made_by}, and this NeoPulse runs PostgreSQL {bundled}, "
            f"which cannot open it; run the NeoPulse release that made it, or move the data to PostgreSQL {bundled}: "
            f"pg_upgrade it, or dump it with PostgreSQL {made_by} (pg_dump) and restore the dump into a new data dir")


@functools.cache
def bundled_major(postgres: Path) -> str:
    """The major version of the `postgres` binary ("18" of "postgres (PostgreSQL) 18.6"); "" if it cannot say."""
    try:
        said = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    found = re.search(r"\(PostgreSQL\) (\d+)", said)
    return found.group(1) if found else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindable(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (SO_REUSEADDR, as postgres: a closed socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def read_pidfile(pgdata: Path) -> tuple[int, int, str]:
    """(pid, port, status) from postmaster.pid; zeros when absent or half-written."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, ValueError, IndexError):
        return 0, 0, ""
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 0
    status = lines[7].strip() if len(lines) > 7 else ""
    return pid, port, status


def alive(pid: int) -> bool:
    """A running process (a zombie is not: pid 1 in a container may never reap our daemonised postmaster)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    if pid <= 0:  # initdb's bootstrap backend writes its pid negated: no server
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.name() == "postgres" and str(pgdata) in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def tail(path: Path, since: int = 0, lines: int = 3) -> str:
    """The last lines written to `path` after byte `since` (this attempt's, not an earlier run's)."""
    return " | ".join(_read(path, since).strip().splitlines()[-lines:])


def _read(path: Path, since: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(since)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
