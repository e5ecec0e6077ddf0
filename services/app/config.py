"""Process-wide settings (mode, market source, database, gRPC, metrics), env prefix NEOPULSE_.

Module settings live beside each module; this is what the process itself needs.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared import config as cfg
from shared.config import ModuleSettings, unknown_env


class AppSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_", extra="forbid", validate_default=True)
    section = ""

    # paper: VirtualBroker (orders never reach an exchange); live: KotakBroker, needs --live and credentials.
    mode: Literal["paper", "live"] = "paper"
    # simulator: the bundled Kotak simulator through the real SDK; synthetic: generator straight onto the
    # bus; kotak: the real Kotak SFeed; replay: ticks stored in the database.
    source: Literal["simulator", "synthetic", "kotak", "replay"] = "simulator"
    # Symbols to trade (resolved through the scrip master / instrument master).
    symbols: list[str] = Field(default_factory=lambda: [
        "RELIANCE-EQ", "TCS-EQ", "INFY-EQ", "HDFCBANK-EQ", "SBIN-EQ", "ICICIBANK-EQ", "ITC-EQ", "LT-EQ",
        "AXISBANK-EQ", "BHARTIARTL-EQ"])
    # Indices to follow, as Kotak spells them: "Nifty 50", "Nifty Bank" (nse_cm), "bse_cm:SENSEX". Their values
    # come as ticks (stored, and built into candles like any instrument's); never traded. Kotak's feed has them all;
    # the simulator and the synthetic source Nifty 50 and Nifty Bank; a replay those its day stored.
    indices: list[str] = Field(default_factory=list)
    # Simulated session clock speed for paper runs on generated data (1 = real time, 60 = a minute a second); a
    # replay's pace, where 0 is as fast as the pipeline takes it (a backtest's).
    speed: float = Field(default=1.0, ge=0, le=10_000)
    seed: int = 7
    # source = "replay": the IST trading day to replay from market_ticks (default: the latest stored day).
    replay_day: date | None = None
    # PostgreSQL: an external server when set; otherwise an embedded one in data_dir/pgdata.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("database_url", "NEOPULSE_DATABASE_URL", "DATABASE_URL"))
    use_database: bool = True
    data_dir: Path = Path(".neopulse")
    # The interface the gRPC server listens on is [grpc] host (env NEOPULSE_GRPC_HOST): one setting, not two.
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # The interface /metrics listens on: loopback, as the metrics name P&L and positions and ask no token. In a
    # container, 0.0.0.0, with the port published on the host's loopback only (docker-compose.yml).
    metrics_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The event loop never sleeps: one core at 100% keeps the order path in cache (lower tick-to-order
    # latency, see README "Benchmarks"). For a monolith with a core to spare, not for split mode on 2 cores.
    busy_poll: bool = False
    # The whole stop, first signal to exit, however a broker call, a database write or a handler hangs; then the
    # process exits anyway (exit code 3). The service manager must allow more (compose: stop_grace_period).
    stop_budget_s: float = Field(default=60.0, ge=10, le=600)
    # Exchange trading holidays (IST dates, e.g. ["2026-01-26"]): the market counts as closed all day (risk's
    # market-hours check, the feed stall watchdog, paper session days, the daily summary).
    holidays: list[date] = Field(default_factory=list)
    # Sessions held on particular days, over weekends, holidays and the regular session, as "IST-date segment
    # HH:MM-HH:MM": Diwali's Muhurat trading, MCX's evening on an NSE holiday, e.g.
    # ["2026-11-08 nse_cm 18:00-19:15", "2026-03-03 mcx_fo 17:00-23:55"].
    special_sessions: list[str] = Field(default_factory=list)


    @field_validator("special_sessions")
    @classmethod
    def _special_sessions(cls, value: list[str]) -> list[str]:
        for entry in value:
            _special_session(entry)  # a ValueError naming the entry
        return value

    def special_session_map(self) -> dict[date, dict[str, tuple[tuple[int, int], tuple[int, int]]]]:
        out: dict[date, dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {}
        for entry in self.special_sessions:
            day, segment, session = _special_session(entry)
            out.setdefault(day, {})[segment] = session
        return out

    @field_validator("indices")
    @classmethod
    def _indices_are_names(cls, value: list[str]) -> list[str]:
        from services.ingestion.source import parse_index

        for text in value:
            parse_index(text)  # a ConfigError (a ValueError) naming the entry
        return value

    @model_validator(mode="after")
    def _no_standing_clock(self) -> AppSettings:
        if self.speed == 0 and self.source != "replay":
            raise ValueError("speed 0 (as fast as it goes) is for source = replay; a generated session needs a pace")
        return self

    @model_validator(mode="before")
    @classmethod
    def _grpc_host_is_in_its_table(cls, data: Any) -> Any:
        """A top-level grpc_host once decided the interface and hid [grpc] host, which did nothing; now that [grpc]
        host decides, one left at the top level is refused rather than ignored in its turn."""
        if isinstance(data, dict) and "grpc_host" in data:
            raise ValueError("grpc_host at the top level of the config file is not read: move it to host under "
                             "[grpc] (env NEOPULSE_GRPC_HOST), the one setting of the gRPC server's interface")
        return data


def tcp_port(text: str) -> int:
    """argparse type of a port flag: 0-65535, or a usage error naming the flag (a larger number would wrap)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535 (0 = any free port), got {text!r}")
    return port


