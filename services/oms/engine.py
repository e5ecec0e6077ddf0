"""The OMS order book: write-ahead to the ledger, place through the broker, apply broker events, publish updates.

Talks to a Broker, a Ledger and the bus (ORDER_UPDATES); every transition passes the state machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

from prometheus_client import Counter, Gauge

from services.oms.broker import Broker, BrokerAck, BrokerOrderEvent, order_age_s
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import Ledger
from services.oms.states import (
    TERMINAL,
    IllegalTransition,
    ReasonCode,
    allows_adoption,
    allows_late_fill,
    allows_new_exchange_id,
    can_transition,
    name,
)
from shared.bus import Bus, Sequencer, Topic
from shared.clock import Clock, ist_day_number
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NeoPulseError, NotFound, NotSent, RetryableError
from shared.ids import IdMint
from shared.positions import PositionBook

log = logging.getLogger(__name__)

UPDATES = Counter("neopulse_oms_order_updates", "Order transitions recorded and published", ["status"])
ILLEGAL = Counter("neopulse_oms_illegal_transitions", "Broker events the state machine refused")
UNKNOWN_EVENTS = Counter("neopulse_oms_unknown_broker_events", "Broker events for orders not in the OMS book")
WRITE_AHEAD_FAILURES = Counter("neopulse_oms_write_ahead_failures",
                               "Accepted orders not sent because the ledger could not take them")
WRITE_AHEAD_READBACK_S = (0.05, 0.25)  # waits before reading back an order whose insert failed (lost reply?)
UNPRICED_FILLS = Counter("neopulse_oms_unpriced_fills", "Broker events with new fills but no price (left for later)")
OVERFILLS = Counter("neopulse_oms_overfills", "Broker rows with more filled than the order's quantity (not booked)")
LATE_FILLS = Counter("neopulse_oms_late_fills", "Broker events with more fills for an order already terminal")
UNKNOWN_OUTCOMES = Counter("neopulse_oms_unknown_placements", "Placements whose outcome was unknown", ["result"])
PLACEMENT_ERRORS = Counter("neopulse_oms_placement_errors",
                           "Placements that failed inside the OMS (e.g. the ledger); the order is left to reconcile")
UNRECORDED_ATTEMPTS = Counter("neopulse_oms_unrecorded_attempts",
                              "Attempts to apply a broker event or acknowledgement that failed (e.g. the ledger)")
UNRECORDED_ORDERS = Gauge("neopulse_oms_unrecorded_orders",
                          "Orders with a broker event or acknowledgement not yet recorded, being applied again")
LEDGER_RETRY_S = (0.5, 30.0)  # first and longest wait before applying again what the ledger did not take

# Broker states that only say "the broker has it".
_ACCEPTED = frozenset({t.ORDER_STATUS_UNSPECIFIED, t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED})
# Live states a fill turns into PARTIALLY_FILLED.
_RESTING = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_MODIFY_PENDING,
                      t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED})
STOPPED_NOT_SENT = "not sent: NeoPulse was stopping before it could be placed; place it again if still wanted"
NOT_YET_PLACED = frozenset({t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED})


@functools.cache
def _updates_counter(status: int) -> Any:
    return UPDATES.labels(name(status))  # labels() costs more than the rest of a publish


def _filled(cur: t.OrderUpdate, ev: BrokerOrderEvent, fill: tuple[int, int, int]) -> tuple[int, int]:
    """(filled, average price) after `fill`: the broker's average, or, in a row without one (priced by the fill
    itself, raw last_fill_*), the average of the fills recorded and this one. Not the fill's price: later fill
    prices are derived from the averages."""
    if ev.average_price_paise:
        return ev.filled_quantity, ev.average_price_paise
    value = cur.filled_quantity * cur.average_price_paise + fill[0] * fill[1]
    return ev.filled_quantity, (value + ev.filled_quantity // 2) // ev.filled_quantity


def given_up(u: t.OrderUpdate) -> bool:
    """REJECTED by the OMS without the broker's answer (here and in reconcile.py): the broker may still hold
    it, and it is adopted if it turns up."""
    return u.status == t.ORDER_STATUS_REJECTED and u.reason_code == ReasonCode.OUTCOME_UNKNOWN


_ONE_BY_ONE = object()  # _insert_burst: this order is still to be written on its own


class _NotWritten(Exception):
    """The ledger did not take an order (write-ahead failed); `error` is why."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class BookMoved(RetryableError):
    """An order's earlier write, whose outcome was unknown, turned out recorded: the book has moved on to it, and
    the transition the caller worked out from the book before is stale. Applying the same news again is right."""


class OrderStateError(NeoPulseError):
    """The order is in a state that does not allow the request (e.g. cancelling a TRADED order)."""

    status = BrokerRejected.status  # FAILED_PRECONDITION, without importing grpc here


def event_audit(ev: BrokerOrderEvent) -> dict[str, Any]:
    return {"exchange_order_id": ev.exchange_order_id, "status": name(ev.status), "filled_quantity":
            ev.filled_quantity, "average_price_paise": ev.average_price_paise, "reason": ev.reason,
            "charges_paise": ev.charges_paise, "raw": ev.raw}


