"""Changing a working order (ModifyOrder): its new terms checked (risk, through the caller's `check`), MODIFY_PENDING
written ahead with them, the change sent, the broker's answer recorded.

Builds on cancelling (cancelling.py); talks to the Broker. The broker's own reports of an order's terms (a change
made elsewhere, or one whose answer was lost) are applied with its other news (broker_news.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.oms.book import BookMoved
from services.oms.broker import CHANGE_REFUSED, BrokerAck
from services.oms.broker_news import STALE_TERMS_S
from services.oms.cancelling import Cancelling
from services.oms.states import RESTING, TERMINAL, IllegalTransition, name
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, InvalidInput, NotSent, OrderStateError, RetryableError
from shared.order_terms import TERM_NAMES, Terms, changed_terms, terms_of

log = logging.getLogger(__name__)

# Asks risk whether the order may carry its new terms (the request with them, units filled); raises if not.
Check = Callable[[t.OrderRequest, int], Awaitable[object]]


def terms_audit(terms: Terms) -> dict[str, int]:
    return dict(zip(TERM_NAMES, terms, strict=True))


class Modifying(Cancelling):
    """Changes working orders at the broker, one change at a time per order, each written ahead."""

    async def modify(self, order_id: str, change: Terms, check: Check, strategy: str = "") -> t.OrderUpdate:
        """MODIFY_PENDING with the new terms, the change, then the broker's answer: the order back in its live state
        with the new terms, or (refused) with the old ones. Terms it has already are no change (a retry after an
        unknown outcome): the order is returned as it is. Raises NotFound, InvalidInput, OrderStateError, what `check`
        raises, BrokerRejected / NotSent (refused or not sent: the old terms hold), RetryableError (not written ahead:
        nothing sent; or no answer: the order stays MODIFY_PENDING until the broker's book says which terms hold).
        `strategy`: the strategy asking, which must be the order's; empty for a trader's change, which marks the order
        changed by hand. A strategy's change of an order changed by hand raises OrderStateError."""
        cur = await self.order_in_book(order_id)
        if strategy and strategy != cur.request.strategy_tag:
            raise InvalidInput("strategy_tag", f"order {order_id} is {cur.request.strategy_tag or 'no strategy'}'s, "
                                               f"not {strategy}'s")
        # Its own task, to the end whoever stops waiting: once MODIFY_PENDING is recorded the change goes and its
        # answer is recorded, under the order's lock.
        return await self.bus.to_the_end(self._modify_locked(cur, order_id, change, check, strategy),
                                          f"oms:modify:{order_id}")

    async def _modify_locked(self, cur: t.OrderUpdate, order_id: str, change: Terms, check: Check,
                             strategy: str) -> t.OrderUpdate:
        iid = cur.internal_id
        async with self.lock(iid):
            if iid not in self.orders:  # dropped from memory (forget_ended) while this waited for the lock
                self.remember(cur)
            new = await self.decided_again(lambda: self._modify_pending(iid, order_id, change, check, strategy))
            if new is None:
                return self.orders[iid]
            return await self._send_modify(iid, order_id, *new)

    async def _modify_pending(self, iid: str, order_id: str, change: Terms, check: Check,
                              strategy: str) -> tuple[int, Terms, Terms] | None:
        """Decide from the book as it is and record MODIFY_PENDING with the new terms: (the status before it, the old
        terms, the new), or None when the order has those terms already. The caller holds the order's lock."""
        try:
            await self._book_unbooked(iid)  # the change goes by the exchange id its acknowledgement brings
        except BookMoved:
            raise
        except Exception as exc:
            if iid in self._unbooked:
                raise RetryableError(f"order {order_id}: its acknowledgement is not recorded yet ({exc}); nothing "
                                     "was sent, retry in a moment") from exc
            raise
        cur = self.orders[iid]
        if cur.status in TERMINAL:
            raise OrderStateError(f"order {order_id} is already {name(cur.status)}; there is nothing to change")
        if strategy and cur.changed_by_hand:
            raise OrderStateError(f"order {order_id} was changed by hand; its strategy {strategy} leaves it to the "
                                  "trader")
        old = terms_of(cur.request)
        new = changed_terms(cur.request, cur.filled_quantity, change)
        if new == old:
            return None  # also a retry of a change still MODIFY_PENDING: the same terms are not sent twice
        pending = iid in self._cancel_sent or iid in self._cancel_unanswered or self.cancel_under_way(iid)
        if cur.status not in RESTING or pending or not cur.exchange_order_id:
            raise OrderStateError(f"order {order_id} is {name(cur.status)}{' with a cancel under way' * pending} "
                                  "and cannot be changed now; retry once the broker has answered")
        request = t.OrderRequest()
        request.CopyFrom(cur.request)
        request.quantity, request.price_paise, request.trigger_price_paise = new
        await check(request, cur.filled_quantity)
        before = cur.status
        self._sent_terms.setdefault(iid, set()).update((old, new))
        try:
            await self.transition(iid, t.ORDER_STATUS_MODIFY_PENDING, terms=new, change_sent=True,
                                  by_hand=not strategy, audit={
                                      "modify_request": {"from": terms_audit(old), "to": terms_audit(new),
                                                         "by": strategy or "hand"}})
        except (BookMoved, IllegalTransition):
            raise
        except Exception as exc:
            raise RetryableError(f"order {order_id}: the change was not sent: the ledger did not take MODIFY_PENDING "
                                 f"({type(exc).__name__}: {exc}); the order keeps its terms") from exc
        return before, old, new

    async def _send_modify(self, iid: str, order_id: str, before: int, old: Terms, new: Terms) -> t.OrderUpdate:
        """Send the change recorded MODIFY_PENDING and record the broker's answer. The caller holds the order's lock."""
        cur = self.orders[iid]
        sent = {field: value for field, value, was in zip(TERM_NAMES, new, old, strict=True) if value != was}
        try:
            ack = await self.broker.modify_order(cur.exchange_order_id, **sent)
        except (BrokerRejected, NotSent) as exc:  # refused (filled, closed, or a rule of the exchange) or not sent
            await self._modify_refused(iid, before, old, exc)
            raise
        except Exception as exc:  # a timeout: the broker may or may not have the change
            try:
                await self._read_back(iid, {"modify_unanswered": f"{type(exc).__name__}: {exc}"}, closed_too=True,
                                      terms_too=True)
            except Exception as error:  # the ledger: the order stays MODIFY_PENDING until the broker's next row
                log.error("the broker's view of an order whose change got no answer was not applied", extra={
                    "order_id": iid, "error": f"{type(error).__name__}: {error}"})
            raise RetryableError(f"order {order_id}: the change got no answer ({exc}); GetOrder shows the terms the "
                                 "broker reports, and asking for the same terms again sends nothing twice") from exc
        self._replaced_terms[iid] = (old, time.monotonic() + STALE_TERMS_S)
        await self._modify_answered(iid, before, ack)
        return self.orders[iid]

    async def _modify_refused(self, iid: str, before: int, old: Terms, exc: Exception) -> None:
        """The broker refused the change (or it was not sent): the order goes back to where it was, with its old terms.
        Not recorded (the ledger), it stays MODIFY_PENDING with the new ones until the broker's next row of it."""
        try:
            await self.transition(iid, before, terms=old, reason=f"{CHANGE_REFUSED}{exc}",
                                  audit={"modify_response": {"error": str(exc)}})
        except Exception as error:
            log.error("a refused change was not recorded; the broker's next report of the order settles it", extra={
                "order_id": iid, "error": f"{type(error).__name__}: {error}"})

    async def _modify_answered(self, iid: str, before: int, ack: BrokerAck) -> None:
        """The broker took the change: the order back in its live state (the one the answer names, else the one before
        the change) with the new terms. An answer that the order has ended is checked against the broker's book."""
        audit: dict[str, Any] = {"modify_response": {"status": name(ack.status), "reason": ack.reason, "raw": ack.raw}}
        while True:
            try:
                if ack.status in TERMINAL:
                    await self._read_back(iid, audit, closed_too=True)
                    return
                status = ack.status if ack.status in RESTING else before
                if status == t.ORDER_STATUS_OPEN and self.orders[iid].filled_quantity:
                    status = t.ORDER_STATUS_PARTIALLY_FILLED
                await self.transition(iid, status, audit=audit)
                return
            except BookMoved:
                continue
            except Exception as exc:
                log.error("the broker's answer to a change was not recorded; its next report of the order will be",
                          extra={"order_id": iid, "error": f"{type(exc).__name__}: {exc}"})
                return
