"""The order ledger interface: the OMS writes every order here before the broker sees it.

PgLedger (PostgreSQL, services/oms/ledger_pg.py) and MemoryLedger (below, no database) implement it.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Protocol

from shared.clock import day_of
from shared.contracts import trading_pb2

TERMINAL = frozenset({trading_pb2.ORDER_STATUS_TRADED, trading_pb2.ORDER_STATUS_REJECTED,
                      trading_pb2.ORDER_STATUS_CANCELLED})


class Ledger(Protocol):
    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        """Write-ahead insert (status PENDING_NEW). Returns the existing order instead
        when order.client_order_id is already in the ledger: the caller must then not place it."""

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        """Persist one transition: the row's status, fills, exchange id, reason and updated_at;
        append the update to order_events; merge `audit` (broker request/response) into metadata.
        Audit values are JSON-able or protobuf messages (stored as their JSON form)."""

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        """By internal_id or client_order_id."""

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        """Orders not in a terminal state (for reconciliation at start-up)."""

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        """Newest first."""

    async def max_sequence(self) -> int:
        """Highest OrderUpdate.sequence recorded (the OMS continues from it after a restart)."""

    async def fill_charges(self, day: date) -> dict[str, int]:
        """Charges of the recorded fills of the orders created on `day`, by internal_id (rebuilding positions)."""


class MemoryLedger:
    """The Ledger in process memory, for runs without a database (lost on restart) and for tests."""

    def __init__(self) -> None:
        self._rows: dict[str, trading_pb2.OrderUpdate] = {}
        self._by_client: dict[str, str] = {}
        self._created_ns: dict[str, int] = {}
        self.events: list[trading_pb2.OrderUpdate] = []
        self.metadata: dict[str, dict[str, Any]] = {}
        self._max_sequence = 0

    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        existing = self._by_client.get(order.client_order_id)
        if existing is not None:
            return _copy(self._rows[existing])
        row = _copy(order)
        row.status = trading_pb2.ORDER_STATUS_PENDING_NEW
        self._rows[row.internal_id] = row
        self._by_client[row.client_order_id] = row.internal_id
        self._created_ns[row.internal_id] = row.ts_ns
        self.metadata[row.internal_id] = dict(audit)
        self.events.append(_copy(row))
        self._max_sequence = max(self._max_sequence, row.sequence)
        return None

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        if update.internal_id not in self._rows:
            raise KeyError(f"order {update.internal_id} is not in the ledger; insert_new it first")
        self._rows[update.internal_id] = _copy(update)
        self.events.append(_copy(update))
        self.metadata[update.internal_id].update(audit)
        self._max_sequence = max(self._max_sequence, update.sequence)

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        internal_id = order_id if order_id in self._rows else self._by_client.get(order_id)
        return _copy(self._rows[internal_id]) if internal_id is not None else None

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        return [_copy(r) for r in self._rows.values() if r.status not in TERMINAL]

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        out = []
        for internal_id in reversed(self._rows):  # dicts keep insertion order: newest last
            row = self._rows[internal_id]
            if open_only and row.status in TERMINAL:
                continue
            if strategy_tag and row.request.strategy_tag != strategy_tag:
                continue
            if day is not None and day_of(self._created_ns[internal_id]) != day:
                continue
            out.append(_copy(row))
            if len(out) >= limit:
                break
        return out

    async def max_sequence(self) -> int:
        return self._max_sequence

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