@dataclasses.dataclass(frozen=True, slots=True)
class _Unbooked:
    """A broker's acknowledgement of an order, taken and not yet booked; `settled` is set once it is (or given
    up at a stop). The order's broker events wait for it; a cancel books it first (it needs the exchange id)."""

    ack: BrokerAck
    settled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class OrderEngine:
    """One order book for the process. Per-order locks keep placement, cancel and events from interleaving."""

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
        self._unrecorded: set[str] = set()  # orders whose broker event or acknowledgement is being applied again
        self._unbooked: dict[str, _Unbooked] = {}  # acknowledgements taken from the broker, not yet booked
        # Orders whose last write raised and could not be read back: it may have committed. Settled (read back)
        # before anything more is written for the order, never written again under a new sequence.
        self._unknown_writes: dict[str, t.OrderUpdate] = {}
        self.ledger_retry_s = LEDGER_RETRY_S

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

    def lock(self, internal_id: str) -> asyncio.Lock:
        return self._locks.setdefault(internal_id, asyncio.Lock())

    def busy(self, internal_id: str) -> bool:
        """Whether a broker event for the order would wait: its lock is held, or its acknowledgement not booked."""
        return self.lock(internal_id).locked() or internal_id in self._unbooked

    def open_orders(self) -> list[t.OrderUpdate]:
        return [u for u in self.orders.values() if u.status not in TERMINAL]

    def given_up_tags(self) -> set[str]:
        """client_order_ids of orders REJECTED without the broker's answer (they may still appear there)."""
        return {u.client_order_id for u in self.orders.values() if given_up(u)}

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

    # -- transitions ------------------------------------------------------------------------------
    async def transition(self, internal_id: str, status: int, *, audit: dict[str, Any], reason: str | None = None,
                         reason_code: str = "", exchange_order_id: str = "", filled: tuple[int, int] | None = None,
                         fill: tuple[int, int, int] = (0, 0, 0),
                         allow: Callable[[int, int], bool] = can_transition) -> t.OrderUpdate:
        """Check (`allow`: the state machine, or one named exception to it), write to the ledger, then apply
        and publish one transition. `reason` stays until replaced; `reason_code` is this transition's only.
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
            u.ts_ns = self.clock.now_ns()
            u.sequence = self.sequencer.next()
            unrecorded_cancel = self._cancel_sent.get(internal_id) if self._cancel_sent else None
            if unrecorded_cancel:
                audit = {**audit, "cancel_sent_unrecorded": unrecorded_cancel}
            try:
                await self.ledger.record(u, audit)
            except Exception:
                if not await self._recorded_after_all(u):
                    raise  # the book stays as it was: the caller may apply the same news again
            if unrecorded_cancel:
                self._cancel_sent.pop(internal_id, None)
            await self._applied(u)
        return u

    async def _recorded_after_all(self, u: t.OrderUpdate) -> bool:
        """Whether a write that raised did commit, with only its reply lost (a dropped connection): the order's
        row then carries its sequence. Writing it again under a new sequence would record its fill twice, so
        when the row cannot be read either, the write is kept as unknown and settled before the order's next."""
        try:
            row = await self.ledger.get(u.internal_id)
        except Exception:
            self._unknown_writes[u.internal_id] = u
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
        u = self._unknown_writes.get(internal_id)
        if u is None:
            return
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
        u.sequence = self.sequencer.next()  # published after others' updates: consumers keep only newer sequences
        await self._applied(u)
        raise BookMoved(f"order {u.client_order_id}: its {name(u.status)} turned out recorded; work the next "
                        "transition out from it")

    async def _applied(self, u: t.OrderUpdate) -> None:
        """A recorded transition into the book and out to consumers. The caller holds self._publishing."""
        if u.status != t.ORDER_STATUS_CANCEL_PENDING:
            self._cancel_unanswered.pop(u.internal_id, None)
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
        self.applied_sequence = max(self.applied_sequence, u.sequence)
        _updates_counter(u.status).inc()
        await self.bus.publish(Topic.ORDER_UPDATES, u)
        async with self.changed:
            self.changed.notify_all()

    # -- accepted decisions -> the broker ---------------------------------------------------------
    async def accept(self, decision: t.RiskDecision) -> None:
        """Write-ahead and place an accepted decision; a client_order_id seen before is ignored."""
        await self.accept_many([decision])

    async def accept_many(self, decisions: Sequence[t.RiskDecision]) -> None:
        """Write-ahead and place accepted decisions in their order; a client_order_id seen before is ignored.
        A burst is written ahead together: one ledger transaction, so one flush to disk for all its orders. Its
        PENDING_NEW updates are fanned out once its orders are placed, and an in-process broker's
        acknowledgements booked after that, once the order path is idle: neither stands before the next order."""
        fresh: dict[str, t.RiskDecision] = {}
        for decision in decisions:
            if not decision.accepted:
                continue
            cid = decision.order.client_order_id
            if not cid:
                log.error("accepted decision without client_order_id; dropped", extra={"signal_id": decision.signal_id})
            elif cid not in fresh and self.lookup(cid) is None:
                fresh[cid] = decision
        max_age = self.settings.max_decision_age_s
        too_old = [d for d in fresh.values() if max_age and order_age_s(d.order) > max_age]
        if too_old:
            for d in too_old:
                del fresh[d.order.client_order_id]
            log.warning("accepted decisions too old to place; recorded as not sent", extra={
                "count": len(too_old), "oldest_s": round(max(order_age_s(d.order) for d in too_old), 1)})
            await self._not_sent(too_old, self._too_old_reason, "too old")
        if not fresh:
            return
        acks: list[str] = []
        try:
            for u in await self._written_ahead(list(fresh.values())):
                if self.broker.in_process:
                    if await self._place_in_process(u.internal_id):
                        acks.append(u.internal_id)
                else:
                    self._start_placing(u.internal_id)
        finally:
            async with self._publishing:
                await self._publish_written()
            if acks:
                self._in_flight(self._acks_later(acks), "oms:acks")

    def _too_old_reason(self, decision: t.RiskDecision) -> str:
        return (f"not sent: its signal came from a tick {order_age_s(decision.order):.1f} s old, more than [oms] "
                f"max_decision_age_s {self.settings.max_decision_age_s:g} s (the OMS was down or held up); the "
                "market has moved since")

    async def _written_ahead(self, decisions: list[t.RiskDecision]) -> list[t.OrderUpdate]:
        """The decisions' orders written to the ledger as PENDING_NEW and put in the book, in order; those not
        written (published REJECTED NOT_SENT) and duplicates of orders in the ledger are left out. Their PENDING_NEW
        updates are applied and published by the next _publish_written: after the burst's placements (accept_many),
        and before any other update (transition), so consumers still see every order's updates in sequence order."""
        now = self.clock.now_ns()
        updates = [t.OrderUpdate(internal_id=self._mint.uuid(), client_order_id=d.order.client_order_id,
                                 status=t.ORDER_STATUS_PENDING_NEW, request=d.order, ts_ns=now) for d in decisions]
        audits: list[dict[str, Any]] = [{"decision": d} for d in decisions]
        written: list[t.OrderUpdate] = []
        async with self._publishing:
            for u in updates:
                u.sequence = self.sequencer.next()
            existing = await self._insert_burst(updates, audits)
            for u, audit, found in zip(updates, audits, existing, strict=True):
                if found is _ONE_BY_ONE:
                    try:
                        found = await self._write_ahead(u, audit)
                    except _NotWritten as exc:
                        await self._not_written(u, exc.error)
                        continue
                if found is None:
                    self.remember(u)  # placing reads it from the book; applied and published after the burst
                    self._written.append(u)
                    written.append(u)
                    continue
                assert isinstance(found, t.OrderUpdate)
                log.info("duplicate order ignored", extra={"order_id": found.internal_id,
                                                           "client_order_id": u.client_order_id})
                self.remember(found)
        return written

    async def _insert_burst(self, updates: list[t.OrderUpdate], audits: list[dict[str, Any]]) -> list[object]:
        """ledger.insert_many for a burst; when it fails, _ONE_BY_ONE for each (the transaction may have committed
        with only its reply lost, or one order in it may be at fault): _write_ahead then reads each back."""
        if len(updates) == 1:
            return [_ONE_BY_ONE]
        try:
            return list(await self.ledger.insert_many(list(zip(updates, audits, strict=True))))
        except Exception as exc:
            log.warning("ledger refused a burst of orders; writing them one by one",
                        extra={"orders": len(updates), "error": f"{type(exc).__name__}: {exc}"})
            return [_ONE_BY_ONE] * len(updates)

    async def _write_ahead(self, u: t.OrderUpdate, audit: dict[str, Any]) -> t.OrderUpdate | None:
        """ledger.insert_new; when it fails, the order is read back by its client id, since the insert may have
        committed with only its reply lost: ours there means written (None), another order is the existing one,
        none (or no answer) raises _NotWritten."""
        try:
            existing = await self.ledger.insert_new(u, audit)
            return None if existing is None or existing.internal_id == u.internal_id else existing
        except Exception as exc:
            error = exc
        for delay in WRITE_AHEAD_READBACK_S:
            await asyncio.sleep(delay)
            try:
                found = await self.ledger.get(u.client_order_id)
            except Exception:
                continue
            if found is None:
                break
            log.warning("ledger insert failed after it committed; the order goes on", extra={
                "order_id": found.internal_id, "client_order_id": u.client_order_id, "error": str(error)})
            return None if found.internal_id == u.internal_id else found
        raise _NotWritten(error)

    async def _not_written(self, u: t.OrderUpdate, error: Exception) -> None:
        """Write-ahead failed: the order is never sent. Its REJECTED update (not in the ledger, which is failing;
        a PENDING_NEW row that did commit is looked up at the broker at the next start) frees its slot in risk and tells
        its strategy. The caller holds self._publishing."""
        WRITE_AHEAD_FAILURES.inc()
        log.error("order not sent: it could not be written to the ledger first",
                  extra={"client_order_id": u.client_order_id, "error": f"{type(error).__name__}: {error}"})
        u.previous_status, u.status = u.status, t.ORDER_STATUS_REJECTED
        u.reason_code = ReasonCode.NOT_SENT
        u.reason = (f"not sent: the order could not be written to the ledger first ({type(error).__name__}: "
                    f"{error}); place it again once the database is back")
        await self._publish_written()
        await self._publish(u)

    def _start_placing(self, internal_id: str) -> None:
        """Place beside the next decisions: a burst of orders goes out together (the broker's rate limiter
        spaces the calls) instead of each waiting for the previous one's round trip to the broker.
        Written ahead as PENDING_NEW already, in decision order; each order's lock orders its own events."""
        self._in_flight(self._place_logged(internal_id), f"oms:place:{internal_id}")

    def _in_flight(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run placement work as a task that settle() and the bus's drain() wait for."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)
        self.bus.track(task)

    async def _place_logged(self, internal_id: str) -> None:
        try:
            await self.place(internal_id)
        except Exception:  # the ledger or the bus failed: the order stays as recorded, reconcile finds it
            PLACEMENT_ERRORS.inc()
            log.exception("placement failed; the order is left as recorded for reconciliation",
                          extra={"order_id": internal_id})

    async def _not_sent(self, decisions: list[t.RiskDecision], reason: Callable[[t.RiskDecision], str],
                        error: str) -> None:
        """Accepted decisions that will not be placed, in the ledger as orders REJECTED NOT_SENT (written ahead, then
        rejected): risk frees their slots, their strategies learn of it, and the ledger has every accepted order.
        Those the ledger holds already (a replay) are left as they are. Never raises: a REJECTED the ledger does not
        take leaves its order PENDING_NEW, never sent, for reconciliation (and the caller's other orders go on)."""
        by_client = {d.order.client_order_id: d for d in decisions}
        for u in await self._written_ahead(decisions) if decisions else []:
            try:
                await self.transition(u.internal_id, t.ORDER_STATUS_REJECTED,
                                      reason=reason(by_client[u.client_order_id]), reason_code=ReasonCode.NOT_SENT,
                                      audit={"response": {"error": error}})
            except Exception:
                PLACEMENT_ERRORS.inc()
                log.exception("order not sent, but its REJECTED was not recorded; left PENDING_NEW for reconciliation",
                              extra={"order_id": u.internal_id, "client_order_id": u.client_order_id})

    async def settle(self, within_s: float, unplaced: Sequence[t.RiskDecision] = ()) -> int:
        """Graceful stop: record the accepted decisions that will not be placed (`unplaced`) as REJECTED NOT_SENT,
        then wait up to `within_s` for placements in flight, including acknowledgements they hand off. Returns how
        many are still going."""
        fresh = {d.order.client_order_id: d for d in unplaced
                 if d.accepted and d.order.client_order_id and not self.lookup(d.order.client_order_id)}
        await self._not_sent(list(fresh.values()), lambda _: STOPPED_NOT_SENT, "stopping")
        deadline = asyncio.get_running_loop().time() + within_s
        while self._placing:  # a placement in process hands its acknowledgement to a new task
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(list(self._placing), timeout=left)
        return len(self._placing)

    async def place(self, internal_id: str) -> None:
        async with self.lock(internal_id):
            ack = await self._send(internal_id)
            if ack is None:
                return
            self._unbooked[internal_id] = _Unbooked(ack)
        await self._book(internal_id)

    async def _place_in_process(self, internal_id: str) -> bool:
        """Place at once (an in-process broker answers at once); True when its acknowledgement is left to book
        once the order path is idle (_acks_later): the next orders of a burst go out before this one's OPEN is
        recorded and fanned out. Its broker events wait for it meanwhile (busy)."""
        async with self.lock(internal_id):
            try:
                ack = await self._send(internal_id)
            except Exception:  # the ledger or the bus failed: the order stays as recorded, reconcile finds it
                PLACEMENT_ERRORS.inc()
                log.exception("placement failed; the order is left as recorded for reconciliation",
                              extra={"order_id": internal_id})
                return False
            if ack is None:
                return False
            self._unbooked[internal_id] = _Unbooked(ack)
            return True

    async def _acks_later(self, internal_ids: list[str]) -> None:
        """Book a burst's acknowledgements in order, one task for the burst; before each, the order path goes
        first (a burst's bookkeeping must not hold up the next signal's order). Cancelled (a stop), the rest are
        given up unbooked: their orders' events then go ahead (they carry the broker's state too)."""
        pending = deque(internal_ids)
        try:
            while pending:
                await self.bus.as_follow_up()
                await self._book(pending[0])
                pending.popleft()
        finally:
            for internal_id in pending:
                self._booked(internal_id)

    async def _book(self, internal_id: str) -> None:
        """Book an order's acknowledgement, applied again until the ledger takes it (the broker will not say it
        again). Each attempt takes the order's lock and the back-off between them does not hold it: a cancel of the
        order (the kill switch's too) need not wait for the ledger; it books the acknowledgement first."""
        try:
            await self.until_recorded(internal_id, functools.partial(self._book_locking, internal_id),
                                      "acknowledgement")
        finally:
            self._booked(internal_id)

    async def _book_locking(self, internal_id: str) -> None:
        async with self.lock(internal_id):
            await self._book_unbooked(internal_id)

    async def _book_unbooked(self, internal_id: str) -> None:
        """Book the order's acknowledgement if it is still unbooked. The caller holds the order's lock."""
        unbooked = self._unbooked.get(internal_id)
        if unbooked is not None:
            await self._on_ack(internal_id, unbooked.ack)
            self._booked(internal_id)

    def _booked(self, internal_id: str) -> None:
        """The order's acknowledgement is booked (or given up): its broker events go ahead."""
        unbooked = self._unbooked.pop(internal_id, None)
        if unbooked is not None:
            unbooked.settled.set()

    async def _send(self, internal_id: str) -> BrokerAck | None:
        """The broker call; the caller holds the order's lock. None: the outcome is settled (rejected, or resolved
        by looking the tag up); else the broker's acknowledgement, to apply (_on_ack).

        The order is in the ledger (PENDING_NEW, written ahead) before it leaves; SUBMITTED is recorded after the
        call, with its outcome, so that one ledger write, not two, stands between a decision and the broker. A
        restart looks a PENDING_NEW order up by its tag as it does a SUBMITTED one (reconcile.py)."""
        request = self.orders[internal_id].request
        try:
            return await self.broker.place_order(request)
        except NotSent as exc:  # certainly not at the broker: nothing to look up
            await self.transition(internal_id, t.ORDER_STATUS_REJECTED, reason=str(exc),
                                  reason_code=ReasonCode.NOT_SENT, audit={"response": {"error": str(exc)}})
        except BrokerRejected as exc:
            await self._submitted(internal_id)
            await self.transition(internal_id, t.ORDER_STATUS_REJECTED, reason=str(exc),
                                  reason_code=ReasonCode.BROKER_REJECTED, audit={"response": {"error": str(exc)}})
        except Exception as exc:  # a timeout or anything else: the broker may have it
            log.warning("placement outcome unknown; looking the tag up",
                        extra={"order_id": internal_id, "client_order_id": request.client_order_id, "error": str(exc)})
            await self._submitted(internal_id)
            await self._resolve_unknown(internal_id, exc)
        return None

    async def _submitted(self, internal_id: str) -> None:
        """Record that the order went to the broker (the request as sent is its audit)."""
        request = self.orders[internal_id].request
        await self.transition(internal_id, t.ORDER_STATUS_SUBMITTED, audit={"request": request})

    async def _on_ack(self, internal_id: str, ack: BrokerAck) -> None:
        status = self.orders[internal_id].status
        if status not in NOT_YET_PLACED:
            return  # applied again after a write found recorded (BookMoved): nothing left to book
        if status == t.ORDER_STATUS_PENDING_NEW:  # applied again: SUBMITTED may be in
            await self._submitted(internal_id)
        audit = {"response": {"exchange_order_id": ack.exchange_order_id, "status": name(ack.status),
                              "reason": ack.reason, "raw": ack.raw}}
        if ack.status == t.ORDER_STATUS_REJECTED:
            await self.transition(internal_id, t.ORDER_STATUS_REJECTED, reason=ack.reason or "rejected by the broker",
                                  reason_code=ReasonCode.BROKER_REJECTED, exchange_order_id=ack.exchange_order_id,
                                  audit=audit)
            return
        # Fills and later states arrive as broker events; the acknowledgement only says the broker has it.
        status = t.ORDER_STATUS_TRIGGER_PENDING if ack.status == t.ORDER_STATUS_TRIGGER_PENDING else t.ORDER_STATUS_OPEN
        await self.transition(internal_id, status, exchange_order_id=ack.exchange_order_id, audit=audit)

    async def _resolve_unknown(self, internal_id: str, error: Exception) -> None:
        """Find the order by its tag (with backoff) and adopt it; never place it a second time."""
        tag = self.orders[internal_id].client_order_id
        lookups, delay = self.settings.unknown_outcome_lookups, self.settings.lookup_backoff_s
        for attempt in range(lookups):
            try:
                ev = await self.broker.find_by_tag(tag)
            except Exception as exc:  # the lookup itself may time out; try again
                log.warning("order lookup by tag failed", extra={"client_order_id": tag, "error": str(exc)})
                ev = None
            if ev is not None:
                UNKNOWN_OUTCOMES.labels("adopted").inc()
                await self.apply_event_locked(internal_id, ev)
                return
            if attempt + 1 < lookups:
                await asyncio.sleep(delay)
                delay *= 2
        UNKNOWN_OUTCOMES.labels("rejected").inc()
        reason = (f"placement outcome unknown ({error}); tag {tag} not found at the broker after {lookups} lookups; "
                  "not re-sent: check the broker's order book before placing it again")
        await self.transition(internal_id, t.ORDER_STATUS_REJECTED, reason=reason,
                              reason_code=ReasonCode.OUTCOME_UNKNOWN,
                              audit={"response": {"error": str(error), "lookups": lookups}})

    # -- cancel -----------------------------------------------------------------------------------
    async def cancel(self, order_id: str) -> t.OrderUpdate:
        """CANCEL_PENDING, the cancel, then the broker's answer. The cancel goes to the broker even when the ledger
        refuses CANCEL_PENDING (or its outcome is unknown): a cancel only takes exposure away, the kill switch must
        work with the database down, and the broker's answer and events are recorded when the ledger takes them;
        the order stays as recorded until then. Raises NotFound, OrderStateError, BrokerRejected / NotSent (refused
        or not sent), RetryableError (no answer: cancelling again sends it again)."""
        cur = self.lookup(order_id) or await self.ledger.get(order_id)
        if cur is None:
            raise NotFound(f"no order {order_id!r}; list orders to find its internal or client id")
        if cur.internal_id not in self.orders:
            self.remember(cur)
        iid = cur.internal_id
        async with self.lock(iid):
            while True:
                try:
                    ack = await self._send_cancel(iid, order_id)
                    break
                except BookMoved:
                    continue  # a write whose outcome was unknown turned out recorded: decide again from it
            if ack is not None:
                await self._cancel_answered(iid, ack)
            return self.orders[iid]

    async def _send_cancel(self, iid: str, order_id: str) -> BrokerAck | None:
        """Decide from the book as it is and send the cancel: the broker's answer, or None when the cancel is at
        the broker already (its answer or its events will finish the order). The caller holds the order's lock."""
        unbooked = await self._acknowledged(iid)
        cur = self.orders[iid]
        if cur.status in TERMINAL:
            raise OrderStateError(f"order {order_id} is already {name(cur.status)}; there is nothing to cancel")
        if unbooked is not None and unbooked.status == t.ORDER_STATUS_REJECTED:
            raise OrderStateError(f"order {order_id} was rejected by the broker (not recorded yet); there is "
                                  "nothing to cancel")
        asked = cur.status == t.ORDER_STATUS_CANCEL_PENDING or iid in self._cancel_sent
        if asked and iid not in self._cancel_unanswered:
            return None
        exchange_order_id = unbooked.exchange_order_id if unbooked is not None else cur.exchange_order_id
        if not exchange_order_id or cur.status == t.ORDER_STATUS_MODIFY_PENDING:
            raise OrderStateError(f"order {order_id} is {name(cur.status)} and cannot be cancelled yet; "
                                  "retry in a moment")
        if cur.status == t.ORDER_STATUS_CANCEL_PENDING:  # the last cancel got no answer: sent again
            before = self._cancel_unanswered.pop(iid)
        else:
            before = cur.status
            unrecorded = ("cancel sent before the order's acknowledgement was recorded (the ledger refused it)"
                          if unbooked is not None else await self._cancel_pending(iid))
            self._cancel_unanswered.pop(iid, None)  # after the write: BookMoved may show CANCEL_PENDING, unanswered
            if unrecorded:
                self._cancel_sent[iid] = unrecorded  # in the audit of the order's next transition recorded
                log.critical("cancel sent to the broker without its CANCEL_PENDING recorded", extra={
                    "order_id": iid, "client_order_id": cur.client_order_id, "why": unrecorded})
        try:
            return await self.broker.cancel_order(exchange_order_id)
        except (BrokerRejected, NotSent) as exc:  # refused: filled or closed meanwhile, or not sent
            self._cancel_sent.pop(iid, None)
            await self._cancel_refused(iid, before, exc)
            raise
        except Exception as exc:  # a timeout: the broker may or may not have cancelled it
            self._cancel_sent.pop(iid, None)
            self._cancel_unanswered[iid] = before
            raise RetryableError(f"order {order_id}: the cancel got no answer ({exc}); the broker's events will say "
                                 "whether it went, and cancelling again sends it again") from exc

    async def _cancel_pending(self, internal_id: str) -> str:
        """Record the cancel before it goes; "" once recorded, else why not (the cancel goes all the same). A write
        whose outcome is unknown may turn out recorded when the order's next write settles it (BookMoved)."""
        try:
            await self.transition(internal_id, t.ORDER_STATUS_CANCEL_PENDING, audit={"cancel_request": {"by": "user"}})
        except (BookMoved, IllegalTransition):
            raise  # not the ledger refusing it: cancel() decides again, or the state machine says no
        except Exception as exc:
            if internal_id in self._unknown_writes:
                return ("cancel sent while it was unknown whether the ledger took the order's last write "
                        f"(CANCEL_PENDING or one before it: {type(exc).__name__})")
            return f"cancel sent while the ledger refused CANCEL_PENDING ({type(exc).__name__}: {exc})"
        return ""

    async def _cancel_refused(self, internal_id: str, before: int, exc: Exception) -> None:
        """A cancel the broker refused (filled or closed meanwhile) or that was not sent: a recorded CANCEL_PENDING
        goes back to where it was. Not undone (the ledger, or a CANCEL_PENDING whose outcome is unknown), the order
        counts as unanswered: cancelling again sends it, instead of answering "asked already" for a cancel that the
        broker does not hold. A refusal's reason is then read from the broker: the book may have missed it."""
        undone = False
        if self.orders[internal_id].status == t.ORDER_STATUS_CANCEL_PENDING:
            try:
                await self.transition(internal_id, before, reason=f"cancel refused: {exc}",
                                      audit={"cancel_response": {"error": str(exc)}})
                undone = True
            except Exception as error:
                log.error("a refused cancel was not recorded; the order stays CANCEL_PENDING and cancelling it "
                          "again sends it again", extra={
                              "order_id": internal_id, "error": f"{type(error).__name__}: {error}"})
        if not undone:
            self._cancel_unanswered[internal_id] = before
        if isinstance(exc, BrokerRejected):
            try:
                await self._read_back(internal_id, {"cancel_refused": str(exc)}, closed_too=True)
            except Exception as error:  # the ledger: the order's events are applied again until recorded
                log.warning("the broker's view of an order refusing a cancel was not applied", extra={
                    "order_id": internal_id, "error": f"{type(error).__name__}: {error}"})

    async def _cancel_answered(self, internal_id: str, ack: BrokerAck) -> None:
        """Record the broker's answer to a cancel it took: the order's acknowledgement first if still unbooked, and,
        when the answer is CANCELLED, a fill made before it (its event may still be queued) and the CANCELLED. Not
        recorded (the ledger), it is left to the order's events, applied again until the ledger takes them: the
        cancel is at the broker, and the order stays as recorded. The caller holds the order's lock."""
        audit = {"cancel_response": {"status": name(ack.status), "reason": ack.reason, "raw": ack.raw}}
        while True:
            try:
                await self._book_unbooked(internal_id)
                if ack.status == t.ORDER_STATUS_CANCELLED:
                    await self._read_back(internal_id, audit, closed_too=False)
                    if self.orders[internal_id].status not in TERMINAL:
                        await self.transition(internal_id, t.ORDER_STATUS_CANCELLED, reason=ack.reason or "cancelled",
                                              audit=audit)
                return
            except BookMoved:
                continue  # worked out again from the book, never sent again
            except Exception as exc:
                log.error("the broker's answer to a cancel was not recorded; the order's events will be", extra={
                    "order_id": internal_id, "answer": name(ack.status), "error": f"{type(exc).__name__}: {exc}"})
                return

    async def _acknowledged(self, internal_id: str) -> BrokerAck | None:
        """Before a cancel: the broker's acknowledgement of the order, if it is still being applied again (the ledger
        refused it), booked now; the cancel needs its exchange id. Still not booked: the acknowledgement, returned,
        and the cancel goes by its exchange id all the same; the order stays as recorded until it is booked. The
        caller holds the order's lock."""
        try:
            await self._book_unbooked(internal_id)
        except BookMoved:
            raise  # booked, or part of it: cancel() decides again from the book
        except Exception as exc:
            unbooked = self._unbooked.get(internal_id)
            if unbooked is None:
                raise
            log.warning("the order's acknowledgement is still not recorded; the cancel goes by its exchange id",
                        extra={"order_id": internal_id, "error": f"{type(exc).__name__}: {exc}"})
            return unbooked.ack
        return None

    async def _read_back(self, internal_id: str, audit: dict[str, Any], *, closed_too: bool) -> None:
        """Read the broker's view of the order by its tag and apply it where it is ahead of the book: more fills,
        or (`closed_too`) closed there while open here. The caller holds the order's lock. A lookup that fails is
        logged: the order's queued events (or a late fill) still say so."""
        cur = self.orders[internal_id]
        try:
            ev = await self.broker.find_by_tag(cur.client_order_id)
        except Exception as exc:
            log.warning("order lookup by tag failed", extra={"order_id": internal_id, "error": str(exc)})
            return
        if ev is None or (ev.filled_quantity <= cur.filled_quantity and not (closed_too and ev.status in TERMINAL)):
            return
        if ev.status not in TERMINAL:  # a lagging order book must not take the order back to OPEN
            ev = dataclasses.replace(ev, status=t.ORDER_STATUS_PARTIALLY_FILLED)
        await self.apply_event_locked(internal_id, ev, audit)

    # -- news the ledger did not take ---------------------------------------------------------------
    async def until_recorded(self, internal_id: str, apply: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `apply` (the transitions one broker event or acknowledgement makes) until it succeeds, waiting
        longer after each failure: an in-process broker says nothing twice and is not polled, so news dropped on
        a ledger error would be lost for good. Running it again is safe: transition() records before it touches
        the book, so a failed write leaves the book where it was, and the next run works out the transitions
        still missing (a write that may have committed is settled first: BookMoved). The first failure is a
        critical alert; the recovery is logged."""
        delay, longest = self.ledger_retry_s
        failures = 0
        while True:
            try:
                await apply()
                break
            except IllegalTransition as exc:  # not the ledger: the same news would be refused again
                ILLEGAL.inc()
                log.error("broker news refused by the state machine: %s", exc, extra={"order_id": internal_id})
                break
            except BookMoved:
                continue  # the ledger answers again: what is still missing is worked out from the book at once
            except Exception as exc:
                failures += 1
                UNRECORDED_ATTEMPTS.inc()
                await self._not_recorded(internal_id, what, failures, exc)
            await asyncio.sleep(delay)
            delay = min(longest, delay * 2)
        if failures:
            self._unrecorded.discard(internal_id)
            UNRECORDED_ORDERS.set(len(self._unrecorded))
            log.warning("broker news recorded after failed attempts", extra={
                "order_id": internal_id, "what": what, "attempts": failures + 1,
                "still_unrecorded": len(self._unrecorded)})

    async def _not_recorded(self, internal_id: str, what: str, failures: int, error: Exception) -> None:
        u = self.orders.get(internal_id)
        extra = {"order_id": internal_id, "client_order_id": u.client_order_id if u else "", "what": what,
                 "attempts": failures, "error": f"{type(error).__name__}: {error}"}
        if failures > 1:
            log.error("broker news still not recorded; applying it again", extra=extra)
            return
        first = not self._unrecorded
        self._unrecorded.add(internal_id)
        UNRECORDED_ORDERS.set(len(self._unrecorded))
        log.critical("broker news not recorded (the ledger failed); applying it again until it is", extra=extra,
                     exc_info=error)
        if first:  # one alert while orders wait, not one per order
            await self.notify(ops_pb2.SEVERITY_CRITICAL, "Order updates not recorded", (
                f"The broker's {what} for order {extra['client_order_id']} could not be recorded ({extra['error']}); "
                "the OMS shows the order as it was and applies it again, with back-off, until the ledger takes it "
                "(other orders' updates may wait too). Check the database; the OMS logs each one it records."),
                order_id=internal_id, client_order_id=str(extra["client_order_id"]))

    async def notify(self, severity: ops_pb2.Severity, title: str, text: str, **fields: str) -> None:
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=severity, source="oms", title=title, text=text,
            ts_ns=self.clock.now_ns(), fields=fields))

    # -- broker events ----------------------------------------------------------------------------
    def order_of(self, ev: BrokerOrderEvent) -> str | None:
        """The internal id of the order a broker event names, if it is in the book."""
        return self._ids.get(ev.exchange_order_id) or self._ids.get(ev.client_order_id)

    async def on_event(self, ev: BrokerOrderEvent) -> None:
        """Apply one broker event (cumulative fills) to the order it names, at most once per fill."""
        iid = self.order_of(ev)
        if iid is None:
            UNKNOWN_EVENTS.inc()
            log.debug("broker event for an order not in the book", extra={"exchange_order_id": ev.exchange_order_id})
            return
        unbooked = self._unbooked.get(iid)
        if unbooked is not None:  # the broker's news in the order it gave it: its acknowledgement first
            await unbooked.settled.wait()
        async with self.lock(iid):
            await self.apply_event_locked(iid, ev)

    async def apply_event_locked(self, internal_id: str, ev: BrokerOrderEvent,
                                 audit: dict[str, Any] | None = None) -> None:
        """The caller holds the order's lock. Illegal transitions are logged and counted, never raised."""
        cur = self.orders[internal_id]
        if ev.filled_quantity < cur.filled_quantity:
            return  # stale: cumulative fills only move forward
        if ev.filled_quantity > cur.request.quantity:
            # Never booked: a position the account may not hold would enter risk's limits and P&L. The position
            # check (position_check_s) reports a real difference; an order modified outside NeoPulse is one.
            self.overfills += 1
            OVERFILLS.inc()
            log.error("broker reports more filled than the order's quantity; not booked", extra={
                "order_id": internal_id, "exchange_order_id": ev.exchange_order_id, "quantity": cur.request.quantity,
                "broker_filled": ev.filled_quantity})
            return
        if self._unpriced(internal_id, ev, ev.filled_quantity - cur.filled_quantity):
            return  # before every branch: a live order, a late fill and an adoption alike
        if cur.status in TERMINAL:
            await self._event_for_terminal(internal_id, cur, ev)
            return
        if cur.status == t.ORDER_STATUS_PENDING_NEW:  # the broker has it before its SUBMITTED was recorded
            await self._submitted(internal_id)
            cur = self.orders[internal_id]
        status = t.ORDER_STATUS_OPEN if ev.status in _ACCEPTED else ev.status
        delta = ev.filled_quantity - cur.filled_quantity
        if delta > 0 and status in _RESTING:
            status = t.ORDER_STATUS_PARTIALLY_FILLED
        new_id = ev.exchange_order_id if ev.exchange_order_id != cur.exchange_order_id else ""
        allow = can_transition
        if delta == 0 and (status == cur.status or (
                cur.status == t.ORDER_STATUS_PARTIALLY_FILLED and status in _RESTING)):
            if not new_id:
                return  # nothing new
            status, allow = cur.status, allows_new_exchange_id  # only the broker's id for it changed
        fill, counted = self._fill_delta(internal_id, cur, ev, delta)
        try:
            code = ReasonCode.BROKER_REJECTED if status == t.ORDER_STATUS_REJECTED else ""
            await self.transition(internal_id, status, reason=ev.reason or None, reason_code=code,
                                  exchange_order_id=new_id, filled=_filled(cur, ev, fill) if delta else None,
                                  fill=fill, allow=allow, audit={"event": event_audit(ev), **(audit or {})})
            counted()
        except IllegalTransition as exc:
            self.illegal_transitions += 1
            ILLEGAL.inc()
            log.error("broker event refused by the state machine: %s", exc,
                      extra={"order_id": internal_id, "exchange_order_id": ev.exchange_order_id})

    async def _event_for_terminal(self, internal_id: str, cur: t.OrderUpdate, ev: BrokerOrderEvent) -> None:
        """A repeated event is a no-op; more fills than recorded are an error worth a page, and are
        applied when the state machine allows it (CANCELLED stays CANCELLED with the fills)."""
        if ev.status != t.ORDER_STATUS_REJECTED and given_up(cur):
            await self._adopt(internal_id, cur, ev)
            return
        if ev.filled_quantity <= cur.filled_quantity:
            return  # a repeat, or a stale row showing fewer fills than recorded: fills never go back
        LATE_FILLS.inc()
        log.error("broker reports fills for an order already %s", name(cur.status), extra={
            "order_id": internal_id, "exchange_order_id": ev.exchange_order_id,
            "recorded_filled": cur.filled_quantity, "broker_filled": ev.filled_quantity})
        if not allows_late_fill(cur.status, cur.status):
            return
        fill, counted = self._fill_delta(internal_id, cur, ev, ev.filled_quantity - cur.filled_quantity)
        await self.transition(internal_id, cur.status, filled=_filled(cur, ev, fill), fill=fill, allow=allows_late_fill,
                              audit={"late_fill": event_audit(ev)})
        counted()

    async def _adopt(self, internal_id: str, cur: t.OrderUpdate, ev: BrokerOrderEvent) -> None:
        """REJECTED -> the broker's state for an order we gave up on, and a critical notification."""
        delta = ev.filled_quantity - cur.filled_quantity
        status = t.ORDER_STATUS_OPEN if ev.status in _ACCEPTED else ev.status
        if status in _RESTING and status != t.ORDER_STATUS_TRIGGER_PENDING:
            status = t.ORDER_STATUS_PARTIALLY_FILLED if delta > 0 else t.ORDER_STATUS_OPEN
        fill, counted = self._fill_delta(internal_id, cur, ev, delta)
        reason = f"order found at the broker after it was given up ({name(ev.status)} there); adopted"
        try:
            u = await self.transition(internal_id, status, reason=reason, reason_code=ReasonCode.ADOPTED,
                                      exchange_order_id=ev.exchange_order_id,
                                      filled=_filled(cur, ev, fill) if delta else None,
                                      fill=fill, allow=allows_adoption,
                                      audit={"adopted": {"given_up_reason": cur.reason, "event": event_audit(ev)}})
        except IllegalTransition as exc:
            ILLEGAL.inc()
            log.error("given-up order found at the broker but not adoptable: %s", exc, extra={"order_id": internal_id})
            return
        counted()
        UNKNOWN_OUTCOMES.labels("adopted_after_giving_up").inc()
        log.critical("order found at the broker after it was given up; adopted", extra={
            "order_id": internal_id, "exchange_order_id": ev.exchange_order_id, "status": name(status)})
        await self.bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(
            kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_CRITICAL,
            title="Order found at broker after it was given up", source="oms", ts_ns=u.ts_ns,
            text=(f"Order {u.client_order_id} was marked REJECTED (outcome unknown) but the broker holds it as "
                  f"{ev.exchange_order_id} ({name(ev.status)}, filled {ev.filled_quantity}); the OMS now tracks it "
                  "again. Check positions and any replacement order placed meanwhile."),
            fields={"order_id": internal_id, "client_order_id": u.client_order_id,
                    "exchange_order_id": ev.exchange_order_id, "token": str(u.request.token),
                    "strategy": u.request.strategy_tag, "status": name(status)}))

    def _unpriced(self, internal_id: str, ev: BrokerOrderEvent, delta: int) -> bool:
        """New fills without a price (Kotak leaves avgPrc empty in some rows): applied at 0 they would book a
        gain or loss as large as their value, so the event is left alone; the next feed message or order book
        poll that has the price applies them."""
        if delta <= 0 or ev.average_price_paise > 0:
            return False
        if ev.raw.get("last_fill_quantity") == delta and int(ev.raw.get("last_fill_price_paise") or 0) > 0:
            return False
        self.unpriced_fills += 1
        UNPRICED_FILLS.inc()
        log.warning("broker reports fills without a price; waiting for a row with one", extra={
            "order_id": internal_id, "exchange_order_id": ev.exchange_order_id, "filled": ev.filled_quantity})
        return True

    def restore_charges(self, order: t.OrderUpdate, charges_paise: int) -> None:
        """After a restart: the charges already recorded for an order's fills (later ones are counted on top), and,
        when they are estimated, the brokerage they paid towards the flat cap (later fills pay only the rest)."""
        iid = order.internal_id
        self._charges[iid] = max(self._charges.get(iid, 0), charges_paise)
        if self._estimate is not None:
            self._brokerage[iid] = self._estimate.brokerage_paid(order.request, order.filled_quantity,
                                                                 order.average_price_paise)

    def _fill_delta(self, internal_id: str, cur: t.OrderUpdate, ev: BrokerOrderEvent,
                    delta: int) -> tuple[tuple[int, int, int], Callable[[], None]]:
        """(quantity, price, charges) of the fill(s) between our cumulative state and the event's, and what to call
        once its transition is recorded: it counts the charges seen and the brokerage so far then, not before, so
        that a write that fails or a transition refused leaves them for the row that brings the fill again."""
        seen = self._charges.get(internal_id, 0)
        brokerage = self._brokerage.get(internal_id, 0)

        def counted(added_brokerage: int = 0) -> None:
            self._charges[internal_id] = max(seen, ev.charges_paise)
            if added_brokerage:
                self._brokerage[internal_id] = brokerage + added_brokerage

        if delta <= 0:
            return (0, 0, 0), counted
        if ev.raw.get("last_fill_quantity") == delta:
            price, charges = int(ev.raw["last_fill_price_paise"]), int(ev.raw.get("last_fill_charges_paise", 0))
        else:
            value = ev.filled_quantity * ev.average_price_paise - cur.filled_quantity * cur.average_price_paise
            price, charges = (value + delta // 2) // delta, max(0, ev.charges_paise - seen)
        if self._estimate is not None and not charges:
            estimate = self._estimate.for_fill(cur.request, delta, price, brokerage)
            return (delta, price, estimate.total), functools.partial(counted, estimate.brokerage)
        return (delta, price, charges), counted
