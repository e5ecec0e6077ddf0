"""The simulated broker of the broker-events fuzz (test_fuzz_events.py) and the driver of one seed.

`World` holds each order as the broker does (`Truth`) and the events in flight to the OMS; `ScriptedBroker` places
like the VirtualBroker and answers cancels, changes and lookups from the World; `fuzz` interleaves the broker's moves,
deliveries (duplicated, stale, out of order, without price or terms) and the user's cancels and changes; `reconcile`
answers what is pending and delivers each order's latest row once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from services.oms.broker import BrokerAck, BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.ledger import TERMINAL, MemoryLedger
from services.oms.states import name
from services.oms.virtual_broker import VirtualBroker
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NeoPulseError, RetryableError
from tests.oms.conftest import accepted
from tests.oms.helpers import order

TOKENS = (2885, 1594)
PRICES = (99_50, 100_00, 100_50)  # few, so that a change often goes back to terms the order had before
LIVE = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_PARTIALLY_FILLED, t.ORDER_STATUS_CANCEL_PENDING,
                  t.ORDER_STATUS_MODIFY_PENDING})
TERM_NAMES = ("quantity", "price_paise", "trigger_price_paise")


def terms(request: t.OrderRequest) -> tuple[int, int, int]:
    return request.quantity, request.price_paise, request.trigger_price_paise


@dataclass
class Truth:
    """One order as the broker holds it; every change is a snapshot the OMS may hear about."""

    client_order_id: str
    exchange_order_id: str
    quantity: int
    price: int  # paise: the fuzz's orders are limit orders
    status: int = t.ORDER_STATUS_OPEN
    filled: int = 0
    value: int = 0  # paise, sum of quantity * price of the fills
    charges: int = 0
    pending: tuple[int, int] | None = None  # a change at the exchange, not in force yet (MODIFY_PENDING)
    shows_pending: bool = False  # whether its MODIFY_PENDING rows show the pending terms (Kotak's show either)
    held: set[tuple[int, int]] = field(default_factory=set)  # every (quantity, price) it was in force with
    history: list[BrokerOrderEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.held.add((self.quantity, self.price))

    def snapshot(self, last_fill: tuple[int, int, int] | None = None) -> BrokerOrderEvent:
        avg = (self.value + self.filled // 2) // self.filled if self.filled else 0
        raw = {} if last_fill is None else {"last_fill_quantity": last_fill[0], "last_fill_price_paise": last_fill[1],
                                            "last_fill_charges_paise": last_fill[2]}
        shown = (self.quantity, self.price)
        if self.status == t.ORDER_STATUS_MODIFY_PENDING and self.pending and self.shows_pending:
            shown = self.pending
        ev = BrokerOrderEvent(self.exchange_order_id, self.client_order_id, self.status, self.filled, avg,
                              charges_paise=self.charges, raw=raw, quantity=shown[0], price_paise=shown[1])
        self.history.append(ev)
        return ev

    def set_terms(self, new: tuple[int, int]) -> None:
        self.quantity, self.price = new
        self.held.add(new)

    def change_pending(self, new: tuple[int, int], *, shows: bool) -> None:
        """A change sent to the exchange, not in force until it answers (MODIFY_PENDING)."""
        self.status, self.pending, self.shows_pending = t.ORDER_STATUS_MODIFY_PENDING, new, shows

    def change_answered(self) -> None:
        """The exchange answers the change pending: in force while its quantity is still above the filled (fills
        went on meanwhile, by the old terms), refused otherwise; the order is live again."""
        if self.pending is not None and self.pending[0] > self.filled:
            self.set_terms(self.pending)
        self.pending = None
        self.status = t.ORDER_STATUS_PARTIALLY_FILLED if self.filled else t.ORDER_STATUS_OPEN


class World:
    """The broker side of one seed: truths, the events in flight to the OMS, and the answers to cancel, modify and
    lookup."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.truths: dict[str, Truth] = {}  # client_order_id -> truth
        self.by_exchange_id: dict[str, Truth] = {}
        self.in_flight: list[BrokerOrderEvent] = []
        self.ids = 0
        self.log: list[str] = []  # what the OMS was told and asked, printed when a seed fails

    def note(self, what: str, ev: BrokerOrderEvent | None = None) -> None:
        if ev is not None:
            what += (f" {ev.client_order_id}/{ev.exchange_order_id} {name(ev.status)} filled={ev.filled_quantity}"
                     f" avg={ev.average_price_paise} charges={ev.charges_paise} raw={ev.raw}"
                     f" terms={ev.quantity}@{ev.price_paise}")
        self.log.append(what)

    def change(self, truth: Truth, last_fill: tuple[int, int, int] | None = None) -> None:
        self.in_flight.append(truth.snapshot(last_fill))

    def new_id(self, truth: Truth) -> None:
        self.ids += 1
        truth.exchange_order_id = f"EX-{self.ids}"
        self.by_exchange_id[truth.exchange_order_id] = truth

    def new_terms(self, truth: Truth) -> tuple[int, int]:
        """A change made in Kotak's app: the quantity up, or down but above the filled, and/or the price."""
        rng = self.rng
        quantity = truth.quantity if rng.random() < 0.4 else rng.randint(truth.filled + 1, truth.quantity + 10)
        return quantity, truth.price if rng.random() < 0.4 else rng.choice(PRICES)

    # -- the broker moves an order on ----------------------------------------------------------
    def step(self, truth: Truth) -> None:
        rng, s = self.rng, truth.status
        roll = rng.random()
        if s in LIVE and truth.filled < truth.quantity and roll < 0.5:
            q = rng.randint(1, truth.quantity - truth.filled)
            price, charges = rng.randint(99_00, 101_00), rng.randint(0, 40)
            truth.filled += q
            truth.value += q * price
            truth.charges += charges
            if truth.filled == truth.quantity:
                truth.status, truth.pending = t.ORDER_STATUS_TRADED, None
            elif s == t.ORDER_STATUS_MODIFY_PENDING and rng.random() < 0.5:
                truth.change_answered()
            elif s != t.ORDER_STATUS_MODIFY_PENDING and (s != t.ORDER_STATUS_CANCEL_PENDING or rng.random() < 0.5):
                truth.status = t.ORDER_STATUS_PARTIALLY_FILLED
            self.change(truth, (q, price, charges) if rng.random() < 0.5 else None)
        elif s == t.ORDER_STATUS_OPEN and truth.filled == 0 and roll < 0.55:
            truth.status = t.ORDER_STATUS_REJECTED
            self.change(truth)
        elif s in (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_PARTIALLY_FILLED) and roll < 0.7:  # changed in Kotak's app
            new = self.new_terms(truth)
            if rng.random() < 0.5:
                truth.set_terms(new)  # in force at once: a row in its live state with the new terms
            else:
                truth.change_pending(new, shows=rng.random() < 0.5)
            self.change(truth)
        elif s == t.ORDER_STATUS_MODIFY_PENDING and roll < 0.8:
            truth.change_answered()
            self.change(truth)
        elif s in LIVE and roll < 0.85:
            truth.status, truth.pending = t.ORDER_STATUS_CANCELLED, None  # expired, or the pending cancel went through
            self.change(truth)
        elif s == t.ORDER_STATUS_CANCELLED and truth.filled < truth.quantity and roll < 0.9:
            q = rng.randint(1, truth.quantity - truth.filled)  # fills that happened before the cancel took effect
            truth.filled += q
            truth.value += q * rng.randint(99_00, 101_00)
            self.change(truth)
        elif s in LIVE and roll < 0.95:
            self.new_id(truth)
            self.change(truth)

    # -- the broker's answers to the OMS -----------------------------------------------------------
    async def cancel(self, exchange_order_id: str) -> BrokerAck:
        await asyncio.sleep(0)
        truth = self.by_exchange_id[exchange_order_id]
        if truth.status in TERMINAL:
            raise BrokerRejected(f"order {exchange_order_id} is already {name(truth.status)}")
        how = self.rng.choice(["kotak", "virtual", "refused", "timeout-done", "timeout-lost"])
        self.note(f"cancel {truth.client_order_id}: {how}")
        if how == "refused":
            raise BrokerRejected(f"order {exchange_order_id}: cancel refused")
        if how != "timeout-lost":
            truth.status = t.ORDER_STATUS_CANCELLED if how == "virtual" else t.ORDER_STATUS_CANCEL_PENDING
            truth.pending = None
            self.change(truth)
        if how.startswith("timeout"):
            raise RetryableError("cancel timed out")
        return BrokerAck(exchange_order_id, truth.status)

    async def modify(self, exchange_order_id: str, change: dict[str, int]) -> BrokerAck:
        """Refused for an order not OPEN or PARTIALLY_FILLED here (ended, a cancel or another change pending) and
        for a quantity not above its filled; else taken (in force at once, or pending), refused, or no answer."""
        await asyncio.sleep(0)
        rng, truth = self.rng, self.by_exchange_id[exchange_order_id]
        assert set(change) <= {"quantity", "price_paise"}, f"a limit order changed by {change}"
        new = (change.get("quantity", truth.quantity), change.get("price_paise", truth.price))
        if truth.status not in (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_PARTIALLY_FILLED) or new[0] <= truth.filled:
            self.note(f"modify {truth.client_order_id} {change}: refused ({name(truth.status)}, filled {truth.filled})")
            raise BrokerRejected(f"order {exchange_order_id} is {name(truth.status)}, filled {truth.filled}")
        how = rng.choice(["done", "pending", "refused", "timeout-done", "timeout-lost"])
        self.note(f"modify {truth.client_order_id} {change}: {how}")
        if how == "refused":
            raise BrokerRejected(f"order {exchange_order_id}: change refused by the exchange")
        if how != "timeout-lost":
            if how == "pending" or (how == "timeout-done" and rng.random() < 0.3):
                truth.change_pending(new, shows=rng.random() < 0.5)
            else:
                truth.set_terms(new)
            self.change(truth)
        if how.startswith("timeout"):
            raise rng.choice([RetryableError("modify timed out"), TimeoutError("read timed out")])
        return BrokerAck(exchange_order_id, t.ORDER_STATUS_MODIFY_PENDING if rng.random() < 0.5 else truth.status)

    async def find_by_tag(self, client_order_id: str) -> BrokerOrderEvent | None:
        truth = self.truths.get(client_order_id)
        roll = self.rng.random()
        if truth is None or roll < 0.15:
            return None
        if roll < 0.25:
            raise RetryableError("order book read timed out")
        ev = self.rng.choice(truth.history) if roll < 0.5 and truth.history else truth.snapshot()  # maybe lagging
        self.note("find_by_tag ->", ev)
        return ev


