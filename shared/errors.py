"""The few exception types NeoPulse raises, and their one mapping to gRPC status codes.

Domain code raises these; servicers and CLIs translate them, nowhere else.
"""

from __future__ import annotations

import grpc


class NeoPulseError(Exception):
    """Base class: every error a user may see. The message names the field and the next step."""

    status = grpc.StatusCode.INTERNAL


class InvalidInput(NeoPulseError):
    """A request or value is malformed (bad field, off tick size, unknown name)."""

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(NeoPulseError):
    """An id or name that does not exist."""

    status = grpc.StatusCode.NOT_FOUND


class RiskRejected(NeoPulseError):
    """Risk refused an order; reason_code is machine-readable."""

    status = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class TradingHalted(RiskRejected):
    """The kill switch is engaged."""


class BrokerRejected(NeoPulseError):
    """The broker refused an order; the broker's reason is the message."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class NotSent(NeoPulseError):
    """An order request (place, modify, cancel) certainly did not reach the broker and will not be sent: refused
    for an expired session that could not be renewed, or gone stale while it was; the message says why. Unlike
    an unknown outcome, there is nothing to look up."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class OrderStateError(NeoPulseError):
    """The order is in a state that does not allow the request (cancelling a TRADED order, changing one whose last
    request the broker has not answered yet); the message says which state and what to do."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class RetryableError(NeoPulseError):
    """A transient failure (network, timeout, rate limit): the same call may succeed later."""

    status = grpc.StatusCode.UNAVAILABLE


class OutcomeUnknown(RetryableError):
    """An order call (place, cancel, kill switch...) ended without an answer, or after it acted without finishing:
    it may or may not have acted. Look the order up by `client_order_id` (empty when the call names none) before
    trying again, and retry only with that same id: a second call with it is refused as DUPLICATE_ORDER if the
    first one was placed."""

    def __init__(self, message: str, client_order_id: str = "") -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


class SessionExpired(RetryableError):
    """The broker session is no longer valid; log in again."""


class MessagesLost(NeoPulseError):
    """A stream cannot resume where the client asked: messages after that point are gone from the replay ring.
    `oldest_kept` is the sequence of the oldest message still there (0: none), from which a client may go on."""

    status = grpc.StatusCode.DATA_LOSS

    def __init__(self, message: str, oldest_kept: int = 0) -> None:
        super().__init__(message)
        self.oldest_kept = oldest_kept


class ConfigError(NeoPulseError):
    """Bad configuration found at start-up: the process exits with this one line."""

    status = grpc.StatusCode.INVALID_ARGUMENT


# gRPC drops a call whose trailers pass 16 KiB (clients may refuse them from 8 KiB), and grpc-message is
# percent-encoded (up to 3 bytes per UTF-8 byte): echoed input must not push the status past that.
MAX_MESSAGE_BYTES = 1024
MAX_FIELD_CHARS = 200


def wire_field(field: str) -> str:
    """The field path as it goes on the wire (message and neopulse-field trailer): printable ASCII, bounded.

    A path may hold user input (a map key such as params.<name>); metadata values must be printable ASCII,
    so anything else is backslash-escaped, and the message and the trailer stay identical for the bridge."""
    safe = field if field.isascii() and field.isprintable() else field.encode("unicode_escape").decode("ascii")
    return safe if len(safe) <= MAX_FIELD_CHARS else safe[:MAX_FIELD_CHARS] + "..."


def _bounded(text: str) -> str:
    raw = text.encode()
    if len(raw) <= MAX_MESSAGE_BYTES:
        return text
    return raw[:MAX_MESSAGE_BYTES].decode(errors="ignore") + " ... (truncated)"


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to (status, message); unknown errors never leak their text."""
    if isinstance(exc, InvalidInput):
        return exc.status, _bounded(f"{wire_field(exc.field)}: {str(exc).removeprefix(exc.field + ': ')}")
    if isinstance(exc, NeoPulseError):
        return exc.status, _bounded(str(exc))
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"
