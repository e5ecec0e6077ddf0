"""Structured logging: one JSON object per line off a TTY, readable lines on one, written off the event loop.

Context (order_id, token, strategy) goes in `extra=`, never in the message text. Lines below ERROR logged on an
event loop are formatted DEFER_S later, in short slices, so a burst of orders is not delayed by its own log lines:
pass values in `extra=` (they are read when the line is formatted), not objects that change afterwards.

Secrets are masked in every line (message, context and traceback): the values shared.config loaded as SecretStr
(see add_secrets), and credentials known by their shape: a URL's password, a Telegram bot token, an
Authorization header.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

CLEAR_LINE = "\r\x1b[K"
# How long an INFO/WARNING line logged on the event loop waits to be formatted. Formatting is the costly part
# of a line (about 15 µs warm; on these VMs 250-350 µs for the first line after the loop idled, every cache
# cold); a minute-boundary burst of signals and orders is over well within this, so its lines are formatted
# after it rather than between its orders (or between one process's order and its gRPC send).
DEFER_S = 0.02
# The kept lines are formatted in slices of about this long, each its own loop callback: what arrives meanwhile
# (the next tick batch, a signal) waits for one slice, not for a burst's whole backlog (measured 0.3-0.9 ms).
SLICE_S = 0.0001
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values are not masked: they would mask ordinary numbers and words
# Credentials by shape, each after a cheap substring test (a regex search of every line would cost more than
# formatting it): (substrings, pattern, replacement keeping group 1).
_SHAPES = (
    (("://",), re.compile(r"(://[^\s/@:]*:)[^\s]*@"), r"\1***@"),  # user:PASSWORD@ (to the last @, as shared.db)
    (("/bot",), re.compile(r"(/bot)\d+:[\w-]+"), r"\1***"),  # a Telegram bot token in a Bot API URL
    (("uthorization", "UTHORIZATION"),  # an Authorization header's value, whatever its scheme
     re.compile(r"((?i:authorization)['\"]?\s*[:=]\s*['\"]?)[^'\",}\r\n]+"), r"\1***"),
    (("earer ", "EARER "), re.compile(r"\b((?i:bearer) )[\w.~+/=-]+"), r"\1***"),  # Bearer TOKEN anywhere
)
_secrets: list[str] = []  # the values given to add_secrets, longest first
# Every substring whose presence means a line needs scrubbing (most lines contain none): the secrets, their
# JSON-escaped forms (what a JSON line holds), and the shapes' substrings.
_needles: list[str] = [needle for needles, _, _ in _SHAPES for needle in needles]


def add_secrets(*values: str) -> None:
    """Mask these values (consumer key, MPIN, bot token, ...) in every line from now on."""
    new = {v for v in values if len(v) >= MIN_SECRET_LEN} - set(_secrets)
    if new:
        _secrets[:] = sorted({*_secrets, *new}, key=len, reverse=True)
        escaped = {json.dumps(v)[1:-1] for v in new}
        _needles[:] = list(dict.fromkeys([*_needles, *sorted(new | escaped, key=len, reverse=True)]))


def _suspect(text: str) -> bool:
    for needle in _needles:
        if needle in text:
            return True
    return False


def scrub(text: str) -> str:
    """`text` with every known secret and every credential-shaped string replaced by ***."""
    if not _suspect(text):
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for needles, pattern, replacement in _SHAPES:
        if any(needle in text for needle in needles):
            text = pattern.sub(replacement, text)
    return text


def _scrubbed(value: object) -> object:
    """A value for a JSON line with its text scrubbed; numbers stay numbers (unless one is a secret, an MPIN say)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return MASK if str(value) in _secrets else value
    if isinstance(value, dict):
        return {_scrubbed(k) if isinstance(k, str) else k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return scrub(value if isinstance(value, str) else str(value))


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str)
        if _suspect(line):  # rarely: mask field by field, so numbers stay numbers and JSON escaping hides nothing
            line = json.dumps(_scrubbed(out), default=str)
        return line


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal; each starts by clearing the line, so a live status line that a
    CLI keeps redrawing with \r is replaced by the log line instead of run into it."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{CLEAR_LINE}{ts} {record.levelname[0]} {record.name}: {record.getMessage()}"
        if extras:
            line += f" {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


