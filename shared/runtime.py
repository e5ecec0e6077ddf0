"""How a NeoPulse process runs: the start-up heap frozen out of the collector's way, every GC pause timed,
(opt-in) a busy-polling loop, the loop's heartbeat (a gauge a hung loop stops setting), the stop signals and
SIGUSR1 task dump, a stop bounded in time (StopGuard: a second signal forces the exit; at_forced_exit: what must
not outlive it even then), stopping tasks that swallow a cancel, and a long-lived task's failure turned into the
ordered stop (FailureWatch).
Used by the monolith, `neopulse serve`, the ingestion module, KotakBroker and the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import Gauge, Histogram

from shared.errors import ConfigError, RetryableError

log = logging.getLogger(__name__)

GC_PAUSES = Histogram("neopulse_gc_pause_seconds", "Garbage-collector pauses (the whole process stops)",
                      ["generation"], buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1))
_started: list[float] = []
HEARTBEAT = Gauge("neopulse_loop_heartbeat_timestamp_seconds", "Unix time the event loop last ran heartbeat() (every "
                  "HEARTBEAT_S while the modules run; 0 before they started and once they stop)")
HEARTBEAT_S = 1.0
EXIT_STOP_LEFT_BEHIND = 3  # the stop did not complete: a step failed, or a component, task or call did not stop
EXIT_TASK_FAILED = 4  # a module (or another long-lived task) failed while running; the process stopped itself
EXIT_FORCED = 130  # a second SIGINT/SIGTERM ended the stop at once (130, as for Ctrl-C, whichever signal)
FLUSH_S = 2.0  # the clean-up and last log lines of a forced exit; a stuck stderr does not hold the exit longer
_installed = [False]
_at_forced_exit: list[Callable[[], None]] = []


def settle_after_start() -> int:
    """Collect once, then move every surviving object to the permanent generation (`gc.freeze`).

    What start-up built (modules, config, generated classes, grpc, instrument masters) lives for the whole
    process; without this, every full collection walks all of it again: measured 16 ms pauses on these
    machines, one of them in the middle of an order. Returns the number of objects frozen.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    _install_pause_timer()
    log.info("start-up heap frozen", extra={"objects": frozen})
    return frozen


def _install_pause_timer() -> None:
    if _installed[0]:
        return
    _installed[0] = True
    children = [GC_PAUSES.labels(str(g)) for g in range(3)]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started.append(time.perf_counter())
        elif _started:
            children[info["generation"]].observe(time.perf_counter() - _started.pop())

    gc.callbacks.append(on_gc)


YOUNG_THRESHOLD = 20_000  # allocations before an automatic young collection (CPython's default: 700)
IDLE_YOUNG_AT = 200  # a young generation this full is collected as soon as the loop has nothing to run
IDLE_CHECK_S = 0.001


async def collect_when_idle() -> None:
    """Do the collector's work while the loop has nothing else to run, not in the middle of a burst.

    A burst of orders allocates a few thousand objects: at CPython's default threshold that is several young
    collections (70-120 µs each, measured) inside the burst. The automatic threshold is raised far above a
    burst's allocations, and what the young generations hold is collected here, every IDLE_CHECK_S, when no
    other callback is ready. Measured (bench, 48 s runs at 20k ticks/s, three pairs): tick-to-order p99
    1.58-1.77 ms without, 1.33-1.39 ms with. Started by the monolith after settle_after_start(); not by split
    mode's processes, whose wakeups on shared cores cost more than the collections they move (measured)."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    ready = _ready_queue()
    try:
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            if not ready:
                _collect_young()
    finally:  # the process (or a test) goes on without it: the collector's own schedule again
        gc.set_threshold(*before)


def _ready_queue() -> Any:
    """asyncio's ready queue: empty while a callback runs = nothing else to run after it."""
    return asyncio.get_running_loop()._ready  # type: ignore[attr-defined]


