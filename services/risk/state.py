"""Where risk keeps what must outlive a restart: the kill switch and the day's trading state.

PgRiskState (the risk_state table, migration 0006) when a database is on; MemoryRiskState otherwise (it lasts as
long as the process: a restarted module in the same process finds it, a restarted process does not).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

ROW = "trading"


class RiskStateStore(Protocol):
    durable: bool  # survives the process

    async def load(self) -> dict[str, Any] | None:
        """The last state saved, or None."""

    async def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (JSON-ready values)."""


class MemoryRiskState:
    durable = False

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None

    async def load(self) -> dict[str, Any] | None:
        return dict(self.saved) if self.saved is not None else None

    async def save(self, state: dict[str, Any]) -> None:
        self.saved = dict(state)


class PgRiskState:
    durable = True

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def load(self) -> dict[str, Any] | None:
        value = await self.pool.fetchval("SELECT value FROM risk_state WHERE name = $1", ROW)
        return json.loads(value) if value is not None else None

    async def save(self, state: dict[str, Any]) -> None:
        await self.pool.execute(
            "INSERT INTO risk_state (name, value) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()", ROW, json.dumps(state))
