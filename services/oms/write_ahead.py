"""The write-ahead: accepted decisions into the ledger as PENDING_NEW (a burst in one transaction) before they are
placed; decisions that will not be placed (too old, or queued at a stop) recorded REJECTED NOT_SENT.

Builds on placement (placement.py); the hot path: accept_many -> _written_ahead -> _place_in_process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter

from services.oms.broker import decision_age_s
from services.oms.placement import PLACEMENT_ERRORS, Placement
from services.oms.states import ReasonCode
from shared.contracts import trading_pb2 as t

log = logging.getLogger(__name__)

WRITE_AHEAD_FAILURES = Counter("neopulse_oms_write_ahead_failures",
                               "Accepted orders not sent because the ledger could not take them")
WRITE_AHEAD_READBACK_S = (0.05, 0.25)  # waits before reading back an order whose insert failed (lost reply?)
STOPPED_NOT_SENT = "not sent: NeoPulse was stopping before it could be placed; place it again if still wanted"


_ONE_BY_ONE = object()  # _insert_burst: this order is still to be written on its own


class _NotWritten(Exception):
    """The ledger did not take an order (write-ahead failed); `error` is why."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class WriteAhead(Placement):
    """Takes accepted decisions: every order is in the ledger before it goes to the broker."""

    # -- accepted decisions -> the broker -------------------------------------------------------
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
        if self.ledger_taken and fresh:
            log.critical("accepted decisions not placed: another OMS holds the order ledger", extra={
                "count": len(fresh), "holder": self.ledger_taken})
            await self._not_sent(list(fresh.values()), self._ledger_taken_reason, "ledger taken")
            return
        max_age = self.settings.max_decision_age_s
        too_old = [d for d in fresh.values() if max_age and decision_age_s(d) > max_age]
        if too_old:
            for d in too_old:
                del fresh[d.order.client_order_id]
            log.warning("accepted decisions too old to place; recorded as not sent", extra={
                "count": len(too_old), "oldest_s": round(max(decision_age_s(d) for d in too_old), 1)})
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
            if acks:  # first: its orders' broker events wait until their acknowledgements are booked (or given up)
                self._in_flight(self._acks_later(acks), "oms:acks")
            async with self._publishing:  # before any booking: transition() publishes what is written first
                await self._publish_written()

    def _ledger_taken_reason(self, decision: t.RiskDecision) -> str:
        return (f"not sent: another OMS holds the order ledger ({self.ledger_taken}); two would place and book orders "
                "on one ledger")

    def _too_old_reason(self, decision: t.RiskDecision) -> str:
        since = "its signal came from a tick" if decision.order.tick_recv_ns else "risk decided it"
        return (f"not sent: {since} {decision_age_s(decision):.1f} s ago, more than [oms] "
                f"max_decision_age_s {self.settings.max_decision_age_s:g} s (the OMS was down or held up); the "
                "market has moved since")

    # -- the write-ahead ------------------------------------------------------------------------
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

    # -- decisions not placed -------------------------------------------------------------------
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
