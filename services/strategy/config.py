"""Strategy settings: the configured strategy instances and candle timing (env NEOPULSE_STRATEGY_).

Validated against the plugin registry at load time, so a bad kind or parameter stops start-up.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from services.strategy.plugins import strategy_class
from shared.config import ModuleSettings, RupeesOrOff


class StrategyConfig(BaseModel):
    """One strategy instance: TOML `[[strategy.strategies]]` with name, kind, symbols and params."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = "MOMENTUM_RSI"
    # Trading symbols (e.g. "RELIANCE-EQ"); empty = every instrument ingestion lists.
    symbols: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    # Rupees (0: off): once its day's P&L (realised + unrealised - charges of its own fills) is this far under
    # zero, the strategy is paused, its working orders cancelled and its positions closed at the market.
    max_daily_loss: RupeesOrOff = Decimal(0)

    @model_validator(mode="after")
    def _kind_and_params_are_known(self) -> StrategyConfig:
        try:
            cls = strategy_class(self.kind)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        try:
            cls.Params.model_validate(self.params)
        except ValidationError as exc:
            raise ValueError(describe_params_error(exc)) from None
        return self


def describe_params_error(exc: ValidationError) -> str:
    """'params.rsi_period: Input should be ...' for each bad field (or params itself for cross-field rules)."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        parts.append(f"params.{field}: {err['msg']}" if field else f"params: {err['msg']}")
    return "; ".join(parts)


def _default_strategies() -> list[StrategyConfig]:
    return [StrategyConfig(name="momentum_rsi", kind="MOMENTUM_RSI")]


class StrategySettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_STRATEGY_", extra="forbid", validate_default=True)
    section = "strategy"

    strategies: list[StrategyConfig] = Field(default_factory=_default_strategies)
    # The timer closes a quiet instrument's candle this long after its minute ends (clock time), so
    # ticks still in flight for that minute (feed lag, queues) are not dropped as late. Keep it above
    # the feed's lag behind the clock; an active instrument's candle closes on its next tick anyway.
    close_grace_ms: int = Field(default=2_000, ge=0, le=60_000)
    # How often (real time) the timer looks for candles to close.
    close_check_ms: int = Field(default=200, ge=10, le=10_000)
    # Publish closed candles on Topic.CANDLES (the OMS's virtual broker fills from them).
    publish_candles: bool = True
    # Cancel a strategy's order still working this long after it was placed (clock seconds; 0 = never): its
    # signal is stale, and while it works its strategy can neither enter that token again nor exit the part
    # that filled. 5 minutes = five 1-minute candles.
    cancel_working_after_s: float = Field(default=300.0, ge=0)
    # At start, with a database: the strategies are warmed up from the candles of the stored ticks (today's, and
    # earlier days' as far as their warm-ups need) within this many seconds; slower or failing, they start cold
    # (a WARNING says so) and warm up on live candles; a backtest waits however long the read takes, and a read that
    # fails stops it. 0 = always start cold.
    warm_up_timeout_s: float = Field(default=20.0, ge=0, le=600)

    @model_validator(mode="after")
    def _names_are_unique(self) -> StrategySettings:
        names = [s.name for s in self.strategies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"strategy names must be unique; repeated: {', '.join(dupes)}")
        return self
