"""Structured logs: one JSON object per line off a TTY with context as fields; terminal lines clear the status line."""

import io
import json
import logging

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
