"""The order ledger interface: the OMS writes every order here before the broker sees it.

PgLedger (PostgreSQL, services/oms/ledger_pg.py) and MemoryLedger (no database) implement it.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Protocol

from shared.contracts import trading_pb2

TERMINAL = frozenset({trading_pb2.ORDER_STATUS_TRADED, trading_pb2.ORDER_STATUS_REJECTED,
                      trading_pb2.ORDER_STATUS_CANCELLED})


class Ledger(Protocol):
    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        """Write-ahead insert (status PENDING_NEW). Returns the existing order instead
        when order.client_order_id is already in the ledger: the caller must then not place it."""

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        """Persist one transition: the row's status, fills, exchange id, reason and updated_at;
        append the update to order_events; merge `audit` (broker request/response) into metadata."""

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        """By internal_id or client_order_id."""

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        """Orders not in a terminal state (for reconciliation at start-up)."""

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        """Newest first."""

    async def max_sequence(self) -> int:
        """Highest OrderUpdate.sequence recorded (the OMS continues from it after a restart)."""
