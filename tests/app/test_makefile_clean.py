"""`make clean` rebuilds the venv and never touches the trading data; `make clean-data` removes the data dir, but not
while a NeoPulse process or its embedded PostgreSQL uses it (the order ledger and the kill switch under a running
server). Run on a copy of the Makefile in a temporary directory, never on the project's own .neopulse."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.db.embedded import EmbeddedPostgres
from tests.grpc.procs import ROOT

pytestmark = pytest.mark.slow

# A NeoPulse process that started the embedded server in the data dir given, said so, then waits to be killed.
OWNER = ("import sys, time; from shared.db.embedded import EmbeddedPostgres; EmbeddedPostgres(sys.argv[1]).start(); "
         "print('started', flush=True); time.sleep(600)")


def make(target: str, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "Makefile", where / "Makefile")
    return subprocess.run(["make", target, *args], cwd=where, capture_output=True, text=True, timeout=120)


def data_dir_with_a_cluster(where: Path) -> Path:
    """A data dir as a stopped run leaves it (what is in it is all that make looks at)."""
    (where / ".neopulse" / "pgdata").mkdir(parents=True)
    (where / ".neopulse" / "pgdata" / "PG_VERSION").write_text("17\n")
    (where / ".neopulse" / "postgres.lock").write_text("")
    return where / ".neopulse"


def test_make_clean_keeps_the_trading_database(tmp_path):
    data = data_dir_with_a_cluster(tmp_path)
    (tmp_path / ".venv").mkdir()

    done = make("clean", tmp_path)

    assert done.returncode == 0, done.stderr
    assert (data / "pgdata" / "PG_VERSION").exists() and not (tmp_path / ".venv").exists()


def test_make_clean_data_removes_a_data_dir_nothing_uses_and_says_what_it_removed(tmp_path):
    data = data_dir_with_a_cluster(tmp_path)

    done = make("clean-data", tmp_path)

    assert done.returncode == 0, done.stderr
    assert not data.exists() and "removed .neopulse (pgdata, postgres.lock)" in done.stdout


def test_make_clean_data_refuses_while_a_neopulse_process_runs_its_embedded_postgres(tmp_path, embedded_home):
    server = EmbeddedPostgres(embedded_home)
    server.start()
    try:
        done = make("clean-data", tmp_path, f"DATA_DIR={embedded_home}")
    finally:
        server.stop()

    assert done.returncode != 0 and "postgres.lock is held" in done.stderr
    assert (embedded_home / "pgdata" / "PG_VERSION").exists()


def test_make_clean_data_refuses_while_the_server_of_a_killed_run_still_runs(tmp_path, embedded_home):
    """A run killed outright (SIGKILL, an OOM kill) releases its lock, and leaves its postgres running for the next
    start to adopt: pgdata must not be removed under it."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(embedded_home)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    assert owner.stdout is not None and owner.stdout.readline().strip() == "started"
    owner.send_signal(signal.SIGKILL)
    owner.wait()

    done = make("clean-data", tmp_path, f"DATA_DIR={embedded_home}")

    assert done.returncode != 0 and "runs on" in done.stderr and "kill -INT" in done.stderr
    assert (embedded_home / "pgdata" / "PG_VERSION").exists()
