"""The OMS order book: orders by id, per-order locks, the sequencer; each transition checked, written to the
ledger, then applied to the book and positions and published on ORDER_UPDATES.

The base of the engine's parts (engine.py); talks to a Ledger and the bus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from prometheus_client import Counter

from services.oms.broker import Broker, BrokerAck, BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import Ledger
from services.oms.states import DAY_BOUND, TERMINAL, IllegalTransition, ReasonCode, can_transition, name
from shared.bus import Bus, Sequencer, Topic
from shared.clock import Clock, ist_day_number
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import RetryableError
from shared.ids import IdMint
from shared.positions import PositionBook

log = logging.getLogger(__name__)
T = TypeVar("T")

UPDATES = Counter("neopulse_oms_order_updates", "Order transitions recorded and published", ["status"])
LEDGER_RETRY_S = (0.5, 30.0)  # first and longest wait before applying again what the ledger did not take
NOT_YET_PLACED = frozenset({t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED})


@functools.cache
def _updates_counter(status: int) -> Any:
    return UPDATES.labels(name(status))  # labels() costs more than the rest of a publish


def given_up(u: t.OrderUpdate) -> bool:
    """REJECTED by the OMS without the broker's answer (here and in reconcile.py): the broker may still hold
    it, and it is adopted if it turns up."""
    return u.status == t.ORDER_STATUS_REJECTED and u.reason_code == ReasonCode.OUTCOME_UNKNOWN


def ended_with_its_day(u: t.OrderUpdate, today: int) -> bool:
    """Bound to its day (DAY, IOC) and last updated (given up) on an IST day before `today`: whatever the broker did
    with it, it ended at that day's close, and no later day's broker book lists it."""
    return u.request.validity in DAY_BOUND and ist_day_number(u.ts_ns) < today


class BookMoved(RetryableError):
    """An order's earlier write, whose outcome was unknown, turned out recorded: the book has moved on to it, and
    the transition the caller worked out from the book before is stale. Applying the same news again is right."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Unbooked:
    """A broker's acknowledgement of an order, taken and not yet booked; `settled` is set once it is (or given
    up at a stop). The order's broker events wait for it; a cancel books it first (it needs the exchange id)."""

    ack: BrokerAck
    settled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class OrderBook:
    """The book and its state (every part's, kept here in one place). Per-order locks keep placement, cancel and
    events from interleaving; transition() is the one way an order changes."""

    def __init__(self, bus: Bus, settings: OmsSettings, broker: Broker, ledger: Ledger, clock: Clock) -> None:
        self.bus = bus
        self.settings = settings
        self.broker = broker
        self.ledger = ledger
        self.clock = clock
        self.positions = PositionBook()
        self._positions_day = ist_day_number(clock.now_ns())
        self.orders: dict[str, t.OrderUpdate] = {}  # internal_id -> latest update
        self._ids: dict[str, str] = {}  # client_order_id and exchange_order_id -> internal_id
        self._locks: dict[str, asyncio.Lock] = {}
        self._charges: dict[str, int] = {}  # cumulative broker charges seen per order
        # What this run booked of each order's fills (quantity x price, paise): a fill priced from the broker's
        # averages is what they add to it. Not there: filled x average, as rebuild_positions books it after a restart.
        self._fill_value: dict[str, int] = {}
        # A broker that reports no charges per fill (Kotak: they come on the contract note): estimated with the
        # [oms] rates, so that P&L and the daily loss limit count them. Brokerage so far per order (flat caps).
        self._estimate = None if broker.reports_charges else ChargeModel.from_settings(settings)
        self._brokerage: dict[str, int] = {}
        self.sequencer = Sequencer()
        self._mint = IdMint()
        # Sequence, ledger write and publish of every update happen under this one lock, so consumers
        # (which drop a sequence <= the last they saw) receive updates in sequence order.
        self._publishing = asyncio.Lock()
        # PENDING_NEW updates written ahead and in the book (remember), applied and published after their burst's
        # placements (_publish_written): under _publishing, before anything else is published.
        self._written: deque[t.OrderUpdate] = deque()
        self.changed = asyncio.Condition()
        self.illegal_transitions = 0
        self.unpriced_fills = 0
        self.overfills = 0
        self._placing: set[asyncio.Task[None]] = set()
        self.applied_sequence = 0  # the last update applied to the book and positions (and then published)
        # Orders whose last cancel the broker does not hold (no answer, or refused and not undone) while the book
        # may show CANCEL_PENDING -> the status before it: cancelling again sends it, not "asked already".
        self._cancel_unanswered: dict[str, int] = {}
        # Orders whose cancel went to the broker without a recorded CANCEL_PENDING -> why: "asked already" to the
        # next cancel, and said in the audit of the order's next transition recorded.
        self._cancel_sent: dict[str, str] = {}
        # Orders whose cancel the broker took and has not finished -> until when (time.monotonic) it counts as under
        # way: a fill moves such an order from CANCEL_PENDING to PARTIALLY_FILLED, and a cancel asked meanwhile is
        # "asked already", not a second one (Kotak refuses it). Past that, a cancel the exchange may have dropped is
        # sent again. Ended by the order's end, or by a live state other than a fill's (the cancel did not hold).
        self._cancel_working: dict[str, float] = {}
        # Orders NeoPulse sent a cancel for in this run, until they end: a CANCELLED that follows is that cancel's,
        # whatever came between (its answer lost, a second cancel refused as the order was cancelled already), never
        # one made outside NeoPulse (CANCELLED_AT_BROKER).
        self._cancels_sent_run: set[str] = set()
        # Broker rows held back while the order's cancel was under way (BrokerNews.apply_event_locked), applied when
        # that wait is over unless newer news of the order came first: KotakBroker passes a repeated row on once,
        # so a row held back and then dropped would leave the order CANCEL_PENDING after a refused cancel.
        self._held_rows: dict[str, BrokerOrderEvent] = {}
        self.held_rows_changed = asyncio.Event()
        self._unrecorded: set[str] = set()  # orders whose broker event or acknowledgement is being applied again
        self._unbooked: dict[str, _Unbooked] = {}  # acknowledgements taken from the broker, not yet booked
        # Orders changed lately (ModifyOrder) -> the terms the change replaced and until when (time.monotonic) a
        # broker row showing them is taken as read before the change (broker_news.STALE_TERMS_S).
        self._replaced_terms: dict[str, tuple[tuple[int, int, int], float]] = {}
        # Orders changed by us in this run -> every terms a change of ours moved them from or to: a broker row showing
        # one of them is a change of ours that did not hold, or a row read before it, never a change made elsewhere.
        self._sent_terms: dict[str, set[tuple[int, int, int]]] = {}
        # Orders whose last write raised and could not be read back: it may have committed. Settled (read back)
        # before anything more is written for the order, never written again under a new sequence. With each, what
        # to call if it turns out recorded (transition's `recorded`: a fill's charges counted as booked).
        self._unknown_writes: dict[str, tuple[t.OrderUpdate, Callable[[], None] | None]] = {}
        self.ledger_retry_s = LEDGER_RETRY_S
        # Set when another OMS took the order ledger (services/oms/lease.py): decisions are then recorded as not sent.
        self.ledger_taken = ""
        # Told (exchange order id, cumulative filled) each time a fill enters the positions: the paper VirtualBroker
        # counts its fills as the account's until then (VirtualBroker.fill_booked).
        self.on_fill_booked: Callable[[str, int], None] | None = None

    async def start_sequence(self) -> None:
        recorded = await self.ledger.max_sequence()
        self.sequencer = Sequencer(max(recorded, Sequencer().value))
        self.applied_sequence = recorded  # rebuild_positions() then applies every fill recorded up to it

    # -- the book -------------------------------------------------------------------------------
    def remember(self, update: t.OrderUpdate) -> None:
        self.orders[update.internal_id] = update
        self._ids[update.client_order_id] = update.internal_id
        if update.exchange_order_id:
            self._ids[update.exchange_order_id] = update.internal_id

    def restore_changed_terms(self, terms: dict[str, set[tuple[int, int, int]]]) -> None:
        """After a restart: the terms changes of ours moved each order from or to (Ledger.changed_terms)."""
        for iid, seen in terms.items():
            self._sent_terms.setdefault(iid, set()).update(seen)

    def roll_day(self) -> PositionBook:
        """The position book, started on a new day when the IST date has changed (PositionBook.start_day): P&L
        and charges are today's, quantities held overnight carried at their last price. Called before every tick
        batch marks it and every fill lands in it, and before it is read, so yesterday's close is the base."""
        day = ist_day_number(self.clock.now_ns())
        if day > self._positions_day:
            self._positions_day = day
            self.positions.start_day()
        return self.positions

    def lookup(self, order_id: str) -> t.OrderUpdate | None:
        """By internal, client or exchange id, from this run's book."""
        iid = order_id if order_id in self.orders else self._ids.get(order_id)
        return self.orders.get(iid) if iid else None

    def forget_ended(self, before_ns: int) -> int:
        """Drop from memory the orders that ended before `before_ns` (an earlier IST day): a process running for weeks
        holds the orders it works on, not every order it ever saw. Looked up by id (GetOrder, a cancel, a decision
        replayed), such an order is read from the ledger, which keeps them all. Not one still being settled: given up
        (the broker may still show it) unless it ended with its day, a write or broker news not recorded yet, a cancel
        unanswered, its lock held. Returns how many."""
        settling = (self._unknown_writes.keys() | self._unbooked.keys() | self._unrecorded
                    | self._cancel_sent.keys() | self._cancel_unanswered.keys())
        ended = [iid for iid, u in self.orders.items()
                 if u.status in TERMINAL and u.ts_ns < before_ns and iid not in settling
                 and (not given_up(u) or ended_with_its_day(u, ist_day_number(before_ns)))
                 and not (iid in self._locks and self._locks[iid].locked())]
        for iid in ended:
            u = self.orders.pop(iid)
            for key in (u.client_order_id, u.exchange_order_id):
                if self._ids.get(key) == iid:
                    del self._ids[key]
            for per_order in (self._locks, self._charges, self._brokerage, self._fill_value, self._replaced_terms,
                              self._sent_terms, self._cancel_working):
                per_order.pop(iid, None)
        return len(ended)

    def cancel_under_way(self, internal_id: str) -> bool:
        """The broker took a cancel of the order lately and has not finished it (see _cancel_working)."""
        until = self._cancel_working.get(internal_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._cancel_working[internal_id]
        return False

    def lock(self, internal_id: str) -> asyncio.Lock:
        return self._locks.setdefault(internal_id, asyncio.Lock())

    def busy(self, internal_id: str) -> bool:
        """Whether a broker event for the order would wait: its lock is held, or its acknowledgement not booked."""
        return self.lock(internal_id).locked() or internal_id in self._unbooked

    def open_orders(self) -> list[t.OrderUpdate]:
        return [u for u in self.orders.values() if u.status not in TERMINAL]

    def given_up_tags(self) -> set[str]:
        """client_order_ids of orders REJECTED without the broker's answer (they may still appear there), bar those
        that ended with their day (forget_ended drops them at the day's roll)."""
        today = ist_day_number(self.clock.now_ns())
        return {u.client_order_id for u in self.orders.values() if given_up(u) and not ended_with_its_day(u, today)}

    async def wait_placed(self, client_order_id: str, within_s: float) -> t.OrderUpdate | None:
        """The order's latest update once it is past SUBMITTED (or whatever it is at the deadline)."""
        def placed() -> bool:
            u = self.lookup(client_order_id)
            return u is not None and u.status not in NOT_YET_PLACED

        try:
            async with self.changed, asyncio.timeout(within_s):
                await self.changed.wait_for(placed)
        except TimeoutError:
            pass
        return self.lookup(client_order_id)

    @staticmethod
    async def decided_again(decide: Callable[[], Awaitable[T]]) -> T:
        """`decide()`, decided again from the book while it raises BookMoved (a write whose outcome was unknown turned
        out recorded): a request is worked out from the order as recorded, never sent twice."""
        while True:
            try:
                return await decide()
            except BookMoved:
                continue

    # -- transitions ----------------------------------------------------------------------------
    async def transition(self, internal_id: str, status: int, *, audit: dict[str, Any], reason: str | None = None,
                         reason_code: str = "", exchange_order_id: str = "", filled: tuple[int, int] | None = None,
                         fill: tuple[int, int, int] = (0, 0, 0), terms: tuple[int, int, int] | None = None,
                         allow: Callable[[int, int], bool] = can_transition,
                         recorded: Callable[[], None] | None = None, change_sent: bool = False,
                         by_hand: bool = False) -> t.OrderUpdate:
        """Check (`allow`: the state machine, or one named exception to it), write to the ledger, then apply
        and publish one transition. `reason` stays until replaced; `reason_code` is this transition's only.
        `terms` (quantity, price, trigger) replaces the order's terms in its request (a change, or the broker's report).
        `change_sent` counts a change of ours (changes_sent); `by_hand` marks the order changed by hand (it stays so).
        `recorded` is called once the ledger has it: now, or when a write of unknown outcome is found committed.
        Raises IllegalTransition; BookMoved when the order's last write, whose outcome was unknown, turns out
        recorded (the caller worked this one out from the book before it)."""
        async with self._publishing:
            await self._publish_written()
            await self._settle_unknown_write(internal_id)
            cur = self.orders[internal_id]
            if not allow(cur.status, status):
                raise IllegalTransition(cur.status, status)
            u = t.OrderUpdate()
            u.CopyFrom(cur)
            u.previous_status, u.status = cur.status, cast("t.OrderStatus", status)
            if reason is not None:
                u.reason = reason
            u.reason_code = reason_code
            if exchange_order_id:
                u.exchange_order_id = exchange_order_id
            if filled is not None:
                u.filled_quantity, u.average_price_paise = filled
            u.last_fill_quantity, u.last_fill_price_paise, u.last_fill_charges_paise = fill
            if terms is not None:
                u.request.quantity, u.request.price_paise, u.request.trigger_price_paise = terms
            if change_sent:
                u.changes_sent += 1
            if by_hand:
                u.changed_by_hand = True
            u.ts_ns = self.clock.now_ns()
            u.sequence = self.sequencer.next()
            unrecorded_cancel = self._cancel_sent.get(internal_id) if self._cancel_sent else None
            if unrecorded_cancel:
                audit = {**audit, "cancel_sent_unrecorded": unrecorded_cancel}
            try:
                await self.ledger.record(u, audit)
            except asyncio.CancelledError:  # the caller stopped waiting mid-write: committed or not, unknown
                self._unknown_writes[internal_id] = (u, recorded)
                raise
            except Exception:
                if not await self._recorded_after_all(u, recorded):
                    raise  # the book stays as it was: the caller may apply the same news again
            if recorded is not None:
                recorded()
            if unrecorded_cancel:
                self._cancel_sent.pop(internal_id, None)
            await self._applied(u)
        return u

    async def _recorded_after_all(self, u: t.OrderUpdate, recorded: Callable[[], None] | None) -> bool:
        """Whether a write that raised did commit, with only its reply lost (a dropped connection): the order's
        row then carries its sequence. Writing it again under a new sequence would record its fill twice, so
        when the row cannot be read either, the write is kept as unknown and settled before the order's next."""
        try:
            row = await self.ledger.get(u.internal_id)
        except Exception:
            self._unknown_writes[u.internal_id] = (u, recorded)
            return False
        if row is None or row.sequence != u.sequence:
            return False
        log.warning("ledger write failed after it committed; the update goes on", extra={
            "order_id": u.internal_id, "status": name(u.status)})
        return True

    async def _settle_unknown_write(self, internal_id: str) -> None:
        """Before anything more is written for an order: whether its last write, which raised and could not be
        read back, committed after all. Not known yet: raises (nothing is written). Not committed: the book,
        which never had it, is right. Committed: the book moves on to it, and BookMoved tells the caller to work
        its transition out again from there. The caller holds self._publishing."""
        unknown = self._unknown_writes.get(internal_id)
        if unknown is None:
            return
        u, recorded = unknown
        try:
            row = await self.ledger.get(internal_id)
        except Exception as exc:
            raise RetryableError(f"order {u.client_order_id}: whether the ledger took its {name(u.status)} is "
                                 f"still unknown ({type(exc).__name__}: {exc}); nothing more is recorded for it "
                                 "until the ledger answers") from exc
        del self._unknown_writes[internal_id]
        if row is None or row.sequence != u.sequence:
            return
        log.warning("ledger write found committed after its reply and read-back were lost; the update goes on",
                    extra={"order_id": internal_id, "status": name(u.status), "recorded_sequence": u.sequence})
        if recorded is not None:
            recorded()  # its fill's charges are booked: the news applied again must not count them for the next fill
        u.sequence = self.sequencer.next()  # published after others' updates: consumers keep only newer sequences
        await self._applied(u)
        raise BookMoved(f"order {u.client_order_id}: its {name(u.status)} turned out recorded; work the next "
                        "transition out from it")

    async def _applied(self, u: t.OrderUpdate) -> None:
        """A recorded transition into the book and out to consumers. The caller holds self._publishing."""
        if u.status != t.ORDER_STATUS_CANCEL_PENDING:
            self._cancel_unanswered.pop(u.internal_id, None)
            if u.status != t.ORDER_STATUS_PARTIALLY_FILLED:
                self._cancel_working.pop(u.internal_id, None)
        self._held_rows.pop(u.internal_id, None)  # newer news of the order than the row held back
        if u.status in TERMINAL:
            self._cancels_sent_run.discard(u.internal_id)
        await self._publish(u)

    async def _publish_written(self) -> None:
        """Apply and publish the PENDING_NEW updates written ahead and not yet published, in sequence order.
        The caller holds self._publishing."""
        while self._written:
            await self._publish(self._written.popleft())

    async def _publish(self, u: t.OrderUpdate) -> None:
        """The caller holds self._publishing and has recorded u."""
        self.remember(u)
        self.roll_day().apply_update(u)
        if u.last_fill_quantity > 0 and self.on_fill_booked is not None:
            self.on_fill_booked(u.exchange_order_id, u.filled_quantity)
        self.applied_sequence = max(self.applied_sequence, u.sequence)
        _updates_counter(u.status).inc()
        await self.bus.publish(Topic.ORDER_UPDATES, u)
        async with self.changed:
            self.changed.notify_all()

    async def _submitted(self, internal_id: str) -> None:
        """Record that the order went to the broker (the request as sent is its audit)."""
        request = self.orders[internal_id].request
        await self.transition(internal_id, t.ORDER_STATUS_SUBMITTED, audit={"request": request})

    async def notify(self, severity: ops_pb2.Severity, title: str, text: str, **fields: str) -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=severity, source="oms", title=title, text=text,
            ts_ns=self.clock.now_ns(), fields=fields))
