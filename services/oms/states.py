"""The order state machine over trading_pb2.OrderStatus: which transitions are legal.

Pure data and one check; the OMS engine calls it before every ledger write.
"""

from __future__ import annotations

from services.oms.ledger import TERMINAL
from shared.contracts import trading_pb2 as t
from shared.order_terms import DAY_BOUND  # the OMS's modules import it from here (__all__)

__all__ = ["DAY_BOUND", "TERMINAL", "TRANSITIONS", "WORKING", "IllegalTransition", "ReasonCode", "allows_adoption",
           "allows_late_fill", "allows_working_news", "check_transition", "is_terminal"]


class ReasonCode:
    """OrderUpdate.reason_code values (documented in trading.proto): why the OMS or the broker ended or
    recovered an order. Stored in order_ledger.reason_code; `reason` says the same for people."""

    BROKER_REJECTED = "BROKER_REJECTED"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # given up: REJECTED without the broker's answer, adopted if found
    NOT_SENT = "NOT_SENT"
    NOT_IN_BROKER_BOOK = "NOT_IN_BROKER_BOOK"
    ADOPTED = "ADOPTED"
    CHANGED_AT_BROKER = "CHANGED_AT_BROKER"  # the broker reports terms NeoPulse never sent (Kotak's app)
    CANCELLED_AT_BROKER = "CANCELLED_AT_BROKER"  # cancelled unasked: Kotak's app, its RMS, the exchange


# States in which the broker works the order and has answered every request of ours (no cancel or change under
# way): a change may be sent. A broker row in one of them for an order whose cancel is under way is likely older.
RESTING = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED})

# States in which the broker holds a live order (it may still fill).
WORKING = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED,
                     t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_MODIFY_PENDING})

_LIVE_TARGETS = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED,
                           t.ORDER_STATUS_TRADED, t.ORDER_STATUS_CANCELLED})

TRANSITIONS: dict[int, frozenset[int]] = {
    # Written ahead to the ledger, then sent; SUBMITTED is recorded after the broker call. After a crash, a
    # PENDING_NEW order the broker does not hold ends REJECTED (outcome unknown: adopted if it turns up).
    t.ORDER_STATUS_PENDING_NEW: frozenset({t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_REJECTED}),
    # The broker may answer with its acknowledgement or already with fills / a cancel (IOC).
    t.ORDER_STATUS_SUBMITTED: _LIVE_TARGETS | {t.ORDER_STATUS_REJECTED},
    # The exchange can still reject an order the broker accepted.
    t.ORDER_STATUS_OPEN: (_LIVE_TARGETS - {t.ORDER_STATUS_OPEN})
    | {t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_REJECTED},
    # A triggered stop becomes OPEN (stop-limit) or fills (stop-market).
    t.ORDER_STATUS_TRIGGER_PENDING: (_LIVE_TARGETS - {t.ORDER_STATUS_TRIGGER_PENDING})
    | {t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_REJECTED},
    # More fills keep it PARTIALLY_FILLED; the rest may be cancelled (IOC, user, expiry).
    t.ORDER_STATUS_PARTIALLY_FILLED: frozenset({t.ORDER_STATUS_PARTIALLY_FILLED, t.ORDER_STATUS_TRADED,
                                                t.ORDER_STATUS_CANCELLED, t.ORDER_STATUS_CANCEL_PENDING,
                                                t.ORDER_STATUS_MODIFY_PENDING}),
    # A cancel can lose the race to a fill, be refused (back to where it was: MODIFY_PENDING too, a change still
    # unanswered), or cross the exchange's rejection.
    t.ORDER_STATUS_CANCEL_PENDING: _LIVE_TARGETS | {t.ORDER_STATUS_REJECTED, t.ORDER_STATUS_MODIFY_PENDING},
    # A modify is acknowledged (back to a live state), overtaken by fills or by a cancel; an order whose modify got
    # no answer may be cancelled (a cancel must always be possible).
    t.ORDER_STATUS_MODIFY_PENDING: _LIVE_TARGETS | {t.ORDER_STATUS_REJECTED, t.ORDER_STATUS_CANCEL_PENDING},
    t.ORDER_STATUS_TRADED: frozenset(),
    t.ORDER_STATUS_REJECTED: frozenset(),
    t.ORDER_STATUS_CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """A transition the state machine forbids; the caller logs and counts it, never crashes."""

    def __init__(self, current: int, new: int) -> None:
        super().__init__(f"order status cannot go from {name(current)} to {name(new)}")
        self.current = current
        self.new = new


def name(status: int) -> str:
    """ORDER_STATUS_OPEN -> 'OPEN' (unknown numbers as text)."""
    try:
        return t.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")
    except ValueError:
        return str(status)


def can_transition(current: int, new: int) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def allows_late_fill(current: int, new: int) -> bool:
    """The one exception to the table for fills: a CANCELLED order the broker reports with more fills (they
    happened before the cancel took effect) stays CANCELLED and records them; a TRADED order reported with more
    fills than recorded (a "complete" row that came without its filled quantity) stays TRADED and records them."""
    return current == new and current in (t.ORDER_STATUS_CANCELLED, t.ORDER_STATUS_TRADED)


def allows_working_news(current: int, new: int) -> bool:
    """The exception for a broker row that only gives the order a new exchange order id or new terms (quantity,
    price, trigger: a change made elsewhere, or one whose answer was lost): a working order keeps its state and
    records them (cancels and order-book polls go by the id; fills, risk and P&L by the terms)."""
    return current == new and current in WORKING


def allows_adoption(current: int, new: int) -> bool:
    """The one exception for an order the OMS gave up on (placement outcome unknown, tag not found) that the
    broker turns out to hold: REJECTED -> the broker's live or final state."""
    return current == t.ORDER_STATUS_REJECTED and new in _LIVE_TARGETS


def check_transition(current: int, new: int) -> None:
    """Raise IllegalTransition unless current -> new is allowed."""
    if not can_transition(current, new):
        raise IllegalTransition(current, new)


def is_terminal(status: int) -> bool:
    return status in TERMINAL
