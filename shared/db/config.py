"""Database settings: pool size, tick partitions and retention, the tick writer's batching and buffer.

Env prefix NEOPULSE_DB_, TOML table [database]; the URL itself is AppSettings.database_url (NEOPULSE_DATABASE_URL).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings


class DatabaseSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_DB_", extra="forbid", validate_default=True)
    section = "database"

    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=500)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # A statement waiting this long for a row or table lock gives up (PostgreSQL's lock_timeout) instead of waiting
    # for whoever holds it (a psql session left in a transaction): the order ledger's write then fails and is
    # retried, said in a CRITICAL notification, rather than every order transition queueing behind it. 0 = never.
    lock_timeout_ms: int = Field(default=5_000, ge=0, le=600_000)
    # market_ticks: partitions created for today + this many days; partitions older than retention dropped.
    partitions_ahead_days: int = Field(default=3, ge=0, le=366)
    tick_retention_days: int = Field(default=30, ge=1)
    # Tick writer: COPY when this many rows wait, or every flush_interval_ms, whichever comes first.
    writer_batch_rows: int = Field(default=20_000, ge=1)
    writer_flush_interval_ms: float = Field(default=200.0, gt=0)
    # Rows held while the database is away; ticks beyond it are dropped and counted. A row takes ~650 bytes of
    # memory here: the default is ~330 MB, a quarter of an hour of a 200-instrument depth feed.
    writer_buffer_rows: int = Field(default=500_000, ge=1)
    # A tick this far from the writer's clock is rejected (counted) as bad data.
    max_tick_future_s: float = Field(default=86_400.0, gt=0)
    max_tick_past_s: float = Field(default=7 * 86_400.0, gt=0)
    # Order ledger: the write-ahead of every order waits for the server's flush to disk (synchronous_commit as
    # the server has it); the transitions after it (acknowledgements, fills, cancels) do not unless this is true:
    # they are in the database at once, on disk within ~0.6 s, and a server crash in that window is made good by
    # the restart's reconciliation with the broker (services/oms/ledger_pg.py). True: a flush per transition.
    ledger_durable_updates: bool = False