class FlakyLedger(MemoryLedger):
    """A ledger whose writes sometimes fail (a database blip) while `flaky` is set: nothing of that
    transition may reach the book, positions or charges; the broker's next row brings it again. Keeps each
    update's audit (why it was written) by (internal_id, sequence)."""

    rng: random.Random | None = None

    def __init__(self) -> None:
        super().__init__()
        self.audits: dict[tuple[str, int], dict[str, Any]] = {}

    async def record(self, update: t.OrderUpdate, audit: dict) -> None:
        if self.rng is not None and self.rng.random() < 0.08:
            raise ConnectionResetError("ledger connection lost")
        await super().record(update, audit)
        self.audits[(update.internal_id, update.sequence)] = audit


class ScriptedBroker(VirtualBroker):
    """Places like the VirtualBroker (acknowledged OPEN, no fills); cancels, changes and lookups are the World's."""

    world: World

    async def place_order(self, order: t.OrderRequest) -> BrokerAck:
        truth = Truth(order.client_order_id, "", order.quantity, order.price_paise)
        self.world.new_id(truth)
        self.world.truths[order.client_order_id] = truth
        truth.snapshot()
        return BrokerAck(truth.exchange_order_id, t.ORDER_STATUS_OPEN)

    async def cancel_order(self, exchange_order_id: str) -> BrokerAck:
        return await self.world.cancel(exchange_order_id)

    async def modify_order(self, exchange_order_id: str, **change: int) -> BrokerAck:
        return await self.world.modify(exchange_order_id, change)

    async def find_by_tag(self, client_order_id: str) -> BrokerOrderEvent | None:
        return await self.world.find_by_tag(client_order_id)


