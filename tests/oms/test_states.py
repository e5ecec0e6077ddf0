"""The order state machine: every allowed transition passes, forbidden ones raise IllegalTransition."""

import itertools

import pytest

from services.oms.states import TERMINAL, TRANSITIONS, IllegalTransition, check_transition, is_terminal
from shared.contracts import trading_pb2 as t

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_transition_passes(current, new):
    assert check_transition(current, new) is None


def test_the_happy_path_is_allowed_end_to_end():
    path = [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_OPEN,
            t.ORDER_STATUS_PARTIALLY_FILLED, t.ORDER_STATUS_TRADED]

    for a, b in itertools.pairwise(path):
        check_transition(a, b)


@pytest.mark.parametrize(("current", "new"), [
    (t.ORDER_STATUS_TRADED, t.ORDER_STATUS_OPEN),
    (t.ORDER_STATUS_CANCELLED, t.ORDER_STATUS_PARTIALLY_FILLED),
    (t.ORDER_STATUS_REJECTED, t.ORDER_STATUS_SUBMITTED),
    (t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_TRADED),
    (t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_OPEN),
    (t.ORDER_STATUS_PARTIALLY_FILLED, t.ORDER_STATUS_OPEN),
    (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_PENDING_NEW),
    (t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_CANCEL_PENDING),
])
def test_illegal_transition_raises_naming_both_states(current, new):
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, new)

    assert t.OrderStatus.Name(current).removeprefix("ORDER_STATUS_") in str(info.value)
    assert t.OrderStatus.Name(new).removeprefix("ORDER_STATUS_") in str(info.value)


def test_terminal_states_have_no_way_out():
    assert all(TRANSITIONS[s] == frozenset() for s in TERMINAL)
    assert is_terminal(t.ORDER_STATUS_CANCELLED)
    assert not is_terminal(t.ORDER_STATUS_CANCEL_PENDING)


def test_every_status_has_a_row_in_the_table():
    statuses = {v for v in t.OrderStatus.values() if v != t.ORDER_STATUS_UNSPECIFIED}

    assert set(TRANSITIONS) == statuses