def duration_s(text: str) -> float:
    """argparse type of --duration: seconds above 0, or a usage error naming the flag (-1 or nan ran nothing and
    exited 0 at once, as if the run had been made; inf is no duration: leave the flag out to run until stopped)."""
    return positive_s(text, " (leave it out to run until stopped)")


def positive_s(text: str, hint: str = "") -> float:
    """argparse type of a flag in seconds: finite and above 0, or a usage error (`hint` ends its message)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected seconds above 0{hint}, got {text!r}")
    return seconds


def settings_classes() -> list[type[ModuleSettings]]:
    """Every settings model of the product (one per config table, and the top level)."""
    from services.app.split import SplitSettings
    from services.ingestion.config import IngestionSettings
    from services.notifier.config import NotifierSettings
    from services.oms.config import OmsSettings
    from services.risk.config import RiskSettings
    from services.strategy.config import StrategySettings
    from shared.db.config import DatabaseSettings
    from shared.grpc.config import GrpcSettings
    from shared.kotak.config import KotakSettings

    return [AppSettings, IngestionSettings, StrategySettings, RiskSettings, OmsSettings, NotifierSettings,
            DatabaseSettings, GrpcSettings, KotakSettings, SplitSettings]


def _special_session(entry: str) -> tuple[date, str, tuple[tuple[int, int], tuple[int, int]]]:
    """"2026-11-08 nse_cm 18:00-19:15" -> (the day, the segment, its session); ValueError saying what is wrong."""
    from shared.clock import SESSIONS_IST, parse_session

    parts = entry.split()
    if len(parts) != 3:
        raise ValueError(f"expected \"YYYY-MM-DD segment HH:MM-HH:MM\", got {entry!r}")
    try:
        day = date.fromisoformat(parts[0])
    except ValueError:
        raise ValueError(f"{entry!r}: {parts[0]!r} is not a YYYY-MM-DD date") from None
    if parts[1] not in SESSIONS_IST:
        raise ValueError(f"{entry!r}: unknown exchange segment {parts[1]!r}; the segments are "
                         + ", ".join(SESSIONS_IST))
    try:
        return day, parts[1], parse_session(parts[2])
    except ValueError as exc:
        raise ValueError(f"{entry!r}: {exc}") from None


def set_market_calendar(settings: AppSettings, toml: dict[str, Any]) -> None:
    """This process's exchange calendar (shared.clock), set once at start before any module is built: the holidays,
    the special sessions and the regular sessions by segment (`[risk] sessions` over the built-in ones). One table
    for the whole process, so that the feed watchdog, the paper broker and the strategies close a segment when risk
    does (MCX agri at 17:00, not at MCX's built-in 23:30). ConfigError for a bad [risk] table."""
    from services.risk.config import RiskSettings
    from shared import clock

    clock.set_holidays(settings.holidays)
    clock.set_special_sessions(settings.special_session_map())
    clock.set_sessions(cfg.load(RiskSettings, toml).market_sessions())


def check_config(toml: dict[str, Any]) -> None:
    """Every table of the config (and its NEOPULSE_* variables) validated up front: a typo in [risk] is reported
    before the database starts and Kotak logs in, not after (each module loads its own when it is built)."""
    for cls in settings_classes():
        if cls is not AppSettings:  # the caller's, with its command-line overrides
            cfg.load(cls, toml)


def warn_unknown_env() -> None:
    """One stderr line per NEOPULSE_* variable no setting reads (a typo that would be ignored silently)."""
    for name in unknown_env(settings_classes()):
        print(f"neopulse: warning: {name} is not a NeoPulse setting and is ignored (a typo? the settings are in "
              "config/example.toml)", file=sys.stderr)
