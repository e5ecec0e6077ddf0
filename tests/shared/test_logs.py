"""Structured logs: one JSON object per line off a TTY with context as fields; terminal lines clear the status line."""

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

from pydantic import SecretStr

from shared import logs


def emit(json_lines: bool, **extra) -> str:
    out = io.StringIO()
    logs.setup("INFO", json_lines=json_lines, stream=out)
    logging.getLogger("neopulse.test").info("order placed", extra=extra)
    logs.flush()
    return out.getvalue()


def test_a_json_line_carries_the_context_as_fields_not_in_the_message():
    record = json.loads(emit(True, order_id="abc", token=2885))
    assert (record["msg"], record["order_id"], record["token"]) == ("order placed", "abc", 2885)
    assert record["level"] == "info"


def test_a_secret_in_the_context_is_logged_masked():
    line = emit(True, mpin=SecretStr("654321"))
    assert "654321" not in line and json.loads(line)["mpin"] == "**********"


def test_a_terminal_line_first_clears_the_live_status_line():
    line = emit(False, token=2885)
    assert line.startswith(logs.CLEAR_LINE) and line.rstrip().endswith("order placed token=2885")


def test_lines_are_written_by_the_writer_thread_not_the_caller():
    writers = []

    class Recording(io.StringIO):
        def write(self, text):
            writers.append(threading.current_thread())
            return super().write(text)

    logs.setup("INFO", json_lines=True, stream=Recording())
    logging.getLogger("neopulse.test").info("signal", extra={"token": 2885})
    logs.flush()

    assert writers and threading.current_thread() not in writers


def test_lines_still_queued_at_exit_are_written():
    code = ("import logging; from shared import logs; logs.setup('INFO', json_lines=True); "
            "[logging.getLogger('neopulse.test').info('last words', extra={'n': i}) for i in range(200)]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])

    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["n"] for line in lines] == list(range(200))


class Recording(io.StringIO):
    """A stream that says when the writer thread wrote to it."""

    def __init__(self):
        super().__init__()
        self.wrote = threading.Event()

    def write(self, text):
        n = super().write(text)
        self.wrote.set()
        return n


def messages(text: str) -> list[str]:
    return [json.loads(line)["msg"] for line in text.splitlines()]


async def test_info_lines_logged_on_the_loop_are_formatted_later_in_one_go():
    out = Recording()
    logs.setup("INFO", json_lines=True, stream=out)
    log = logging.getLogger("neopulse.test")
    log.info("signal one")
    log.warning("signal two")

    await asyncio.sleep(logs.DEFER_S / 4)
    assert not out.wrote.is_set()  # kept: nothing formatted while the burst may still be running
    assert await asyncio.to_thread(out.wrote.wait, 5)  # written after DEFER_S, no flush() needed
    await asyncio.to_thread(logs._writer[0].lines.join)
    assert messages(out.getvalue()) == ["signal one", "signal two"]


async def test_kept_lines_are_formatted_in_slices_that_let_other_callbacks_run(monkeypatch):
    monkeypatch.setattr(logs, "SLICE_S", 0.0)  # one record per slice
    out = io.StringIO()
    logs.setup("INFO", json_lines=True, stream=out)
    log = logging.getLogger("neopulse.test")
    for i in range(20):
        log.info(f"line {i}")
    kept = logs._handoff[0]._kept
    seen = []
    while kept:  # a task with work in every loop turn, as the next tick batch would be
        seen.append(len(kept))
        await asyncio.sleep(0)
    between = [n for n in seen if 0 < n < 20]
    assert len(between) >= 10  # the burst's lines went out a few at a time, others running in between
    log.info("line 20")
    for _ in range(3):
        await asyncio.sleep(0)
    log.error("line 21")  # an error still writes what is kept, then itself
    await asyncio.to_thread(logs._writer[0].lines.join)
    assert messages(out.getvalue()) == [f"line {i}" for i in range(22)]


async def test_an_error_line_is_written_at_once_after_the_lines_kept_before_it():
    out = io.StringIO()
    logs.setup("INFO", json_lines=True, stream=out)
    log = logging.getLogger("neopulse.test")
    log.info("order placed")
    log.error("broker rejected")

    assert not logs._handoff[0]._kept  # both handed to the writer, not waiting for the timer
    await asyncio.to_thread(logs._writer[0].lines.join)
    assert messages(out.getvalue()) == ["order placed", "broker rejected"]


def test_lines_kept_when_the_loop_ends_are_written_by_flush():
    out = io.StringIO()
    logs.setup("INFO", json_lines=True, stream=out)

    async def last_words():
        logging.getLogger("neopulse.test").info("stopping")

    asyncio.run(last_words())  # the loop is gone before its DEFER_S timer fires
    logs.flush()
    assert messages(out.getvalue()) == ["stopping"]


def test_lines_kept_on_the_loop_are_written_at_exit():
    code = ("import asyncio, logging; from shared import logs; logs.setup('INFO', json_lines=True)\n"
            "async def main():\n"
            "    [logging.getLogger('neopulse.test').info('last words', extra={'n': i}) for i in range(50)]\n"
            "asyncio.run(main())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])

    assert [json.loads(line)["n"] for line in done.stderr.splitlines()] == list(range(50))
