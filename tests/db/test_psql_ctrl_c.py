"""Ctrl-C in `neopulse db psql` (psql's way to cancel a query or clear the line) must not end the session.

The terminal's Ctrl-C goes to the whole foreground group; left to Python, it raises KeyboardInterrupt in the
parent, which kills psql: a trader who cancels a slow query on the live ledger would lose the session.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

NEOPULSE = str(Path(sys.executable).parent / "neopulse")


def _read(fd: int, seconds: float, until: bytes | None = None) -> bytes:
    out, end = b"", time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
            if until is not None and until in out:
                break
    return out


def test_ctrl_c_in_db_psql_cancels_the_query_and_keeps_the_session():
    home = tempfile.mkdtemp(prefix="neopulse-test-pg-psql-")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command a trader types
        os.execv(NEOPULSE, ["neopulse", "db", "psql", "--data-dir", home, "--", "-P", "pager=off"])
    try:
        assert b"=#" in _read(fd, 30, until=b"=#"), "psql prompt not reached"
        os.write(fd, b"select pg_sleep(5);\r")
        time.sleep(1.0)
        os.write(fd, b"\x03")  # Ctrl-C
        after_ctrl_c = _read(fd, 5, until=b"canceling statement")
        after_ctrl_c += _read(fd, 1.5)  # what the parent does with the Ctrl-C, if anything, takes a moment
        os.write(fd, b"select 40 + 2 as still_here;\r")
        answer = _read(fd, 5, until=b"42")
        exited = os.waitpid(pid, os.WNOHANG)[0] == pid
        if exited:
            pid = 0
        assert not exited and b"42" in answer, (
            "Ctrl-C ended `neopulse db psql` instead of cancelling the query: "
            + after_ctrl_c.decode(errors="replace").strip().splitlines()[-1])
    finally:
        try:
            os.write(fd, b"\\q\r")
        except OSError:
            pass
        deadline = time.time() + 20
        while pid and time.time() < deadline and os.waitpid(pid, os.WNOHANG)[0] != pid:
            _read(fd, 0.2)  # drained, or a full terminal buffer holds the command's last words and its exit
        for proc in psutil.process_iter(["name", "cmdline"]):  # never leave the embedded server behind
            if proc.info["name"] == "postgres" and home in " ".join(proc.info["cmdline"] or []):
                proc.terminate()
        shutil.rmtree(home, ignore_errors=True)
