"""A broker session that cannot be renewed (Kotak refused the re-login; KotakBroker.login_trouble): nothing comes
from the broker meanwhile, while stops and targets working there may fill. The OMS tells the trader at once, again
when automatic login stops, and when a login works again; it used to be in the log alone."""

from __future__ import annotations

from services.oms import module
from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from shared.clock import ManualClock
from shared.contracts import ops_pb2
from tests.helpers import eventually as until


class LoginTroubled(VirtualBroker):
    """A broker whose session can be lost, as KotakBroker's."""

    login_trouble = ""


def told(oms) -> list[tuple[int, str]]:
    return [(n.severity, n.title) for n in oms.notifications if n.title.startswith("Kotak")]


async def test_a_lost_session_its_stopped_logins_and_its_return_are_told_once_each(start_oms, monkeypatch):
    monkeypatch.setattr(module, "LOGIN_WATCH_S", 0.01)
    broker = LoginTroubled(None, ChargeModel.default(), ManualClock(0))
    oms = await start_oms(broker=broker)

    broker.login_trouble = "Kotak refused the login (wrong MPIN); 2 more before automatic login stops"
    await until(lambda: len(told(oms)) == 1)
    broker.login_trouble = "Kotak refused the login (wrong MPIN); 1 more before automatic login stops"
    broker.login_trouble = "Kotak refused the last 3 logins; automatic login stopped so the account is not locked"
    await until(lambda: len(told(oms)) == 2)
    broker.login_trouble = ""
    await until(lambda: len(told(oms)) == 3)

    assert told(oms) == [(ops_pb2.SEVERITY_CRITICAL, "Kotak session lost"),
                         (ops_pb2.SEVERITY_CRITICAL, "Kotak automatic login stopped"),
                         (ops_pb2.SEVERITY_WARNING, "Kotak session restored")]
