"""`neopulse run` stops within its stop budget even when a broker call hangs, a second SIGTERM forces the exit at
once, and the order whose call hung stays in the ledger for the next start to reconcile (placed once).

Real parts: `neopulse sim` (its place endpoint told to hang) and `neopulse run --live` processes through the real
SDK, embedded PostgreSQL, a manual order through grpcurl. Every process is started through the `procs` fixture: none
outlives its test, whether it passes or fails. A forced exit still stops the embedded PostgreSQL the run started; one
left running by a run killed outright is adopted by the next start, which stops it at its own exit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.db.embedded import _alive, _read_pidfile
from shared.kotak.config import SIMULATOR_CREDENTIALS
from shared.runtime import EXIT_FORCED, EXIT_STOP_LEFT_BEHIND
from tests.grpc.procs import GRPCURL, ROOT, Proc, Procs, wait_until
from tests.grpc.test_monolith import limit_buy_below_market
from tests.helpers import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STOP_BUDGET_S = 15.0  # set for these runs (default 60 s): the hung-call test waits it out
EXIT_SLACK_S = 10.0  # the interpreter's own exit, on two shared CPUs
FORCED_WITHIN_S = 5.0
SERVER_DOWN_S = 15.0  # an embedded PostgreSQL's fast shutdown, on two shared CPUs
CONFIG = "[strategy]\nstrategies = []\n[risk]\nenforce_market_hours = false\n"


@pytest.fixture
def simulator(tmp_path: Path, procs: Procs) -> str:
    """A `neopulse sim` process; its REST base URL."""
    return procs.neopulse(["sim", "--port", "0"], tmp_path / "sim.log").wait_for_line("REST base:").split()[-1]


def live_run(procs: Procs, tmp_path: Path, base_url: str, database: str | Path, monkeypatch: pytest.MonkeyPatch,
             name: str) -> Proc:
    """`neopulse run --live` against the simulator: KotakBroker and the real SDK, the ledger in `database` (a URL, or
    the data dir of an embedded server the run starts). The SDK waits 10 minutes for a reply, so a call the simulator
    never answers hangs for the whole test."""
    config = tmp_path / "neopulse.toml"
    config.write_text(CONFIG)
    for key, value in SIMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(f"NEOPULSE_KOTAK_{key.upper()}", value)
    monkeypatch.setenv("NEOPULSE_KOTAK_BASE_URL", base_url)
    monkeypatch.setenv("NEOPULSE_KOTAK_REQUEST_TIMEOUT_S", "600")
    monkeypatch.setenv("NEOPULSE_MODE", "live")
    monkeypatch.setenv("NEOPULSE_STOP_BUDGET_S", str(STOP_BUDGET_S))
    if isinstance(database, Path):
        monkeypatch.delenv("NEOPULSE_DATABASE_URL", raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.setenv("NEOPULSE_DATA_DIR", str(database))
    else:
        monkeypatch.setenv("NEOPULSE_DATABASE_URL", database)
    proc = procs.neopulse(
        ["run", "--live", "--source", "kotak", "--grpc-port", "0", "--metrics-port", "0", "--config", str(config)],
        tmp_path / f"{name}.log",
    )
    proc.wait_for_line("gRPC listening")
    return proc


def grpc_addr(proc: Proc) -> str:
    return proc.wait_for_line("gRPC listening").split()[-1]


async def ledger(database: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT client_order_id, status, exchange_id FROM order_ledger ORDER BY created_at")
    finally:
        await conn.close()
    return [(r["client_order_id"], r["status"], r["exchange_id"] or "") for r in rows]


async def poll_ledger(database: str, wanted: str, timeout_s: float = 60.0) -> list[tuple[str, str, str]]:
    """The ledger once one row has status `wanted` (polled with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await ledger(database)
        if any(status == wanted for _, status, _ in rows):
            return rows
        assert time.monotonic() < deadline, f"no {wanted} order in the ledger: {rows}"
        await asyncio.sleep(0.2)


def place_calls(base_url: str) -> int:
    return httpx.get(f"{base_url}/_sim/calls").json().get("place_order", 0)


def hang_a_placement(procs: Procs, proc: Proc, base_url: str) -> None:
    """Tell the simulator to hang its next place call, place a manual order (grpcurl, left waiting for the order's
    reply), and return once the simulator has the call (the broker call under way)."""
    httpx.post(f"{base_url}/_sim/faults/place_order", json={"hang": True}).raise_for_status()
    addr = grpc_addr(proc)
    # Delivery: a live run keeps the real clock, and after 15:15 IST risk refuses an MIS order that opens a position.
    order = {**limit_buy_below_market(addr), "product": "PRODUCT_CNC"}
    procs.popen(
        [
            GRPCURL,
            "-plaintext",
            "-max-time",
            "120",
            "-d",
            json.dumps({"order": order}),
            addr,
            "neopulse.v1.OrderService/PlaceOrder",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: place_calls(base_url), 60)


async def stopped(proc: Proc, within_s: float) -> tuple[int | None, float]:
    """(exit code, seconds taken); code None when the process was still running after `within_s`."""
    started = time.monotonic()
    try:
        code = await asyncio.to_thread(proc.proc.wait, within_s)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return code, time.monotonic() - started


def logged(proc: Proc, text: str) -> list[str]:
    return [line for line in proc.lines if text in line]


async def test_a_hung_broker_call_cannot_hold_the_stop_past_its_budget(tmp_path, procs, simulator, database,
                                                                     monkeypatch):
    proc = live_run(procs, tmp_path, simulator, database, monkeypatch, "run")
    await asyncio.to_thread(hang_a_placement, procs, proc, simulator)

    proc.proc.send_signal(signal.SIGTERM)
    code, took = await stopped(proc, STOP_BUDGET_S + EXIT_SLACK_S)

    assert (code, took < STOP_BUDGET_S + EXIT_SLACK_S) == (EXIT_STOP_LEFT_BEHIND, True), proc.log
    assert any("oms:place:" in line for line in logged(proc, "did not stop in time")), proc.log


async def sigterm_twice(proc: Proc) -> tuple[int | None, float]:
    """SIGTERM, and once the stop has begun a second one: the exit code and how long the exit took."""
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for_line("NeoPulse stopping", 10)
    proc.proc.send_signal(signal.SIGTERM)
    return await stopped(proc, FORCED_WITHIN_S + EXIT_SLACK_S)


async def test_a_second_sigterm_forces_the_exit_within_seconds(tmp_path, procs, simulator, database, monkeypatch):
    proc = live_run(procs, tmp_path, simulator, database, monkeypatch, "run")
    await asyncio.to_thread(hang_a_placement, procs, proc, simulator)

    code, took = await sigterm_twice(proc)

    assert (code, took < FORCED_WITHIN_S) == (EXIT_FORCED, True), proc.log
    assert logged(proc, "stop forced by a second signal"), proc.log


async def test_an_order_hung_at_a_forced_exit_is_adopted_once_by_the_next_start(
    tmp_path, procs, simulator, database, monkeypatch
):
    first = live_run(procs, tmp_path, simulator, database, monkeypatch, "first")
    await asyncio.to_thread(hang_a_placement, procs, first, simulator)
    await sigterm_twice(first)
    first.stop(5)  # gone before the next start, even if the second signal did not end it
    at_exit = await ledger(database)
    live_run(procs, tmp_path, simulator, database, monkeypatch, "second")
    after_restart = await poll_ledger(database, "OPEN")
    calls = await asyncio.to_thread(place_calls, simulator)

    assert [status for _, status, _ in at_exit] in (["PENDING_NEW"], ["SUBMITTED"])  # written ahead, not settled
    assert ([status for _, status, _ in after_restart], bool(after_restart[0][2]), calls) == (["OPEN"], True, 1)


async def test_a_forced_exit_still_stops_the_embedded_postgres_the_run_started(tmp_path, procs, simulator,
                                                                             embedded_home, monkeypatch):
    proc = live_run(procs, tmp_path, simulator, embedded_home, monkeypatch, "run")
    await asyncio.to_thread(hang_a_placement, procs, proc, simulator)
    postmaster = _read_pidfile(embedded_home / "pgdata")[0]

    code, _ = await sigterm_twice(proc)

    assert (code, _alive(postmaster)) == (EXIT_FORCED, True), proc.log  # the server was there until then
    await eventually(lambda: not _alive(postmaster), within=SERVER_DOWN_S)


def paper_run(procs: Procs, tmp_path: Path, home: Path, name: str, *args: str) -> Proc:
    """`neopulse run` on the synthetic market, its embedded PostgreSQL in `home`."""
    return procs.neopulse(["run", "--source", "synthetic", "--grpc-port", "0", "--metrics-port", "0", *args],
                          tmp_path / f"{name}.log", env={"NEOPULSE_DATABASE_URL": None, "DATABASE_URL": None,
                                                         "NEOPULSE_DATA_DIR": str(home)})


async def test_after_a_sigkill_the_next_start_adopts_the_embedded_postgres_left_running_and_stops_it(
    tmp_path, procs, embedded_home
):
    first = paper_run(procs, tmp_path, embedded_home, "first")
    first.wait_for_line("gRPC listening")
    orphan = _read_pidfile(embedded_home / "pgdata")[0]
    first.proc.kill()  # nothing of it runs: its server stays up
    first.proc.wait()
    assert _alive(orphan)

    code, out = paper_run(procs, tmp_path, embedded_home, "second", "--duration", "2").output(120)

    adopted = [json.loads(line) for line in out.splitlines() if "adopting an embedded postgres" in line]
    assert (code, [line["pid"] for line in adopted]) == (0, [orphan]), out[-3000:]
    await eventually(lambda: not _alive(orphan), within=SERVER_DOWN_S)


def test_a_second_run_on_the_same_data_dir_refuses_to_trade_the_ledger_the_first_is_using(tmp_path, procs,
                                                                                          embedded_home):
    """Both would place and book orders on one order ledger: the second exits 2, naming the first."""
    first = paper_run(procs, tmp_path, embedded_home, "first")
    first.wait_for_line("gRPC listening")

    code, out = paper_run(procs, tmp_path, embedded_home, "second", "--duration", "30").output(120)

    assert code == 2, out[-3000:]
    assert "another OMS holds this database's order ledger: neopulse-oms" in out
    assert first.proc.poll() is None  # the first trades on


# The guard alone, in a process whose event loop is blocked once the stop begins (a blocking call on the loop).
BLOCKED_LOOP = """
import asyncio, sys, time
from shared import logs, runtime

async def main():
    guard = runtime.StopGuard(float(sys.argv[1]))
    stop = runtime.stop_on_signals(guard)
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    time.sleep(60)

logs.setup("INFO")
asyncio.run(main())
"""


def blocked_loop(procs: Procs, budget_s: float) -> subprocess.Popen:
    proc = procs.popen(
        [sys.executable, "-c", BLOCKED_LOOP, str(budget_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_stop_with_the_event_loop_blocked_still_ends_at_the_budget(procs):
    proc = blocked_loop(procs, 1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=1.0 + FORCED_WITHIN_S)

    assert (proc.returncode, time.monotonic() - started < 1.0 + FORCED_WITHIN_S) == (EXIT_STOP_LEFT_BEHIND, True)
    assert "stop did not finish within 1 s" in err


def test_a_second_signal_forces_the_exit_with_the_event_loop_blocked(procs):
    proc = blocked_loop(procs, 60.0)
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == "stopping\n"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=FORCED_WITHIN_S)

    assert (proc.returncode, time.monotonic() - started < FORCED_WITHIN_S) == (EXIT_FORCED, True)
    assert "stop forced by a second signal (SIGINT)" in err