def _collect_young() -> None:
    """Collect the young generation (and the middle one when it is due) if it holds IDLE_YOUNG_AT or more."""
    young, older, _ = gc.get_count()
    if young >= IDLE_YOUNG_AT:
        gc.collect(1 if older >= gc.get_threshold()[1] else 0)


async def busy_poll() -> None:
    """Keep the event loop from ever sleeping in epoll: one core spins at 100%, and in exchange the code
    of the order path stays in that core's caches instead of being evicted while the process idles.

    Measured here: a risk decision that takes 11 µs back to back takes 28 µs after the loop slept 1 ms and
    210 µs after it slept 150 ms; the benchmark's tick-to-order p99 drops by about a third with this on.
    Opt-in (`busy_poll = true`) for a monolith on a machine with a core to spare; never for split mode
    on a small machine, where the processes would spin against each other.

    Its own turn is always in the ready queue, so collect_when_idle never finds the loop idle: this collects
    in its place when its turn finds nothing else to run (without it, measured: every young collection came
    from the raised threshold, 1.7-2.5 ms each, inside bursts)."""
    log.info("busy polling: the event loop no longer sleeps (one core at 100%)")
    ready = _ready_queue()
    while True:  # spinning is the point
        await asyncio.sleep(0)
        if not ready:
            _collect_young()


async def heartbeat() -> None:
    """Stamp HEARTBEAT from the event loop every HEARTBEAT_S, until cancelled; then 0 (a stopping process is not hung).

    /metrics answers from its own thread while the loop is blocked (a synchronous call, a handler that spins), so
    Prometheus's `up` stays 1 for a hung process: an old stamp is what NeoPulseEventLoopStuck sees instead."""
    try:
        while True:
            HEARTBEAT.set_to_current_time()
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        HEARTBEAT.set(0)


def dump_tasks() -> str:
    """Every asyncio task of this loop with the stack it is parked on (what a stuck process is waiting for)."""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
        task.print_stack(file=out)
    return out.getvalue()


class StopGuard:
    """Bounds a process's stop. begin() (the first stop signal, or the stop starting on its own) arms a deadline
    `budget_s` away; force() ends the process at once. Both run in threads, so a blocked event loop, a task that
    swallows its cancel or a blocking call that never returns (a hung broker call) cannot hold the process.
    `step` names what the stop is doing, for the line logged when it is cut short."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = budget_s
        self.step = ""
        self._deadline: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> None:
        if self._deadline is not None or self.budget_s is None:
            return
        self._deadline = time.monotonic() + self.budget_s
        self._loop = asyncio.get_running_loop()
        timer = threading.Timer(self.budget_s, self.force, (EXIT_STOP_LEFT_BEHIND,
                                                            f"stop did not finish within {self.budget_s:g} s"))
        timer.daemon = True  # a clean exit does not wait for it
        timer.start()

    def within(self, limit_s: float, keep_s: float = 0.0) -> float:
        """`limit_s`, or what is left of the budget (less `keep_s`, kept for the steps after) when that is less."""
        if self._deadline is None:
            return limit_s
        return max(0.0, min(limit_s, self._deadline - keep_s - time.monotonic()))

    def force(self, code: int, why: str) -> None:
        """Run the at_forced_exit functions, log `why` with what is still running, write the logs (all within
        FLUSH_S), and exit with `code` now: no more cancelling, closing or joining, any of which may be what hangs."""
        fields = {"step": self.step, "exit_code": code, "still_running": self._running()}
        deadline = time.monotonic() + FLUSH_S
        # Its own thread: a stuck stderr, which would hold the last words, does not hold this.
        cleanup = threading.Thread(target=_run_at_forced_exit, name="forced-exit-cleanup", daemon=True)
        cleanup.start()
        last_words = threading.Thread(target=_last_words, args=(why, fields, cleanup, deadline), name="last-words",
                                      daemon=True)
        last_words.start()
        last_words.join(max(0.0, deadline - time.monotonic()))
        cleanup.join(max(0.0, deadline - time.monotonic()))
        os._exit(code)

    def _running(self) -> list[str]:
        try:
            tasks = asyncio.all_tasks(self._loop) if self._loop is not None else set()
        except RuntimeError:  # the loop's task set changed while it was read from this thread
            tasks = set()
        return sorted(t.get_name() for t in tasks if not t.done())


async def stop_step(guard: StopGuard, what: str, work: Awaitable[Any], limit_s: float, keep_s: float,
                    left_behind: list[str], failed_steps: list[str]) -> bool:
    """One step of a stop (the monolith's, a split process's), for at most `limit_s` and never into the last `keep_s`
    of `guard`'s budget. One out of time is cancelled but not waited for (what hangs may ignore the cancel), logged
    and added to `left_behind`; one that raised is logged and added to `failed_steps` (either way the exit says the
    stop did not complete). True when it finished."""
    guard.step = what
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=guard.within(limit_s, keep_s))
    if not done:
        task.cancel()
        left_behind.append(what)
        log.error("did not stop in time; left behind", extra={"step": what, "within_s": limit_s})
        return False
    if not task.cancelled() and task.exception() is not None:
        failed_steps.append(what)
        log.error("error while stopping", exc_info=task.exception(), extra={"step": what})
    return True


def at_forced_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Have StopGuard.force call `fn` before it ends the process (atexit functions do not run then): for what
    must not outlive the process even so, such as the embedded PostgreSQL it started. `fn` is called once, in a
    thread, while the event loop may be stuck: it must be quick and need no loop. Returns what withdraws it."""
    _at_forced_exit.append(fn)

    def withdraw() -> None:
        with contextlib.suppress(ValueError):
            _at_forced_exit.remove(fn)

    return withdraw