async def start_scripted(start_oms, seed: int):
    rng = random.Random(seed)
    broker = ScriptedBroker(None, ChargeModel.default(), ManualClock(0))
    broker.world = World(rng)
    oms = await start_oms(broker=broker, ledger=FlakyLedger(), risk=False)
    return oms, broker.world, rng


async def place(oms, rng: random.Random, n: int) -> list[t.OrderRequest]:
    requests = []
    for i in range(n):
        side = rng.choice([t.SIDE_BUY, t.SIDE_SELL])
        req = order(side=side, quantity=rng.randint(1, 30), client_order_id=f"c-{i}", token=rng.choice(TOKENS))
        await oms.module.engine.accept(accepted(req))
        await oms.module.engine.settle(5.0)  # the paper broker's acknowledgement is booked after the order path
        requests.append(req)
    return requests


def variant(rng: random.Random, ev: BrokerOrderEvent) -> BrokerOrderEvent:
    """The event as delivered: sometimes without its price (Kotak's early rows) or its terms, sometimes only by
    client id."""
    roll = rng.random()
    if roll < 0.1:
        return dataclasses.replace(ev, average_price_paise=0, raw=dict(ev.raw))
    if roll < 0.15:
        return dataclasses.replace(ev, exchange_order_id="", raw=dict(ev.raw))
    if roll < 0.2 and ev.status == t.ORDER_STATUS_TRADED:  # a "complete" row without its fills (old feed)
        return BrokerOrderEvent(ev.exchange_order_id, ev.client_order_id, ev.status, 0, 0, quantity=ev.quantity,
                                price_paise=ev.price_paise)
    if roll < 0.25:
        return dataclasses.replace(ev, quantity=0, price_paise=0, raw=dict(ev.raw))
    return ev


