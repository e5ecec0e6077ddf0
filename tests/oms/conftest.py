"""A running OMS on a real Bus with MemoryLedger + VirtualBroker, and a risk stand-in for SubmitOrder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import Clock, ManualClock
from shared.contracts import ops_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from tests.helpers import eventually as until
from tests.helpers import stop_worlds
from tests.oms.helpers import T0


@dataclass
class Oms:
    bus: Bus
    module: OmsModule
    broker: VirtualBroker
    ledger: MemoryLedger
    clock: ManualClock
    updates: list[t.OrderUpdate] = field(default_factory=list)
    notifications: list[ops_pb2.Notification] = field(default_factory=list)

    def of(self, client_order_id: str) -> list[t.OrderUpdate]:
        return [u for u in self.updates if u.client_order_id == client_order_id]

    def statuses(self, client_order_id: str) -> list[int]:
        return [u.status for u in self.of(client_order_id)]

    async def until_status(self, client_order_id: str, status: int) -> t.OrderUpdate:
        await until(lambda: status in self.statuses(client_order_id))
        return next(u for u in self.of(client_order_id) if u.status == status)


def accepted(order: t.OrderRequest) -> t.RiskDecision:
    return t.RiskDecision(accepted=True, order=order, strategy=order.strategy_tag, signal_id=order.signal_id)


class NoOrderFeed(VirtualBroker):
    """A broker outside the process whose order feed says nothing (a gap in it): the OMS learns of its fills only
    by polling or reading its book (the OMS polls no in-process broker)."""

    in_process = False

    def events(self):
        return self._silence()

    async def _silence(self):
        await asyncio.Event().wait()
        yield  # pragma: no cover


class NewDayBook(VirtualBroker):
    """Like Kotak on a new day: the earlier day's order ("c-yesterday") is gone from its book, and no event said so."""

    async def order_book(self):
        return [e for e in await super().order_book() if e.client_order_id != "c-yesterday"]


@contextlib.asynccontextmanager
async def running_on_new_day_book(ledger: MemoryLedger) -> AsyncIterator[tuple[Bus, ManualClock, OmsModule,
                                                                                asyncio.Task]]:
    """An OmsModule over a NewDayBook that checks for a new day every 10 ms, started and running (its run task
    last); stopped after."""
    bus, clock = Bus(), ManualClock(T0 + 1)
    module = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0),
                       NewDayBook(None, ChargeModel.default(), clock), ledger, clock)
    module.day_check_s = 0.01
    tasks = [asyncio.create_task(bus.run())]
    try:
        await module.start()
        tasks.append(asyncio.create_task(module.run()))
        yield bus, clock, module, tasks[-1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def risk_stand_in(bus: Bus, reject_code: str = ""):
    """What risk does for SubmitOrder: publish the accepted decision on ORDERS and return it."""
    async def submit(request: risk_pb2.SubmitOrderRequest) -> risk_pb2.SubmitOrderResponse:
        if reject_code:
            return risk_pb2.SubmitOrderResponse(decision=t.RiskDecision(
                accepted=False, reason_code=reject_code, reason=f"{reject_code}: lower the quantity",
                order=request.order))
        decision = accepted(request.order)
        await bus.publish(Topic.ORDERS, decision)
        return risk_pb2.SubmitOrderResponse(decision=decision)

    bus.handle(rpc.SUBMIT_ORDER, submit)


@pytest.fixture
async def start_oms():
    tasks: list[asyncio.Task] = []

    async def start(broker: VirtualBroker | None = None, ledger: MemoryLedger | None = None,
                    settings: OmsSettings | None = None, risk: bool = True, clock: Clock | None = None) -> Oms:
        bus, clock = Bus(), clock or ManualClock(T0 + 1)
        broker = broker or VirtualBroker(None, ChargeModel.default(), clock)
        broker.clock = clock
        ledger = ledger or MemoryLedger()
        settings = settings or OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2)
        oms = Oms(bus, OmsModule(bus, settings, broker, ledger, clock), broker, ledger, clock)

        async def collect(update):
            oms.updates.append(update)

        async def notified(notification):
            oms.notifications.append(notification)

        bus.subscribe(Topic.ORDER_UPDATES, "test", collect)
        bus.subscribe(Topic.NOTIFICATIONS, "test", notified)
        if risk:
            risk_stand_in(bus)
        tasks.append(asyncio.create_task(bus.run()))
        await oms.module.start()
        tasks.append(asyncio.create_task(oms.module.run()))
        started.append(oms.module)
        return oms

    started: list[OmsModule] = []
    yield start
    await stop_worlds(tasks, started)
