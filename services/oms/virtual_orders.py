"""The VirtualBroker's orders: what it keeps of each (VirtualOrder), the event it reports of one, when a DAY order's
validity has ended, and how a ledger order comes back into its book after a restart. No I/O but logging."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.fill_rules import session_window
from services.oms.states import DAY_BOUND, TERMINAL
from shared.clock import ist_day_number
from shared.contracts import trading_pb2 as t
from shared.order_terms import STOPS

log = logging.getLogger(__name__)

_UNSURE_TRIGGER = frozenset({t.ORDER_STATUS_TRIGGER_PENDING, t.ORDER_STATUS_CANCEL_PENDING,
                             t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_PENDING_NEW})


@dataclass
class VirtualOrder:
    id: str
    request: t.OrderRequest
    status: int
    accepted_ns: int
    placed_ns: int  # its DAY validity ends with this IST day (a restored order: the ledger's last update)
    filled: int = 0
    cost_paise: int = 0  # sum of quantity x price over fills
    charges_paise: int = 0
    brokerage_paise: int = 0
    triggered: bool = False
    reason: str = ""
    last_fill: tuple[int, int, int] = (0, 0, 0)  # quantity, price, charges
    # The session it was placed in (fill_rules.session_window), ns; closes_ns 0: placed while its segment was closed.
    opens_ns: int = 0
    closes_ns: int = 0

    @property
    def remaining(self) -> int:
        return self.request.quantity - self.filled

    @property
    def rests_at_limit(self) -> bool:
        """A LIMIT order, or a STOP_LIMIT once triggered: while working and not reached, it rests in the book at its
        limit, and trades there when the market comes to it (fill_rules: resting limits)."""
        kind = self.request.order_type
        return kind == t.ORDER_TYPE_LIMIT or (kind == t.ORDER_TYPE_STOP_LIMIT and self.triggered)

    @property
    def average_price_paise(self) -> int:
        return (self.cost_paise + self.filled // 2) // self.filled if self.filled else 0

    def resting_status(self) -> int:
        """What a working order shows while nothing happens to it."""
        if self.filled:
            return t.ORDER_STATUS_PARTIALLY_FILLED
        return t.ORDER_STATUS_TRIGGER_PENDING if self.request.order_type in STOPS and not self.triggered \
            else t.ORDER_STATUS_OPEN

    def event(self, ts_ns: int) -> BrokerOrderEvent:
        """As a broker reports it: cumulative fills and charges, the last fill in raw."""
        qty, price, charges = self.last_fill
        return BrokerOrderEvent(
            exchange_order_id=self.id, client_order_id=self.request.client_order_id, status=self.status,
            filled_quantity=self.filled, average_price_paise=self.average_price_paise, reason=self.reason,
            charges_paise=self.charges_paise, ts_ns=ts_ns,
            raw={"virtual": True, "last_fill_quantity": qty, "last_fill_price_paise": price,
                 "last_fill_charges_paise": charges},
            quantity=self.request.quantity, price_paise=self.request.price_paise,
            trigger_price_paise=self.request.trigger_price_paise)


def lapsed(request: t.OrderRequest, placed_ns: int, day: int, now_ns: int = 0) -> bool:
    """Whether an order's validity has ended by IST day number `day` (at `now_ns`): an IOC order never rests in a
    book (what did not fill on arrival was cancelled then), a DAY order rests until the end of the day it was placed
    on, one placed in its segment's session until that session's close."""
    if request.validity == t.VALIDITY_IOC:
        return True
    if request.validity not in DAY_BOUND or ist_day_number(placed_ns) < day:
        return request.validity in DAY_BOUND
    return 0 < session_window(request.exchange_segment, placed_ns)[1] <= now_ns


def restored(u: t.OrderUpdate, charges_paise: Mapping[str, int], charge_model: ChargeModel,
             now_ns: int) -> VirtualOrder | None:
    """A ledger order as this broker's book held it before a restart, accepted anew at `now_ns`; None for one that
    book no longer holds (VirtualBroker.restore says which)."""
    placed_ns = u.ts_ns or now_ns
    if u.status not in TERMINAL and lapsed(u.request, placed_ns, ist_day_number(now_ns), now_ns):
        log.info("not restored: its validity has ended", extra={"order_id": u.internal_id})
        return None
    if u.status == t.ORDER_STATUS_CANCEL_PENDING:
        # This broker takes a cancel at once (the OMS sends it even when the ledger refused CANCEL_PENDING),
        # and its book went with the process: the order is gone, as reconciliation then records.
        log.info("not restored: its cancel was under way", extra={"order_id": u.internal_id})
        return None
    request = t.OrderRequest()
    request.CopyFrom(u.request)
    # A stop that is OPEN or has fills has triggered; a pending cancel/modify does not say.
    triggered = request.order_type in STOPS and (u.filled_quantity > 0 or u.status not in _UNSURE_TRIGGER)
    vo = VirtualOrder(id=u.exchange_order_id, request=request, status=u.status, accepted_ns=now_ns,
                      placed_ns=placed_ns, filled=u.filled_quantity,
                      cost_paise=u.filled_quantity * u.average_price_paise,
                      charges_paise=charges_paise.get(u.internal_id, 0), triggered=triggered, reason=u.reason)
    # Its fills before the restart paid brokerage towards the flat cap: later fills pay only the rest.
    vo.brokerage_paise = charge_model.brokerage_paid(request, vo.filled, u.average_price_paise)
    if vo.status not in TERMINAL:
        vo.status = vo.resting_status()
    return vo


def drop(index: dict[int, list[VirtualOrder]], vo: VirtualOrder) -> None:
    """Take `vo` out of a token -> orders index (those awaiting a tick, the stops not triggered yet, the resting
    limits); a token left without any goes, so that on_ticks goes back to checking nothing."""
    listed = index.get(vo.request.token)
    if listed is not None and vo in listed:
        listed.remove(vo)
        if not listed:
            del index[vo.request.token]
