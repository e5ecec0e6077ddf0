"""Placing an order written ahead: the broker call, its acknowledgement booked (later for an in-process broker's
burst), and an outcome that is unknown resolved by looking the order's tag up, never by placing it again.

Builds on broker news (broker_news.py); talks to the Broker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from prometheus_client import Counter

from services.oms.book import NOT_YET_PLACED, _Unbooked
from services.oms.broker import BrokerAck
from services.oms.broker_news import UNKNOWN_OUTCOMES, BrokerNews
from services.oms.states import ReasonCode, name
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotSent

log = logging.getLogger(__name__)

PLACEMENT_ERRORS = Counter("neopulse_oms_placement_errors",
                           "Placements that failed inside the OMS (e.g. the ledger); the order is left to reconcile")


class Placement(BrokerNews):
    """Sends orders to the broker once each and books what it answers."""

    # -- placing --------------------------------------------------------------------------------
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
            return await self._refused(internal_id, exc, ReasonCode.NOT_SENT)
        except BrokerRejected as exc:
            return await self._refused(internal_id, exc, ReasonCode.BROKER_REJECTED)
        except Exception as exc:  # a timeout or anything else: the broker may have it
            log.warning("placement outcome unknown; looking the tag up",
                        extra={"order_id": internal_id, "client_order_id": request.client_order_id, "error": str(exc)})
            await self.until_recorded(internal_id, functools.partial(self._outcome_unknown, internal_id, exc),
                                      "placement outcome unknown")
        return None

    async def _refused(self, internal_id: str, error: Exception, reason_code: str) -> BrokerAck | None:
        """The broker's refusal (or NotSent), recorded at once; when the ledger does not take it, returned to be
        booked as an acknowledgement is, again until it does: the broker will not say it twice, and an order left
        PENDING_NEW counts as open (and cannot be cancelled) all day."""
        ack = BrokerAck("", t.ORDER_STATUS_REJECTED, str(error), reason_code=reason_code)
        try:
            await self._on_ack(internal_id, ack)
        except Exception as exc:
            log.warning("broker refusal not recorded yet; booking it again until the ledger takes it",
                        extra={"order_id": internal_id, "error": f"{type(exc).__name__}: {exc}"})
            return ack
        return None

    async def _outcome_unknown(self, internal_id: str, error: Exception) -> None:
        """SUBMITTED (the broker may have the order), then its outcome looked up: run again until the ledger has
        taken it all (until_recorded), from where the book is."""
        status = self.orders[internal_id].status
        if status not in NOT_YET_PLACED:
            return
        if status == t.ORDER_STATUS_PENDING_NEW:
            await self._submitted(internal_id)
        await self._resolve_unknown(internal_id, error)

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

    # -- acknowledgements -----------------------------------------------------------------------
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

    async def _on_ack(self, internal_id: str, ack: BrokerAck) -> None:
        status = self.orders[internal_id].status
        if status not in NOT_YET_PLACED:
            return  # applied again after a write found recorded (BookMoved): nothing left to book
        not_sent = ack.reason_code == ReasonCode.NOT_SENT  # certainly not at the broker: never SUBMITTED
        if status == t.ORDER_STATUS_PENDING_NEW and not not_sent:  # applied again: SUBMITTED may be in
            await self._submitted(internal_id)
        audit: dict[str, Any] = {"response": {"error": ack.reason}} if ack.reason_code else {"response": {
            "exchange_order_id": ack.exchange_order_id, "status": name(ack.status), "reason": ack.reason,
            "raw": ack.raw}}
        if ack.status == t.ORDER_STATUS_REJECTED:
            await self.transition(internal_id, t.ORDER_STATUS_REJECTED, reason=ack.reason or "rejected by the broker",
                                  reason_code=ack.reason_code or ReasonCode.BROKER_REJECTED,
                                  exchange_order_id=ack.exchange_order_id, audit=audit)
            return
        # Fills and later states arrive as broker events; the acknowledgement only says the broker has it.
        status = t.ORDER_STATUS_TRIGGER_PENDING if ack.status == t.ORDER_STATUS_TRIGGER_PENDING else t.ORDER_STATUS_OPEN
        await self.transition(internal_id, status, exchange_order_id=ack.exchange_order_id, audit=audit)
