"""Ingestion settings: synthetic feed rate, batching and the stall watchdog (env NEOPULSE_INGESTION_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings


class IngestionSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_INGESTION_", extra="forbid", validate_default=True)
    section = "ingestion"

    # Synthetic source: total ticks per real second across all instruments, and how often a batch goes out.
    ticks_per_second: float = Field(default=2_000.0, gt=0, le=5_000_000)
    batch_interval_ms: float = Field(default=10.0, gt=0, le=10_000)
    # Per-tick volatility of the synthetic random walk, basis points.
    volatility_bps: float = Field(default=1.0, gt=0, le=500)
    # No tick for this many real seconds while the market is open -> notify and reconnect.
    stall_seconds: float = Field(default=15.0, gt=0)
    # Trades arriving this many seconds after their exchange time, while the market is open -> notify once, and when
    # it clears. Above [strategy] close_grace_ms (2 s) plus a second (trade times are whole seconds): a candle leaves
    # out the ticks that come after it closes.
    feed_delay_s: float = Field(default=3.0, gt=0, le=300)
