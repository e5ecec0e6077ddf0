"""Split mode reaches another module's method only when that module's NEEDS lists it: a request a module makes over
the bus and its split process does not route to the owner's gRPC server fails there (NotFound) while it works in the
monolith. Read from each module's own code, so a new call cannot be forgotten."""

import re
from pathlib import Path

import pytest

from services.app.split import NEEDS, owner
from shared import rpc
from shared.bus import Topic

SERVICES = Path(__file__).resolve().parents[2] / "services"
CALL = re.compile(r"call\(\s*rpc\.([A-Z_]+)")
SUBSCRIBE = re.compile(r"subscribe\(\s*Topic\.([A-Z_]+)")


def calls_of(module: str) -> set[str]:
    return {getattr(rpc, name) for name in _found(module, CALL)}


def _found(module: str, pattern: re.Pattern[str]) -> set[str]:
    return {name for path in (SERVICES / module).rglob("*.py") for name in pattern.findall(path.read_text())}


@pytest.mark.parametrize("module", sorted(NEEDS))
def test_every_method_a_module_calls_on_another_is_routed_to_it_in_split_mode(module):
    remote = {m for m in calls_of(module) if owner(m) != module}
    assert remote - set(NEEDS[module].requests) == set()


def test_the_strategy_module_calls_the_oms_to_cancel_and_change_its_orders():
    assert {rpc.CANCEL_ORDER, rpc.MODIFY_ORDER} <= calls_of("strategy")


@pytest.mark.parametrize("module", sorted(NEEDS))
def test_every_topic_a_module_reads_from_another_is_streamed_to_it_in_split_mode(module):
    """Notifications are the exception: every process forwards its own to the notifier (NotificationForwarder)."""
    streamed = {rpc.STREAM_TOPICS[method] for method, _ in NEEDS[module].streams}
    read = {Topic[name] for name in _found(module, SUBSCRIBE)} - {Topic.NOTIFICATIONS}
    remote = {topic for topic in read if owner(_stream_of(topic)) != module}
    assert remote - streamed == set()


def _stream_of(topic: Topic) -> str:
    (method,) = [m for m, t in rpc.STREAM_TOPICS.items() if t is topic]
    return method
