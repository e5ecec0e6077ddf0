"""Which order updates change a working order's terms (quantity, limit price, trigger) as a trader sees them.

Remembers each order's terms as the broker last worked it, from the order updates the notifier is given; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from services.notifier.control import TERMINAL
from shared.contracts import trading_pb2 as t
from shared.order_terms import Terms, terms_of

# Where the broker works the order with the terms its update carries. MODIFY_PENDING carries terms asked for, not
# yet taken (the broker's answer may bring back the old ones); CANCEL_PENDING may follow it before that answer.
WORKED = frozenset({t.ORDER_STATUS_OPEN, t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED})
KEPT = WORKED | {t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED}  # ... and those it was placed with
MAX_ORDERS = 10_000  # orders remembered; the least recently updated go first (an order whose end was never seen)


class TermsWatch:
    """`changed(update)`: the terms an update replaced, when it moves a working order to other terms than those it
    was last worked (or placed) with; None otherwise. So a change asked for says nothing until the broker has
    answered it, a refused one (the old terms back) says nothing at all, and an update that only moves the status,
    a fill or the exchange id along says nothing here. An order first seen working (placed before the notifier
    started) is remembered from then on: what it had before is unknown, so that first update says nothing."""

    def __init__(self, max_orders: int = MAX_ORDERS) -> None:
        self.max_orders = max_orders
        self._terms: OrderedDict[str, Terms] = OrderedDict()  # internal id -> terms last worked or placed with

    def changed(self, update: t.OrderUpdate) -> Terms | None:
        iid = update.internal_id
        if update.status in TERMINAL:
            self._terms.pop(iid, None)
            return None
        if update.status not in KEPT:
            return None
        before = self._terms.pop(iid, None)
        now = self._terms[iid] = terms_of(update.request)
        while len(self._terms) > self.max_orders:
            self._terms.popitem(last=False)
        return before if update.status in WORKED and before is not None and before != now else None

    def __len__(self) -> int:
        return len(self._terms)
