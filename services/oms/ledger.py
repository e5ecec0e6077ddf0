"""The order ledger interface: the OMS writes every order here before the broker sees it.

PgLedger (PostgreSQL, services/oms/ledger_pg.py) and MemoryLedger (below, no database) implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol

from shared.clock import day_of
from shared.contracts import trading_pb2
from shared.order_terms import Terms

TERMINAL = frozenset({trading_pb2.ORDER_STATUS_TRADED, trading_pb2.ORDER_STATUS_REJECTED,
                      trading_pb2.ORDER_STATUS_CANCELLED})


class Ledger(Protocol):
    durable: bool  # survives the process: what it recorded is there for the next one

    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        """Write-ahead insert (status PENDING_NEW). Returns the existing order instead
        when order.client_order_id is already in the ledger: the caller must then not place it."""

    async def insert_many(self, orders: Sequence[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]
                          ) -> list[trading_pb2.OrderUpdate | None]:
        """insert_new for a burst of orders, in one transaction (one flush to disk): all written or none (an
        exception); for each, what insert_new returns."""

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        """Persist one transition: the row's status, fills, exchange id, reason and updated_at;
        append the update to order_events; merge `audit` (broker request/response) into metadata.
        Audit values are JSON-able or protobuf messages (stored as their JSON form).
        An update with a lower sequence than the order's last is kept as an event only (the order never moves
        back); one whose (internal_id, sequence > 0) was recorded before is a no-op (a retry).
        Raises KeyError for an order never inserted."""

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        """By internal_id or client_order_id."""

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        """Orders not in a terminal state (for reconciliation at start-up)."""

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        """Newest first: by creation time (microseconds), then in the order written."""

    async def filled_before(self, day: date, products: Sequence[int]) -> list[trading_pb2.OrderUpdate]:
        """The orders of these products created before `day` that have fills, oldest first (as list_orders orders
        them): the positions a paper account carries into `day` (services/oms/reconcile.py)."""

    async def max_sequence(self) -> int:
        """Highest OrderUpdate.sequence recorded (the OMS continues from it after a restart)."""

    async def last_decision_sequence(self) -> int:
        """Highest sequence of the risk decisions written ahead, 0 for none (a restarted OMS in split mode takes
        risk's decisions from after it: those made while it was away are not lost)."""

    async def decisions_accounted(self) -> int:
        """What save_decisions_accounted kept last, 0 for nothing: split mode resumes risk's decisions after the higher
        of it and last_decision_sequence."""

    async def save_decisions_accounted(self, sequence: int) -> None:
        """Keep `sequence`, below which every risk decision was received or reported lost (split mode, at a clean
        stop), so that the next OMS does not report a loss again."""

    async def fill_charges(self, day: date) -> dict[str, int]:
        """Charges of the recorded fills of the orders created on `day`, by internal_id (rebuilding positions)."""

    async def history(self, internal_id: str) -> list[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]:
        """Every transition recorded for the order, oldest first (by sequence), each with its audit."""

    async def changed_terms(self, internal_ids: Sequence[str]) -> dict[str, set[Terms]]:
        """For each of these orders changed by NeoPulse: every terms a change of it (MODIFY_PENDING, its audit's
        modify_request) moved it from or to. After a restart, a broker row showing one of them is a change of ours
        that did not hold, not one made elsewhere."""


def modify_terms(request: dict[str, Any]) -> set[Terms]:
    """The terms an audit's modify_request moved the order from and to."""
    return {(int(terms["quantity"]), int(terms["price_paise"]), int(terms["trigger_price_paise"]))
            for terms in (request["from"], request["to"])}


class MemoryLedger:
    """The Ledger in process memory, for runs without a database (lost on restart) and for tests."""

    durable = False

    def __init__(self) -> None:
        self._rows: dict[str, trading_pb2.OrderUpdate] = {}
        self._by_client: dict[str, str] = {}
        self._created_ns: dict[str, int] = {}
        self.events: list[trading_pb2.OrderUpdate] = []
        self._event_audits: list[dict[str, Any]] = []  # each event's audit, as order_events' payload keeps it
        self._event_keys: set[tuple[str, int]] = set()
        self.metadata: dict[str, dict[str, Any]] = {}
        self._max_sequence = 0
        self._accounted = 0

    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        existing = self._by_client.get(order.client_order_id)
        if existing is not None:
            return _copy(self._rows[existing])
        if order.internal_id in self._rows:  # as PgLedger: its primary key refuses the second row
            raise ValueError(f"internal_id {order.internal_id} already belongs to another order")
        row = _copy(order)
        row.status = trading_pb2.ORDER_STATUS_PENDING_NEW
        self._rows[row.internal_id] = row
        self._by_client[row.client_order_id] = row.internal_id
        self._created_ns[row.internal_id] = row.ts_ns
        self.metadata[row.internal_id] = dict(audit)
        self._append_event(row, audit)
        return None

    async def insert_many(self, orders: Sequence[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]
                          ) -> list[trading_pb2.OrderUpdate | None]:
        for order, _ in orders:  # all or none, as one transaction
            if order.client_order_id not in self._by_client and order.internal_id in self._rows:
                raise ValueError(f"internal_id {order.internal_id} already belongs to another order")
        return [await self.insert_new(order, audit) for order, audit in orders]

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        cur = self._rows.get(update.internal_id)
        if cur is None:
            raise KeyError(f"order {update.internal_id} is not in the ledger; insert_new it first")
        if not self._append_event(update, audit):
            return  # recorded before (a retry)
        if update.sequence and update.sequence < cur.sequence:
            return  # older than the last update recorded: kept as an event, the row does not move back
        row = _copy(update)
        row.sequence = max(cur.sequence, update.sequence)  # sequence 0 (unstamped) applies but keeps the last one
        if not row.exchange_order_id:
            row.exchange_order_id = cur.exchange_order_id
        self._rows[update.internal_id] = row
        self.metadata[update.internal_id].update(audit)

    def _append_event(self, u: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> bool:
        """As order_events: one event per (internal_id, sequence > 0); False when it is there already."""
        key = (u.internal_id, u.sequence)
        if u.sequence > 0 and key in self._event_keys:
            return False
        self._event_keys.add(key)
        self.events.append(_copy(u))
        self._event_audits.append(dict(audit))
        self._max_sequence = max(self._max_sequence, u.sequence)
        return True

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        internal_id = order_id if order_id in self._rows else self._by_client.get(order_id)
        return _copy(self._rows[internal_id]) if internal_id is not None else None

    def _oldest_first(self) -> list[str]:
        """By creation time in microseconds (as PgLedger's created_at), then in the order written."""
        return sorted(self._rows, key=lambda internal_id: self._created_ns[internal_id] // 1000)  # stable

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        return [_copy(r) for r in map(self._rows.__getitem__, self._oldest_first()) if r.status not in TERMINAL]

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        out: list[trading_pb2.OrderUpdate] = []
        for internal_id in reversed(self._oldest_first()):
            if len(out) >= limit:
                break
            row = self._rows[internal_id]
            if open_only and row.status in TERMINAL:
                continue
            if strategy_tag and row.request.strategy_tag != strategy_tag:
                continue
            if day is not None and day_of(self._created_ns[internal_id]) != day:
                continue
            out.append(_copy(row))
        return out

    async def filled_before(self, day: date, products: Sequence[int]) -> list[trading_pb2.OrderUpdate]:
        rows = (self._rows[internal_id] for internal_id in self._oldest_first()
                if day_of(self._created_ns[internal_id]) < day)
        return [_copy(row) for row in rows if row.filled_quantity > 0 and row.request.product in products]

    async def max_sequence(self) -> int:
        return self._max_sequence

    async def last_decision_sequence(self) -> int:
        return max((audit["decision"].sequence for audit in self.metadata.values() if "decision" in audit), default=0)

    async def decisions_accounted(self) -> int:
        return self._accounted

    async def save_decisions_accounted(self, sequence: int) -> None:
        self._accounted = max(self._accounted, sequence)

    async def history(self, internal_id: str) -> list[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]:
        found = [(i, _copy(e), a) for i, (e, a) in enumerate(zip(self.events, self._event_audits, strict=True))
                 if e.internal_id == internal_id]
        return [(e, a) for _, e, a in sorted(found, key=lambda f: (f[1].sequence, f[0]))]

    async def changed_terms(self, internal_ids: Sequence[str]) -> dict[str, set[Terms]]:
        # Not durable: only the order's last change is kept (its metadata), which is what a test of it needs.
        return {iid: modify_terms(self.metadata[iid]["modify_request"]) for iid in internal_ids
                if "modify_request" in self.metadata.get(iid, {})}

    async def fill_charges(self, day: date) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            if e.last_fill_charges_paise and day_of(self._created_ns[e.internal_id]) == day:
                out[e.internal_id] = out.get(e.internal_id, 0) + e.last_fill_charges_paise
        return out


def _copy(msg: trading_pb2.OrderUpdate) -> trading_pb2.OrderUpdate:
    out = trading_pb2.OrderUpdate()
    out.CopyFrom(msg)
    return out
