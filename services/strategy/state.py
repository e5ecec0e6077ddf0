"""Where the strategy module keeps what must outlive a restart, per strategy: a pause (who, why, when), the parameters
changed at run time (SetStrategyParams, `/params`), and the day its loss limit stopped it. Without it a restarted
NeoPulse traded a strategy the operator had paused, with its config file's parameters, and stopped again a strategy
the operator had resumed after its loss limit (StrategyEngine.durable_state / restore_state say what is kept).

PgStrategyState (the strategy_state table, migration 0012) when a database is on; MemoryStrategyState otherwise (it
lasts as long as the process). A replay (backtest) keeps none: its strategies are the config's.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from shared.db.jsonb import jsonb_dumps


class StrategyStateStore(Protocol):
    durable: bool  # survives the process

    async def load(self) -> dict[str, dict[str, Any]]:
        """Every strategy's last saved state, by name."""

    async def save(self, name: str, state: dict[str, Any]) -> None:
        """Replace the saved state of strategy `name` (JSON-ready values)."""


class MemoryStrategyState:
    durable = False

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}

    async def load(self) -> dict[str, dict[str, Any]]:
        return {name: dict(state) for name, state in self.saved.items()}

    async def save(self, name: str, state: dict[str, Any]) -> None:
        self.saved[name] = dict(state)


class PgStrategyState:
    durable = True

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def load(self) -> dict[str, dict[str, Any]]:
        rows = await self.pool.fetch("SELECT name, value FROM strategy_state")
        return {row["name"]: json.loads(row["value"]) for row in rows}

    async def save(self, name: str, state: dict[str, Any]) -> None:
        await self.pool.execute(
            "INSERT INTO strategy_state (name, value) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()", name,
            jsonb_dumps(state))
