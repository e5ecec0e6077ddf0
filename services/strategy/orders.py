"""The strategies' working orders as the strategy module handles them: those left working too long (to cancel) and
the changes and cancels the strategies ask of theirs (to send as the OMS's ModifyOrder and CancelOrder), one of
them per order at a time.

No I/O: the engine feeds it order updates and the plugins' OrderChanges and OrderCancels; the module sends what it
returns.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from services.strategy.plugins import TERMINAL, OrderCancel, OrderChange, Strategy
from shared.contracts import oms_pb2, trading_pb2

log = logging.getLogger(__name__)


class Change(NamedTuple):
    """A strategy's change of its working order in `token`, to send as the OMS's ModifyOrder, or its cancel, as
    CancelOrder."""

    strategy: str
    reason: str
    request: oms_pb2.ModifyOrderRequest | oms_pb2.CancelOrderRequest
    token: int = 0


class WorkingOrders:
    def __init__(self) -> None:
        # Our strategies' orders still working: client_order_id -> (order id to cancel, clock time first seen
        # working), and when a cancel may be asked (again) for each (see stale).
        self._working: dict[str, tuple[str, int]] = {}
        self._cancel_at: dict[str, int] = {}
        # The changes asked, for the module to send (take_changes), and the order ids whose change is being sent
        # (change_sent).
        self._changes: list[Change] = []
        self._changing: set[str] = set()

    def track(self, update: trading_pb2.OrderUpdate, now_ns: int) -> None:
        """An update of one of our strategies' orders (at clock time `now_ns`). An order changed by hand is the
        trader's from then on: not cancelled as stale either."""
        cid = update.client_order_id or update.request.client_order_id
        if not cid:
            return
        if update.status in TERMINAL or update.changed_by_hand:
            self._working.pop(cid, None)
            self._cancel_at.pop(cid, None)
        elif cid not in self._working:
            self._working[cid] = (update.internal_id or cid, now_ns)

    def stale(self, now_ns: int, max_age_ns: int, retry_ns: int) -> list[str]:
        """Order ids of our strategies' orders working for max_age_ns or longer, each offered again every retry_ns
        while it works: its signal is stale (a limit entry the market left behind), and while it works its
        strategy can neither enter again nor exit what part of it filled. Cancelled, it is settled by its update."""
        out = []
        for cid, (order_id, since) in self._working.items():
            if now_ns - since >= max_age_ns and now_ns >= self._cancel_at.get(cid, 0):
                self._cancel_at[cid] = now_ns + retry_ns
                out.append(order_id)
        return out

    def ask(self, strategy: Strategy, change: OrderChange) -> None:
        """Queue a strategy's change of its working order (take_changes), as the OMS's ModifyOrder with the terms
        that differ from the order's; dropped when there is no such order, nothing differs, a change of the
        order is still in flight (ours being sent, or one pending at the broker), or a trader has changed the order
        (changed_by_hand: theirs from then on; the OMS would refuse it too)."""
        working = strategy.working_order(change.token)
        if working is None or working.changing or working.order_id in self._changing or working.changed_by_hand:
            log.debug("order change not sent: no working order, a change of it in flight, or changed by hand",
                      extra={"strategy": strategy.name, "token": change.token})
            return
        terms = [new if new and new != old else 0 for new, old in (
            (change.quantity, working.quantity), (change.limit_price_paise, working.limit_price_paise),
            (change.trigger_price_paise, working.trigger_price_paise))]
        if not any(terms):
            return
        working.changes += 1
        self._changing.add(working.order_id)
        self._changes.append(Change(strategy.name, change.reason, oms_pb2.ModifyOrderRequest(
            order_id=working.order_id, quantity=terms[0], price_paise=terms[1], trigger_price_paise=terms[2],
            strategy_tag=strategy.name), change.token))

    def cancel(self, strategy: Strategy, cancel: OrderCancel) -> None:
        """Queue a strategy's cancel of its working order (take_changes, as the OMS's CancelOrder); dropped as a
        change is (ask), and while the broker has a cancel of it pending."""
        working = strategy.working_order(cancel.token)
        if (working is None or working.order_id in self._changing or working.changed_by_hand
                or working.status == trading_pb2.ORDER_STATUS_CANCEL_PENDING):
            log.debug("order cancel not sent: no working order, a change or cancel of it in flight, or changed by "
                      "hand", extra={"strategy": strategy.name, "token": cancel.token})
            return
        self._changing.add(working.order_id)
        self._changes.append(Change(strategy.name, cancel.reason, oms_pb2.CancelOrderRequest(
            order_id=working.order_id), cancel.token))

    @property
    def has_changes(self) -> bool:
        return bool(self._changes)

    def take_changes(self) -> list[Change]:
        """The order changes and cancels the strategies asked for since the last call, to send (each then
        change_sent)."""
        out, self._changes = self._changes, []
        return out

    def change_sent(self, order_id: str) -> None:
        """The OMS answered a change or cancel of `order_id` (either way): the order's strategy may ask another."""
        self._changing.discard(order_id)
