"""Cancelling an order: CANCEL_PENDING, the cancel, the broker's answer; the cancel goes even when the ledger
refuses CANCEL_PENDING (the kill switch must work with the database down).

Builds on placement (placement.py: an acknowledgement still unbooked is booked first); talks to the Broker.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from services.oms.book import BookMoved
from services.oms.broker import BrokerAck
from services.oms.placement import Placement
from services.oms.states import TERMINAL, WORKING, IllegalTransition, name
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotFound, NotSent, OrderStateError, RetryableError

log = logging.getLogger(__name__)
# How long a cancel the broker took counts as under way while the order fills meanwhile (Book._cancel_working):
# a cancel asked again within it is "asked already", and a row from before it is held back; after it, the cancel
# is sent again if asked, and a row held back is applied.
CANCEL_SETTLE_S = 5.0


class Cancelling(Placement):
    """Cancels orders at the broker, each at most once per request, and records the answer."""

    async def cancel(self, order_id: str) -> t.OrderUpdate:
        """CANCEL_PENDING, the cancel, then the broker's answer. The cancel goes to the broker even when the ledger
        refuses CANCEL_PENDING (or its outcome is unknown): a cancel only takes exposure away, the kill switch must
        work with the database down, and the broker's answer and events are recorded when the ledger takes them;
        the order stays as recorded until then. Raises NotFound, OrderStateError, BrokerRejected / NotSent (refused
        or not sent), RetryableError (no answer: cancelling again sends it again)."""
        cur = await self.order_in_book(order_id)
        iid = cur.internal_id
        async with self.lock(iid):
            if iid not in self.orders:  # dropped from memory (forget_ended) while this waited for the lock
                self.remember(cur)
            ack = await self.decided_again(lambda: self._send_cancel(iid, order_id))
            if ack is not None:
                unrecorded = self._cancel_sent.get(iid)
                await self._cancel_answered(iid, ack)
                if unrecorded:
                    await self._cancel_unrecorded(iid, unrecorded)
            return self.orders[iid]

    async def _cancel_unrecorded(self, iid: str, why: str) -> None:
        """The trader's own word of a cancel the broker took without its CANCEL_PENDING recorded: the order still
        shows as it was recorded, so a /cancel (or the kill switch) would seem to have done nothing. Said once the
        cancel is out, so the notification never holds it up."""
        cur = self.orders[iid]
        await self.notify(ops_pb2.SEVERITY_WARNING, "Cancel sent, not recorded", (
            f"Order {cur.client_order_id} ({cur.request.symbol}): the cancel went to the broker, but the ledger did "
            f"not record it ({why}). The order shows {name(cur.status)} until the ledger takes the broker's "
            "answer; cancelling it again sends nothing more."), order_id=iid, client_order_id=cur.client_order_id)

    async def order_in_book(self, order_id: str) -> t.OrderUpdate:
        """The order by internal, client or exchange id, from the book or else the ledger (then taken into the book:
        an order of an earlier day, dropped from memory). Raises NotFound."""
        cur = self.lookup(order_id) or await self.ledger.get(order_id)
        if cur is None:
            raise NotFound(f"no order {order_id!r}; list orders to find its internal or client id")
        if cur.internal_id not in self.orders:
            self.remember(cur)
        return cur

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
        asked = cur.status == t.ORDER_STATUS_CANCEL_PENDING or iid in self._cancel_sent or self.cancel_under_way(iid)
        if asked and iid not in self._cancel_unanswered:
            return None
        exchange_order_id = unbooked.exchange_order_id if unbooked is not None else cur.exchange_order_id
        if not exchange_order_id:
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
        self._cancel_working[iid] = time.monotonic() + CANCEL_SETTLE_S  # on its way, then under way at the broker
        self._cancels_sent_run.add(iid)
        try:
            return await self.broker.cancel_order(exchange_order_id)
        except (BrokerRejected, NotSent) as exc:  # refused: filled or closed meanwhile, or not sent
            self._cancel_sent.pop(iid, None)
            self._cancel_working.pop(iid, None)
            await self._cancel_refused(iid, before, exc)
            raise
        except Exception as exc:  # a timeout: the broker may or may not have cancelled it
            self._cancel_sent.pop(iid, None)
            self._cancel_working.pop(iid, None)
            self._cancel_unanswered[iid] = before
            raise RetryableError(f"order {order_id}: the cancel got no answer ({exc}); the broker's events will say "
                                 "whether it went, and cancelling again sends it again") from exc
        except BaseException:  # the caller gave up with the call on the wire (a deadline): as with no answer, not
            self._cancel_sent.pop(iid, None)  # "asked already" to the next cancel for a cancel the broker may lack
            self._cancel_working.pop(iid, None)
            self._cancel_unanswered[iid] = before
            raise

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

    async def _read_back(self, internal_id: str, audit: dict[str, Any], *, closed_too: bool,
                         terms_too: bool = False) -> None:
        """Read the broker's view of the order by its tag and apply it where it is ahead of the book: more fills,
        (`closed_too`) closed there while open here, or (`terms_too`: after a change that got no answer) a state
        other than MODIFY_PENDING there, whose terms say whether the change holds. The caller holds the order's lock.
        A lookup that fails is logged: the order's queued events (or a late fill) still say so."""
        cur = self.orders[internal_id]
        try:
            ev = await self.broker.find_by_tag(cur.client_order_id)
        except Exception as exc:
            log.warning("order lookup by tag failed", extra={"order_id": internal_id, "error": str(exc)})
            return
        if ev is None:
            return
        if terms_too and ev.status in WORKING and ev.status != t.ORDER_STATUS_MODIFY_PENDING:
            await self.apply_event_locked(internal_id, ev, audit)
            return
        if ev.filled_quantity <= cur.filled_quantity and not (closed_too and ev.status in TERMINAL):
            return
        if ev.status == t.ORDER_STATUS_MODIFY_PENDING:  # its fills, not the terms of a change not in force yet
            ev = dataclasses.replace(ev, quantity=0, price_paise=0, trigger_price_paise=0)
        if ev.status not in TERMINAL:  # a lagging order book must not take the order back to OPEN
            ev = dataclasses.replace(ev, status=t.ORDER_STATUS_PARTIALLY_FILLED)
        await self.apply_event_locked(internal_id, ev, audit)