class _Writer(threading.Thread):
    """Writes the formatted lines it is handed, everything queued in one write: one wake-up (and one hold of
    the GIL) per burst of records rather than one per record."""

    STOP = object()

    def __init__(self, stream: Any) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.stream = stream
        self.lines: queue.Queue[Any] = queue.Queue()

    def run(self) -> None:
        lines = self.lines
        while True:
            batch = [lines.get()]
            while not lines.empty():
                batch.append(lines.get_nowait())
            text = "".join(f"{line}\n" for line in batch if line is not self.STOP)
            try:
                if text:
                    self.stream.write(text)
                    self.stream.flush()
            except Exception:  # a closed or broken stream must not kill the writer (or the process)
                pass
            for _ in batch:
                lines.task_done()
            if self.STOP in batch:
                return

    def stop(self) -> None:
        self.lines.put(self.STOP)
        self.join(timeout=5)


class _HandOff(logging.Handler):
    """Formats records in the thread that logs them and hands the lines to the writer thread (formatting
    there would take the GIL from the event loop at any moment). On an event loop, records below ERROR are
    kept and formatted from DEFER_S after the first, SLICE_S at a time; an ERROR line, or one with a traceback,
    first writes what is kept, then itself, at once (the loop's lines stay in order)."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer
        self._kept: deque[logging.LogRecord] = deque()
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop a write of the kept is due on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # another thread: its lines were never ordered with the loop's
            self._put(record)
            return
        if record.levelno >= logging.ERROR or record.exc_info:
            self.write_kept()
            self._put(record)
            return
        self._kept.append(record)
        if self._timer_loop is not loop:
            self._timer_loop = loop
            loop.call_later(DEFER_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_loop = None
        self._write_slice()

    def _write_slice(self) -> None:
        """Format kept records for about SLICE_S (at least one), then go on in a callback of its own."""
        if self.write_kept(until=time.perf_counter() + SLICE_S):
            asyncio.get_running_loop().call_soon(self._write_slice)

    def write_kept(self, until: float = float("inf")) -> bool:
        """Format and queue the kept records now (oldest first): all, or at least one and until perf_counter()
        passes `until`. True when some are left."""
        kept = self._kept
        while kept:
            try:
                record = kept.popleft()
            except IndexError:  # another thread took the last one
                return False
            self._put(record)
            if kept and time.perf_counter() >= until:
                return True
        return False

    def _put(self, record: logging.LogRecord) -> None:
        try:
            self.writer.lines.put_nowait(self.format(record))
        except Exception:
            self.handleError(record)


_writer: list[_Writer] = []  # the running writer thread, if any
_handoff: list[_HandOff] = []  # its handler, whose kept records go first when it stops


def setup(level: str = "INFO", json_lines: bool | None = None, stream=None) -> None:
    """Configure the root logger once per process. A record is formatted where it is logged and the line
    queued; a writer thread does the write(2), so a slow stderr (a pipe nobody drains, a busy terminal)
    never stalls the event loop. Stopped (so flushed) at exit; `flush()` waits for it."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    # No caller file/line, thread or process lookups per record: the formats below never show them.
    logging._srcfile = None  # type: ignore[attr-defined]  # the documented switch (logging HOWTO, "Optimization")
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    _stop_writer()
    writer = _Writer(stream)
    writer.start()
    if not _writer:
        atexit.register(_stop_writer)
    _writer[:] = [writer]
    handoff = _HandOff(writer)
    _handoff[:] = [handoff]
    handoff.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handoff]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "websockets", "asyncio", "telegram", "hpack", "neo_api_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _quiet_kotak_sdk()


def _quiet_kotak_sdk() -> None:
    """The Kotak SDK logs through its own handlers (stdout and ./logs, never through this module), with request
    bodies whose MPIN and TOTP it masks only partly ("48***17" for a refused MPIN). Off, whether the SDK is
    imported yet or not, unless NEO_LOG_LEVEL asks for its lines (debugging the SDK)."""
    if "NEO_LOG_LEVEL" in os.environ:
        return
    os.environ["NEO_LOG_LEVEL"] = "NOLOG"  # both read when the SDK is imported
    os.environ.setdefault("NEO_LOG_FILE_ENABLED", "false")
    sdk = sys.modules.get("neo_api_client.logger")
    if sdk is not None:  # already imported, and set up with its defaults: replace them
        sdk.setup_logging(level="NOLOG", file_enabled=os.environ["NEO_LOG_FILE_ENABLED"].lower() == "true")


def flush() -> None:
    """Write every record logged so far, kept ones included, and wait until written (before printing a
    summary, in tests)."""
    if _handoff:
        _handoff[0].write_kept()
    if _writer:
        _writer[0].lines.join()


def _stop_writer() -> None:
    if _handoff:
        _handoff.pop().write_kept()  # lines kept on a loop that has ended
    if _writer:
        _writer.pop().stop()  # writes what is queued, then ends the thread
