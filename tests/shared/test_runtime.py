"""The process runtime: the start-up heap frozen out of the collector's way, GC pauses timed, busy polling."""

from __future__ import annotations

import asyncio
import gc

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


async def _select_timeouts(seconds: float) -> list[float | None]:
    """How long the loop asked epoll to wait, each time it asked, over `seconds`: what busy polling changes, told
    apart without timing (a CPU share missed its bound on a loaded host)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    original, asked = selector.select, []

    def select(timeout: float | None = None):
        asked.append(timeout)
        return original(timeout)

    selector.select = select
    try:
        await asyncio.sleep(seconds)  # the window being measured, not a wait for an event
    finally:
        del selector.select  # the class's method again
    return asked


async def test_busy_poll_keeps_the_loop_running_instead_of_sleeping_in_epoll():
    idle = await _select_timeouts(0.2)
    poller = asyncio.create_task(runtime.busy_poll())
    try:
        await asyncio.sleep(0)  # its first turn
        polling = await _select_timeouts(0.2)
    finally:
        poller.cancel()

    assert any(timeout is None or timeout > 0.01 for timeout in idle)  # it slept in epoll
    assert len(polling) > 20 and set(polling) == {0}  # it only ever looked, never waited


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


class SwallowingFeed:
    """A feed whose reader swallows one cancel, as the Kotak SDK's wait_for-based iterator can on Python 3.11;
    it ends only when the feed is closed (or a later cancel lands)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.swallowed = 0

    async def read_forever(self) -> None:
        while not self.closed.is_set():
            try:
                await asyncio.wait_for(self.closed.wait(), 0.05)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1  # the message "arrived" with the cancel: carry on
            except TimeoutError:
                pass

    async def close(self) -> None:
        self.closed.set()


async def test_cancel_and_wait_stops_a_task_that_swallowed_the_first_cancel():
    feed = SwallowingFeed()
    reader = asyncio.create_task(feed.read_forever())
    await asyncio.sleep(0)

    left = await runtime.cancel_and_wait([reader], within_s=5)

    assert left == [] and reader.done() and feed.swallowed == 1


async def test_a_task_group_with_close_when_cancelled_stops_even_if_its_reader_swallows_the_cancel():
    feed = SwallowingFeed()

    async def module_run():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed.read_forever())
            tg.create_task(runtime.close_when_cancelled(feed.close))

    run = asyncio.create_task(module_run())
    await asyncio.sleep(0.01)
    run.cancel()

    await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 5)
    assert feed.closed.is_set() and feed.swallowed == 1


async def test_the_young_generation_is_collected_while_the_loop_idles_not_by_the_threshold():
    """A burst's allocations stay below the raised threshold; what is left of them is collected once the loop
    has nothing else to run."""
    before = gc.get_threshold()
    collector = asyncio.create_task(runtime.collect_when_idle())
    try:
        await asyncio.sleep(0)
        assert gc.get_threshold()[0] == runtime.YOUNG_THRESHOLD
        kept = [{"n": i} for i in range(5 * runtime.IDLE_YOUNG_AT)]  # a burst's survivors
        assert gc.get_count()[0] >= len(kept)

        await eventually(lambda: gc.get_count()[0] < runtime.IDLE_YOUNG_AT)
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    assert len(kept) == 5 * runtime.IDLE_YOUNG_AT
    assert gc.get_threshold() == before  # stopped, it leaves the collector as it found it


async def test_a_busy_polling_loop_still_collects_the_young_generation_between_bursts():
    """busy_poll's own turn is always ready, so the idle collector never sees an empty ready queue: busy_poll
    collects instead, when its turn finds nothing else to run (else the raised threshold's ~2 ms collections
    land inside bursts: measured)."""
    collector = asyncio.create_task(runtime.collect_when_idle())
    poller = asyncio.create_task(runtime.busy_poll())
    try:
        await asyncio.sleep(0)
        kept = [{"n": i} for i in range(5 * runtime.IDLE_YOUNG_AT)]
        assert gc.get_count()[0] >= len(kept)

        await eventually(lambda: gc.get_count()[0] < runtime.IDLE_YOUNG_AT)
    finally:
        for task in (poller, collector):
            task.cancel()
        await asyncio.gather(poller, collector, return_exceptions=True)
    assert len(kept) == 5 * runtime.IDLE_YOUNG_AT


def test_the_exit_line_of_a_start_up_error_masks_secrets_as_the_logs_do(capsys):
    secret = "s3cr3t-db-pass"

    code = runtime.exit_code(OSError(f"connection refused by postgresql://neopulse:{secret}@db.internal:5432/np"))

    assert code == 1 and secret not in capsys.readouterr().err


class _Unprintable(Exception):
    def __str__(self) -> str:  # an error formatting an object whose __str__ fails
        raise ValueError("cannot format")


async def test_a_task_failing_with_an_unprintable_error_is_still_reported_for_the_ordered_stop():
    watch = runtime.FailureWatch()

    async def failing() -> None:
        raise _Unprintable()

    task = asyncio.ensure_future(watch.watch("strategy", failing()))
    failure = await watch.wait(asyncio.Event(), 5)
    await task

    assert failure == ("strategy", "_Unprintable: <_Unprintable that could not be put into words>")
