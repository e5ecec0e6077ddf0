"""Broker news into the book: the broker's events for an order (fills, closes, adoption of a given-up order),
their charges, and the news the ledger did not take, applied again until it does.

Builds on the order book (book.py); talks to the bus (NOTIFICATIONS) through it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge

from services.oms.book import BookMoved, OrderBook, given_up
from services.oms.broker import CHANGE_REFUSED, BrokerOrderEvent
from services.oms.states import (
    RESTING,
    TERMINAL,
    IllegalTransition,
    ReasonCode,
    allows_adoption,
    allows_late_fill,
    allows_working_news,
    can_transition,
    name,
)
from shared.bus import Topic
from shared.clock import day_of, segment_open
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from shared.metrics import start_at_zero
from shared.order_terms import PRICED, STOPS, Terms, terms_of

log = logging.getLogger(__name__)
# A broker row showing the terms a change of ours replaced, this soon after the broker took the change, was read
# before it (an order-book poll's snapshot): not taken as the broker changing them back.
STALE_TERMS_S = 5.0

ILLEGAL = Counter("neopulse_oms_illegal_transitions", "Broker events the state machine refused")
UNKNOWN_EVENTS = Counter("neopulse_oms_unknown_broker_events", "Broker events for orders not in the OMS book")
UNPRICED_FILLS = Counter("neopulse_oms_unpriced_fills", "Broker events with new fills but no price (left for later)")
OVERFILLS = Counter("neopulse_oms_overfills", "Broker rows with more filled than the order's quantity (not booked)")
LATE_FILLS = Counter("neopulse_oms_late_fills", "Broker events with more fills for an order already terminal")
UNKNOWN_OUTCOMES = Counter("neopulse_oms_unknown_placements", "Placements whose outcome was unknown", ["result"])
start_at_zero(UNKNOWN_OUTCOMES, "adopted", "rejected", "adopted_after_giving_up")  # NeoPulsePlacementOutcomeUnknown
UNRECORDED_ATTEMPTS = Counter("neopulse_oms_unrecorded_attempts",
                              "Attempts to apply a broker event or acknowledgement that failed (e.g. the ledger)")
UNRECORDED_ORDERS = Gauge("neopulse_oms_unrecorded_orders",
                          "Orders with a broker event or acknowledgement not yet recorded, being applied again")
# Broker states that only say "the broker has it".
_ACCEPTED = frozenset({t.ORDER_STATUS_UNSPECIFIED, t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED})
# Live states a fill turns into PARTIALLY_FILLED.
_RESTING = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_MODIFY_PENDING,
                      t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED})


def _filled(cur: t.OrderUpdate, ev: BrokerOrderEvent, fill: tuple[int, int, int]) -> tuple[int, int]:
    """(filled, average price) after `fill`: the broker's average, or, in a row without one (priced by the fill
    itself, raw last_fill_*), the average of the fills recorded and this one. Not the fill's price: later fill
    prices are derived from the averages."""
    if ev.average_price_paise:
        return ev.filled_quantity, ev.average_price_paise
    value = cur.filled_quantity * cur.average_price_paise + fill[0] * fill[1]
    return ev.filled_quantity, (value + ev.filled_quantity // 2) // ev.filled_quantity


def event_audit(ev: BrokerOrderEvent) -> dict[str, Any]:
    return {"exchange_order_id": ev.exchange_order_id, "status": name(ev.status), "filled_quantity":
            ev.filled_quantity, "average_price_paise": ev.average_price_paise, "reason": ev.reason,
            "charges_paise": ev.charges_paise, "quantity": ev.quantity, "price_paise": ev.price_paise,
            "trigger_price_paise": ev.trigger_price_paise, "raw": ev.raw}


def reported_terms(request: t.OrderRequest, ev: BrokerOrderEvent) -> Terms:
    """The order's terms as a broker row gives them: each the row reports (a price only for an order type that has
    one: a market order's row may show its fill price), the request's for the others."""
    return (ev.quantity or request.quantity,
            ev.price_paise if ev.price_paise and request.order_type in PRICED else request.price_paise,
            ev.trigger_price_paise if ev.trigger_price_paise and request.order_type in STOPS
            else request.trigger_price_paise)


class BrokerNews(OrderBook):
    """Applies what the broker says of an order: at most once per fill, in the order it said it."""

    # -- news the ledger did not take -----------------------------------------------------------
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

    async def apply_held_rows(self) -> float | None:
        """Apply the rows held back whose cancel's wait is over (unless newer news of the order came meanwhile);
        returns the seconds until the next one is due, or None when none is held."""
        now, due = time.monotonic(), None
        for iid, ev in list(self._held_rows.items()):
            until = self._cancel_working.get(iid, 0.0)
            if until > now:
                due = until - now if due is None else min(due, until - now)
                continue
            del self._held_rows[iid]
            await self.until_recorded(iid, functools.partial(self._apply_held, iid, ev), "order event held back")
        return due

    async def _apply_held(self, internal_id: str, ev: BrokerOrderEvent) -> None:
        async with self.lock(internal_id):
            if internal_id in self.orders:  # not dropped from memory meanwhile (forget_ended)
                await self.apply_event_locked(internal_id, ev)

    # -- broker events --------------------------------------------------------------------------
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
            if iid not in self.orders:  # ended on an earlier day and dropped from memory meanwhile (forget_ended)
                UNKNOWN_EVENTS.inc()
                return
            await self.apply_event_locked(iid, ev)

    async def apply_event_locked(self, internal_id: str, ev: BrokerOrderEvent,
                                 audit: dict[str, Any] | None = None) -> None:
        """The caller holds the order's lock. Illegal transitions are logged and counted, never raised."""
        cur = self.orders[internal_id]
        if ev.filled_quantity < cur.filled_quantity:
            return  # stale: cumulative fills only move forward
        if ev.filled_quantity > max(cur.request.quantity, ev.quantity):
            # Never booked: a position the account may not hold would enter risk's limits and P&L. The position
            # check (position_check_s) reports a real difference. A row within the quantity it reports is booked:
            # the order was changed elsewhere (Kotak's app), whether or not the book has its new terms yet.
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
        if (cur.status == t.ORDER_STATUS_CANCEL_PENDING and ev.filled_quantity == cur.filled_quantity
                and (ev.status in RESTING or ev.status in _ACCEPTED) and self.cancel_under_way(internal_id)):
            # Likely read or sent before the cancel (Kotak's order feed lags its REST answer); but an exchange that
            # refused the cancel says the same: held back, and applied when the wait is over unless newer news came
            # (apply_held_rows).
            self._held_rows[internal_id] = ev
            self.held_rows_changed.set()
            return
        terms = self._terms_news(internal_id, cur, ev)
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
            if not new_id and terms is None:
                return  # nothing new
            status, allow = cur.status, allows_working_news  # only the broker's id or terms for it changed
        fill, counted = self._fill_delta(internal_id, cur, ev, delta)
        elsewhere = terms is not None and self._changed_elsewhere(internal_id, terms)
        try:
            code = ReasonCode.BROKER_REJECTED if status == t.ORDER_STATUS_REJECTED else ""
            if elsewhere and not code:
                code = ReasonCode.CHANGED_AT_BROKER
            elif status == t.ORDER_STATUS_CANCELLED and self._cancelled_elsewhere(internal_id, cur):
                code = ReasonCode.CANCELLED_AT_BROKER
            await self.transition(internal_id, status, reason=ev.reason or None, reason_code=code,
                                  exchange_order_id=new_id, filled=_filled(cur, ev, fill) if delta else None,
                                  fill=fill, terms=terms, allow=allow, recorded=counted, by_hand=elsewhere,
                                  audit={"event": event_audit(ev), **(audit or {})})
        except IllegalTransition as exc:
            self.illegal_transitions += 1
            ILLEGAL.inc()
            log.error("broker event refused by the state machine: %s", exc,
                      extra={"order_id": internal_id, "exchange_order_id": ev.exchange_order_id})

    def _cancelled_elsewhere(self, internal_id: str, cur: t.OrderUpdate) -> bool:
        """A cancel NeoPulse never asked for (Kotak's app, the broker's risk system, the exchange): not one it sent in
        this run, not an IOC's unfilled rest, not a DAY order expiring (reported after its segment's close, or on a
        later day)."""
        now = self.clock.now_ns()
        # Every cancel sent in this run is in _cancels_sent_run (its unanswered, unrecorded and under-way marks are
        # all set by the same send); CANCEL_PENDING covers one recorded before a restart.
        ours = cur.status == t.ORDER_STATUS_CANCEL_PENDING or internal_id in self._cancels_sent_run
        return (not ours and cur.request.validity != t.VALIDITY_IOC and day_of(cur.ts_ns) == day_of(now)
                and segment_open(cur.request.exchange_segment, now))

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
                              terms=self._terms_news(internal_id, cur, ev), audit={"late_fill": event_audit(ev)},
                              recorded=counted)

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
                                      audit={"adopted": {"given_up_reason": cur.reason, "event": event_audit(ev)}},
                                      recorded=counted)
        except IllegalTransition as exc:
            ILLEGAL.inc()
            log.error("given-up order found at the broker but not adoptable: %s", exc, extra={"order_id": internal_id})
            return
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

    def _terms_news(self, internal_id: str, cur: t.OrderUpdate, ev: BrokerOrderEvent) -> Terms | None:
        """The terms a broker row gives the order, where they differ from the book's; None otherwise. Not from a
        row of a change still pending there (it may show either terms), nor a row showing the terms a change of ours
        replaced within STALE_TERMS_S of the broker's answer to it (read before the change: a poll's snapshot), unless
        the row has filled more than the change left, or the broker says it refused the change after taking it
        (CHANGE_REFUSED): then the change did not hold."""
        if ev.status == t.ORDER_STATUS_MODIFY_PENDING:
            return None
        reported = reported_terms(cur.request, ev)
        if reported == terms_of(cur.request):
            return None
        replaced = self._replaced_terms.get(internal_id)
        if replaced is not None and time.monotonic() >= replaced[1]:
            del self._replaced_terms[internal_id]
        elif (replaced is not None and reported == replaced[0] and ev.filled_quantity <= cur.request.quantity
              and not ev.reason.startswith(CHANGE_REFUSED)):
            return None  # even after rows showing the change: a poll's snapshot may be older than the feed's news
        log.warning("the broker reports other terms for the order; the book takes them", extra={
            "order_id": internal_id, "book": terms_of(cur.request), "broker": reported})
        return reported

    def _changed_elsewhere(self, internal_id: str, terms: Terms) -> bool:
        """Whether terms a broker row gives the order (other than the book's) were set outside NeoPulse: none that a
        change of ours in this run moved the order from or to (a change of ours that did not hold, read back)."""
        if terms in self._sent_terms.get(internal_id, ()):
            return False
        log.warning("the order was changed outside NeoPulse (CHANGED_AT_BROKER): changed by hand from now on", extra={
            "order_id": internal_id, "broker": terms})
        return True

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

    # -- fill charges ---------------------------------------------------------------------------
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
        once its transition is recorded (transition's `recorded`, also for a write found committed later): it
        counts the charges seen, the brokerage and the value booked so far then, not before, so that a write that
        fails or a transition refused leaves them for the row that brings the fill again.

        A row that says the fill itself (raw last_fill_*) gives its price. Otherwise the price is what the row's
        average adds to the value booked so far: against our own booked value, not our average times our filled
        quantity, so that the broker's averages being rounded (and fills priced exactly in between) never adds up
        over an order's fills: their sum stays within the last average's rounding of what the broker says."""
        seen = self._charges.get(internal_id, 0)
        brokerage = self._brokerage.get(internal_id, 0)
        booked = self._fill_value.get(internal_id)
        if booked is None:
            booked = cur.filled_quantity * cur.average_price_paise
        if delta <= 0:
            price, charges = 0, 0
        elif ev.raw.get("last_fill_quantity") == delta:
            price, charges = int(ev.raw["last_fill_price_paise"]), int(ev.raw.get("last_fill_charges_paise", 0))
        else:
            value = ev.filled_quantity * ev.average_price_paise - booked
            price, charges = (value + delta // 2) // delta, max(0, ev.charges_paise - seen)

        def counted(added_brokerage: int = 0) -> None:
            self._charges[internal_id] = max(seen, ev.charges_paise)
            if added_brokerage:
                self._brokerage[internal_id] = brokerage + added_brokerage
            if delta > 0:
                self._fill_value[internal_id] = booked + delta * price

        if delta <= 0:
            return (0, 0, 0), counted
        if self._estimate is not None and not charges:
            estimate = self._estimate.for_fill(cur.request, delta, price, brokerage, booked)
            return (delta, price, estimate.total), functools.partial(counted, estimate.brokerage)
        return (delta, price, charges), counted
