"""The process runtime: the start-up heap frozen out of the collector's way, GC pauses timed, busy polling."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import REGISTRY

from shared import runtime
from tests.helpers import eventually


def _pauses(generation: int) -> float:
    return REGISTRY.get_sample_value("neopulse_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_settle_after_start_freezes_what_start_up_built_and_times_later_pauses():
    built_at_start = [{"order": i} for i in range(1000)]  # containers the collector tracks
    try:
        frozen = runtime.settle_after_start()
        before = _pauses(2)

        gc.collect()

        assert frozen == gc.get_freeze_count() >= len(built_at_start)
        assert _pauses(2) == before + 1
    finally:
        gc.unfreeze()


async def _cpu_share_of(seconds: float) -> float:
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)  # the window being measured, not a wait for an event
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def test_busy_poll_keeps_the_loop_running_instead_of_sleeping_in_epoll():
    idle_share = await _cpu_share_of(0.2)
    poller = asyncio.create_task(runtime.busy_poll())
    try:
        polling_share = await _cpu_share_of(0.2)
    finally:
        poller.cancel()

    assert idle_share < 0.3
    assert polling_share > 0.7


async def test_sigusr1_logs_every_task_with_the_line_it_waits_on(caplog):
    import os
    import signal

    parked = asyncio.Event()

    async def stuck_somewhere():
        await parked.wait()

    task = asyncio.create_task(stuck_somewhere(), name="stuck-somewhere")
    runtime.install_task_dump()
    try:
        await asyncio.sleep(0)
        with caplog.at_level("WARNING", logger="shared.runtime"):
            os.kill(os.getpid(), signal.SIGUSR1)
            await eventually(lambda: any(r.getMessage() == "asyncio tasks (SIGUSR1)" for r in caplog.records))
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        task.cancel()

    dump = next(r.tasks for r in caplog.records if r.getMessage() == "asyncio tasks (SIGUSR1)")
    assert "stuck-somewhere" in dump and "await parked.wait()" in dump
