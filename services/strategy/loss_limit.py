"""A strategy's max_daily_loss stop across IST days: StrategyEngine.loss_turn stops it for the day it is reached, and
its first turn of a later day lifts the stop, putting back any pause the stop lay over. Plain objects; the engine asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.strategy.plugins import Strategy
from shared.clock import ist_datetime, ist_day_number
from shared.contracts import strategy_pb2

LOSS_STOPPED = "daily loss limit"  # how the pause_reason of the stop begins (engine.sends_nothing reads it too)


@dataclass(frozen=True)
class Pause:
    """A pause as a strategy carries it (StrategyEngine.set_paused): why, by whom, since when."""

    reason: str
    by: strategy_pb2.PausedBy
    at_ns: int

    @classmethod
    def of(cls, strategy: Strategy) -> Pause:
        return cls(strategy.pause_reason, strategy.paused_by, strategy.paused_at_ns)

    @classmethod
    def from_saved(cls, saved: Any) -> Pause | None:
        """What saved() gave, or None for anything else (none saved: an older state)."""
        if not isinstance(saved, dict) or not isinstance(saved.get("reason"), str):
            return None
        by, at = saved.get("paused_by"), saved.get("paused_at_ns")
        if by not in strategy_pb2.PausedBy.keys() or by == "PAUSED_BY_UNSPECIFIED" or not isinstance(at, int):
            return None
        return cls(saved["reason"], strategy_pb2.PausedBy.Value(by), at)

    def saved(self) -> dict[str, Any]:
        return {"reason": self.reason, "paused_by": strategy_pb2.PausedBy.Name(self.by), "paused_at_ns": self.at_ns}


def loss_stopped(strategy: Strategy) -> bool:
    """Paused by its loss limit's stop, of whatever day."""
    return (strategy.paused and strategy.paused_by == strategy_pb2.PAUSED_BY_NEOPULSE
            and strategy.pause_reason.startswith(LOSS_STOPPED))


class LossStops:
    """The pause each strategy's loss stop lies over, put back when a new day lifts the stop: the operator's (set
    before the stop, or asked for while it holds, which keeps the stop's reason) and NeoPulse's others (positions not
    restored, run-time params no longer valid). Only the day's limit ends with the day."""

    def __init__(self) -> None:
        self._under: dict[str, Pause] = {}

    def stopped(self, name: str, under: Pause | None) -> None:
        """Its loss limit stopped strategy `name`, over the pause it had then (None: none)."""
        if under is None:
            self._under.pop(name, None)
        else:
            self._under[name] = under

    def paused_over(self, strategy: Strategy, pause: Pause) -> None:
        """A pause asked for while its stop holds: kept under it (the first one's, as set_paused keeps the first)."""
        if loss_stopped(strategy):
            self._under.setdefault(strategy.name, pause)

    def forget(self, name: str) -> None:
        """The stop ended otherwise: resumed, or another pause put in its place."""
        self._under.pop(name, None)

    def saved(self, strategy: Strategy) -> dict[str, Any] | None:
        under = self._under.get(strategy.name)
        return under.saved() if under is not None and loss_stopped(strategy) else None

    def restore(self, strategy: Strategy, saved: Any) -> None:
        """After its pause is put back at start: the pause its stop lay over, as saved()."""
        under = Pause.from_saved(saved)
        if under is not None and loss_stopped(strategy):
            self._under[strategy.name] = under

    @staticmethod
    def lift_due(strategy: Strategy, today: int) -> bool:
        """Stopped by its loss limit on an IST day before `today` (the stop's time is its pause's: paused_at_ns)."""
        return loss_stopped(strategy) and ist_day_number(strategy.paused_at_ns) < today

    def lift(self, strategy: Strategy) -> str:
        """End an earlier day's stop (lift_due): the strategy trades again, or takes back the pause the stop lay over.
        Not a resume (StrategyEngine.set_paused): its tokens blocked by orders of unknown outcome stay blocked, the
        operator's to release once the broker's book is checked. Returns what to tell the trader."""
        stopped = f"its daily loss limit stopped it on {ist_datetime(strategy.paused_at_ns):%d %b}; the new day's " \
                  "limit counts from today's P&L"
        under = self._under.pop(strategy.name, None)
        if under is None:
            strategy.paused, strategy.pause_reason = False, ""
            strategy.paused_by, strategy.paused_at_ns = strategy_pb2.PAUSED_BY_UNSPECIFIED, 0
            return f"{stopped}: it trades again"
        strategy.pause_reason, strategy.paused_by, strategy.paused_at_ns = under.reason, under.by, under.at_ns
        who = "you" if under.by == strategy_pb2.PAUSED_BY_OPERATOR else "NeoPulse"
        return f"{stopped}, but it stays paused, by {who}: {under.reason}. Resume it to trade it"
