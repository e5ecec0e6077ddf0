"""Stopping while orders are in flight: every accepted decision ends in the ledger, placed or recorded as not
sent; a hung component cannot hold the process; a second signal ends it with an exit code that says so.

Real parts: the monolith (synthetic market, paper broker) on embedded PostgreSQL; `neopulse run` processes.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from services.app.config import AppSettings
from shared.bus import Topic
from shared.contracts import trading_pb2 as t
from tests.oms.helpers import order

pytestmark = pytest.mark.slow

BURST = 1500  # more decisions than the order path can write ahead and place in the old 2 s drain


def settings(database: str) -> AppSettings:
    return AppSettings(source="synthetic", use_database=True, database_url=database, grpc_port=0, speed=60.0,
                       symbols=["SBIN-EQ"])


def decision(n: int) -> t.RiskDecision:
    return t.RiskDecision(accepted=True, signal_id=f"s-{n}", order=order(client_order_id=f"burst-{n}", price=1_00))


async def ledger_rows(database: str) -> dict[str, tuple[str, str]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT client_order_id, status, reason_code FROM order_ledger "
                                "WHERE client_order_id LIKE 'burst-%'")
    finally:
        await conn.close()
    return {r["client_order_id"]: (r["status"], r["reason_code"] or "") for r in rows}


async def test_a_burst_of_accepted_decisions_at_stop_all_end_in_the_ledger_placed_or_not_sent(database):
    from services.app.monolith import Monolith

    app = Monolith(settings(database), {"strategy": {"strategies": []}})
    stop = asyncio.Event()

    async def burst_then_stop() -> None:
        await app.started.wait()
        for n in range(BURST):
            await app.bus.publish(Topic.ORDERS, decision(n))
        stop.set()

    await asyncio.wait_for(app.run(extra=[burst_then_stop], stop=stop), 120)

    rows = await ledger_rows(database)
    assert len(rows) == BURST
    placed = {"OPEN", "TRADED"}
    half = {cid: r for cid, r in rows.items() if r[0] not in placed and r != ("REJECTED", "NOT_SENT")}
    assert half == {}


async def run_burst(app, n: int) -> None:
    stop = asyncio.Event()

    async def burst_then_stop() -> None:
        await app.started.wait()
        for i in range(n):
            await app.bus.publish(Topic.ORDERS, decision(i))
        stop.set()

    await asyncio.wait_for(app.run(extra=[burst_then_stop], stop=stop), 120)


async def test_decisions_the_order_path_had_no_time_for_are_recorded_not_sent_and_none_left_half_written(
        database, monkeypatch):
    from services.app import monolith
    from services.app.monolith import Monolith

    app = Monolith(settings(database), {"strategy": {"strategies": []}})
    app.order_path_drain_s = 0.0  # the stop gives the queued decisions no time: they are not placed
    monkeypatch.setattr(monolith, "STEP_S", 0.0)
    await run_burst(app, BURST)
    restarted = Monolith(settings(database), {"strategy": {"strategies": []}})
    await run_burst(restarted, 0)

    rows = await ledger_rows(database)
    statuses = {r for r in rows.values()}
    assert (len(rows), statuses <= {("OPEN", ""), ("TRADED", ""), ("REJECTED", "NOT_SENT")},
            ("REJECTED", "NOT_SENT") in statuses) == (BURST, True, True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_single_stop_signal_stops_cleanly_with_exit_code_zero(tmp_path, procs, sig):
    """SIGHUP too: the terminal `neopulse run` was started from went away (an SSH session dropped)."""
    proc = procs.neopulse(["run", "--no-db", "--source", "synthetic", "--grpc-port", "0", "--metrics-port", "0"],
                          tmp_path / "run.log")
    proc.wait_for_line("gRPC listening")
    started = time.monotonic()
    proc.proc.send_signal(sig)
    code = proc.proc.wait(60)

    assert (code, time.monotonic() - started < 30) == (0, True)


async def test_a_stop_asked_for_during_start_up_starts_nothing_and_announces_nothing():
    """A signal while the database started, Kotak logged in or strategies warmed up: every module used to start,
    Telegram was told "NeoPulse started" and strategies traded before the stop began, its budget already running."""
    from services.app.monolith import Monolith

    settings = AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=60.0, symbols=["SBIN-EQ"])
    app = Monolith(settings, {})
    notes: list[str] = []

    async def on_note(note) -> None:
        notes.append(note.title)

    app.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    stop = asyncio.Event()
    stop.set()  # arrived while build() was still running

    await asyncio.wait_for(app.run(stop=stop), 60)

    assert not app.started.is_set() and "NeoPulse started" not in notes