async def deliver(oms, world: World, ev: BrokerOrderEvent) -> None:
    world.note("event", ev)
    try:
        await oms.module.engine.on_event(ev)
    except ConnectionResetError:  # the module logs it and goes on with the next event
        world.note("  (ledger write failed)")


async def no_check(request: t.OrderRequest, filled: int) -> None:
    """Risk's word on a change: yes."""


def user_change(rng: random.Random) -> tuple[int, int, int]:
    """A new total quantity and/or price (0 keeps one); sometimes none, or not above the filled: InvalidInput."""
    return rng.choice([0, rng.randint(1, 40)]), rng.choice([0, *PRICES]), 0


async def fuzz(oms, world: World, rng: random.Random, steps: int) -> None:
    engine = oms.module.engine
    asked: list[asyncio.Task] = []  # the user's cancels and changes
    truths = list(world.truths.values())
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.35:
            world.step(rng.choice(truths))
        elif roll < 0.75 and world.in_flight:
            i = min(rng.randrange(len(world.in_flight)) for _ in range(2))  # mostly oldest first, not always
            ev = world.in_flight[i] if rng.random() < 0.15 else world.in_flight.pop(i)  # or repeated later
            await deliver(oms, world, variant(rng, ev))
        elif roll < 0.85:
            truth = rng.choice(truths)
            if truth.history:
                await deliver(oms, world, variant(rng, rng.choice(truth.history)))  # a stale row
        elif roll < 0.88:
            await deliver(oms, world, BrokerOrderEvent(f"X-{rng.randrange(99)}", f"other-{rng.randrange(99)}",
                                                   rng.choice(list(LIVE | TERMINAL)), rng.randint(0, 5), 100_00))
        elif roll < 0.93:
            world.note("user cancels")
            asked.append(asyncio.create_task(engine.cancel(rng.choice(truths).client_order_id)))
            await asyncio.sleep(0)
        else:
            client_order_id, change = rng.choice(truths).client_order_id, user_change(rng)
            world.note(f"user modifies {client_order_id} to {change}")
            asked.append(asyncio.create_task(engine.modify(client_order_id, change, no_check)))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
    for ev in rng.sample(world.in_flight, len(world.in_flight)):
        await deliver(oms, world, ev)
    for task in asked:
        try:
            await task
        except (NeoPulseError, ConnectionResetError):  # refused, invalid, timed out, already final, ledger blip
            pass
    await reconcile(oms, world, truths)


async def reconcile(oms, world: World, truths: list[Truth]) -> None:
    """The reconciliation poll: every change still pending answered by the exchange, then the broker's latest row of
    each order, priced. It comes later than STALE_TERMS_S after the OMS's last change in real life (this fuzz runs in
    well under it), so no row of it is taken for one read before that change: the replaced terms are forgotten."""
    for truth in truths:
        if truth.status == t.ORDER_STATUS_MODIFY_PENDING:
            truth.change_answered()
    oms.module.engine._replaced_terms.clear()
    oms.ledger.rng = None
    for truth in truths:
        await deliver(oms, world, truth.snapshot())
    await oms.bus.drain()