def _run_at_forced_exit() -> None:
    while True:
        try:
            fn = _at_forced_exit.pop()  # atomic: a second forced exit at the same time does not call it again
        except IndexError:
            return
        try:
            fn()
        except Exception:
            log.exception("clean-up at a forced exit failed")


def _last_words(why: str, fields: dict[str, Any], cleanup: threading.Thread, deadline: float) -> None:
    """The lines logged so far, then `why` and what the clean-up logged, written out (a thread: the caller bounds
    how long it waits)."""
    from shared import logs

    logs.flush()
    log.critical("%s; exiting now", why, extra=fields)
    cleanup.join(max(0.0, deadline - time.monotonic()))
    logs.flush()
    sys.stdout.flush()
    sys.stderr.flush()


# SIGHUP too: the terminal a `neopulse run` was started from went away (an SSH session dropped). Its default
# action would end the process on the spot, with no clean stop and the embedded PostgreSQL left running.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals(guard: StopGuard | None = None) -> asyncio.Event:
    """The process's stop event: set by SIGINT, SIGTERM or SIGHUP. Also installs the SIGUSR1 task dump.

    With `guard`, the first signal also arms its stop deadline, and a second one forces the exit (EXIT_FORCED).
    The second is caught by a plain signal handler, not the loop's: it works with the event loop stuck too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def forced(signum: int, frame: Any) -> None:
        assert guard is not None
        why = f"stop forced by a second signal ({signal.Signals(signum).name})"
        threading.Thread(target=guard.force, args=(EXIT_FORCED, why), name="forced-exit", daemon=True).start()

    def first() -> None:
        stop.set()
        if guard is None:
            return
        guard.begin()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, forced)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, first)
    install_task_dump()
    return stop


def install_task_dump() -> None:
    """`kill -USR1 <pid>` logs dump_tasks() at WARNING: a hung process says where it hangs."""
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: log.warning("asyncio tasks (SIGUSR1)", extra={"tasks": dump_tasks()}))


# Python 3.11's asyncio.wait_for returns the result instead of raising when a cancellation lands as the
# awaited future completes (CPython gh-86296; rewritten in 3.12). The Kotak SDK reads its feeds through
# wait_for(queue.get(), 1.0), so a task iterating a feed can swallow the cancel meant to stop it, keep
# running, and hold its TaskGroup (and the process) open at shutdown. Seen here: `neopulse run` hung
# after "stopping" in about one run in ten. The two helpers below make such a stop certain.


async def close_when_cancelled(close: Callable[[], Awaitable[None]]) -> None:
    """A task that waits until cancelled, then runs `close`. Start it beside a task iterating a feed: when
    their TaskGroup is cancelled, closing the feed ends the iteration even if its cancel was swallowed."""
    try:
        await asyncio.Event().wait()
    finally:
        await close()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], within_s: float = 5.0) -> list[asyncio.Task[Any]]:
    """Cancel `tasks` and wait for them, cancelling again every 100 ms (a swallowed cancel is retried at the
    task's next await). Returns those still running after `within_s`."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + within_s
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    return list(pending)


class TaskFailed(Exception):
    """A long-lived task failed and the process went through its ordered stop after it (EXIT_TASK_FAILED)."""


class FailureWatch:
    """Long-lived tasks of a process TaskGroup whose failure must stop the process the ordered way. A task that
    raises in a TaskGroup cancels every other task and the body waiting for the stop signal, so no component's
    stop() would run (the OMS's record of what it will not place, the notifier's queue). watch() keeps the error
    here instead, wait() wakes the body for its ordered stop, and raise_if_failed() ends the process after it."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, Exception]] = []
        self._any = asyncio.Event()

    async def watch(self, name: str, work: Awaitable[Any]) -> None:
        """Await `work` (a task's coroutine); an error it raises is logged and kept under `name`, not raised."""
        try:
            await work
        except Exception as exc:
            log.error("failed; the process stops", exc_info=exc, extra={"task": name})
            self.failed.append((name, exc))
            self._any.set()

    async def wait(self, stop: asyncio.Event, within_s: float | None = None) -> tuple[str, str] | None:
        """Until `stop` is set, `within_s` passes or a watched task failed: then the first failure, as its name and
        a one-line description of its error (the innermost of a TaskGroup's), or None."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._any.wait())]
        try:
            await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._first()

    def _first(self) -> tuple[str, str] | None:
        if not self.failed:
            return None
        name, exc = self.failed[0]
        return name, describe_error(exc)

    def raise_if_failed(self) -> None:
        """After the ordered stop: a watched task that failed (at any time, the stop included) ends the process."""
        first = self._first()
        if first is not None:
            raise TaskFailed(f"{first[0]} failed: {first[1]}") from self.failed[0][1]


def exit_code(exc: BaseException) -> int:
    """The exit code of a command whose asyncio.run ended with `exc` (possibly wrapped in TaskGroup exception
    groups): a ConfigError (2), or an OSError or RetryableError (1: a server that cannot be reached, such as Kotak at
    start) is printed as one line, as is a TaskFailed (EXIT_TASK_FAILED, its error logged already); Ctrl-C is 130;
    anything else is raised."""
    cause = first_leaf(exc)
    if isinstance(cause, KeyboardInterrupt):
        return 130
    if isinstance(cause, TaskFailed):
        print(f"neopulse: {cause}; stopped", file=sys.stderr)
        return EXIT_TASK_FAILED
    if not isinstance(cause, ConfigError | OSError | RetryableError):
        raise exc
    print(f"neopulse: {_text(cause)}", file=sys.stderr)
    return 2 if isinstance(cause, ConfigError) else 1


def describe_error(exc: BaseException) -> str:
    """One line for a trader or an operator: the type and message of the error inside (nested) exception groups,
    secrets masked as in the logs (it goes to Telegram and stderr: a database URL's password, a token)."""
    cause = first_leaf(exc)
    text = _text(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _text(exc: BaseException) -> str:
    """An error's message for a person, secrets masked; never raises (an error that cannot be put into words must
    not cut the ordered stop short that reports it)."""
    from shared import logs

    try:
        text = str(exc)
    except Exception:
        return f"<{type(exc).__name__} that could not be put into words>"
    return logs.scrub(text)


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what a TaskGroup's failure was about."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
