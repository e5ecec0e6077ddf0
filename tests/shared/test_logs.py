"""Structured logs: one JSON object per line off a TTY with context as fields; terminal lines clear the status line."""

import io
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared import logs


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
