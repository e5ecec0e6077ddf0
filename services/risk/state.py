"""Where risk keeps what must outlive a restart: the kill switch, the day's trading state, and how far its decisions
went when it stopped (split mode: what a restarted risk tells the OMS's bridge).

PgRiskState (the risk_state table, migration 0006) when a database is on; MemoryRiskState otherwise (it lasts as
long as the process: a restarted module in the same process finds it, a restarted process does not).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from shared.db.jsonb import jsonb_dumps

ROW = "trading"
# Saved beside the trading state: Published's record, and whether the process that saved it has stopped.
PUBLISHED, UNKNOWN_BELOW, STOPPED = "decisions_published", "decisions_unknown_below", "stopped_cleanly"


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
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()", ROW, jsonb_dumps(state))


class Published:
    """Where risk's decisions got to, across its processes: `highest`, the highest sequence published by kind ("all",
    "accepted", "rejections": the kinds of StreamDecisions' filters); `unknown_below`, a process that crashed (left
    no record at a clean stop) may have published decisions below it, which no one can tell."""

    def __init__(self, started_at: int) -> None:
        """`started_at`: this process publishes above it; until a record says otherwise, all below is unknown."""
        self.highest = {"all": 0, "accepted": 0, "rejections": 0}
        self.unknown_below = started_at

    def carry_over(self, saved: dict[str, Any] | None) -> None:
        """Take over the record the previous processes left: their marks (each at least what they say), and, when the
        last one stopped cleanly, what was unknown before it; a crash leaves everything before this process unknown."""
        marks = saved.get(PUBLISHED) if saved else None
        if isinstance(marks, dict):
            for kind, sequence in marks.items():
                if kind in self.highest and isinstance(sequence, int):
                    self.highest[kind] = max(self.highest[kind], sequence)
        if saved and stopped_cleanly(saved) and isinstance(saved.get(UNKNOWN_BELOW), int):
            self.unknown_below = saved[UNKNOWN_BELOW]

    def note(self, sequence: int, accepted: bool) -> None:
        self.highest["all"] = self.highest["accepted" if accepted else "rejections"] = sequence

    def saved_with(self, state: dict[str, Any], stopped: bool) -> dict[str, Any]:
        """`state` as saved: with this record, and whether this process has stopped (published its last)."""
        return {**state, PUBLISHED: dict(self.highest), UNKNOWN_BELOW: self.unknown_below, STOPPED: stopped}


def stopped_cleanly(saved: dict[str, Any]) -> bool:
    """The saved state is a clean stop's: its record of the decisions is complete."""
    return saved.get(STOPPED) is True
