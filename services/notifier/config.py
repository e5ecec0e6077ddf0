"""Notifier settings: the Telegram bot (token, chats, API server), batching and the daily summary.

Loaded by the app with shared.config.load(NotifierSettings, toml); env prefix NEOPULSE_NOTIFIER_.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.clock import parse_hhmm
from shared.config import ModuleSettings

TELEGRAM_API = "https://api.telegram.org"


class NotifierSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_NOTIFIER_", extra="forbid", validate_default=True)
    section = "notifier"

    # No token (and no token file): the bot is off and notifications are only logged.
    telegram_bot_token: SecretStr | None = None
    # A file holding the token (Docker/systemd secrets); read once at load.
    telegram_bot_token_file: Path | None = None
    # Chats that may command the bot and receive notifications; anyone else gets nothing.
    allowed_chat_ids: list[int] = Field(default_factory=list)
    # When set, only these chats may use the commands that act: /kill, /unkill, /squareoff, /pause, /resume, /cancel,
    # /buy, /sell, /modify, and changes through /limits and /params.
    admin_chat_ids: list[int] = Field(default_factory=list)
    # Bot API server root; tests and self-hosted API servers point it elsewhere.
    telegram_base_url: str = TELEGRAM_API
    # Long-poll timeout of getUpdates.
    polling_timeout_seconds: float = Field(default=10.0, ge=0, le=60)
    # Notifications arriving within this window go out as one message (Bot API rate limits).
    batch_window_seconds: float = Field(default=2.0, ge=0, le=60)
    # A group chat's messages go at least this far apart (the Bot API takes about 20 a minute in one group; past
    # that it answers 429 and makes every message wait).
    group_interval_seconds: float = Field(default=3.0, ge=0, le=60)
    # Bounded outgoing queue; when full the oldest ordinary notification (or an ordinary newcomer, when all queued
    # are urgent) is dropped and counted: urgent ones (kill switch, risk breaches, critical) are dropped last.
    queue_size: int = Field(default=1000, ge=1)
    # Tries of an ordinary message whose answer timed out (each may have reached the chat: a fill told twice reads as
    # two fills). 5xx and refused connections are retried for up to 10 minutes, urgent messages through timeouts too;
    # a 429's retry_after wait does not count.
    send_attempts: int = Field(default=5, ge=1, le=20)
    # First back-off after a transient send error, doubled per attempt up to 15 s.
    retry_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    # "Order modified" in Telegram for a strategy's orders too (a strategy repricing its orders, MOMENTUM_RSI's
    # max_reprices, would send one each); logged either way. A change by hand is always sent: of a manual order, and
    # a trader's change of a strategy's order (in Telegram, a gRPC client or Kotak's app: the strategy leaves it).
    strategy_order_changes: bool = False
    # Daily summary after the close, IST "HH:MM" on weekdays; "" turns it off. A day that traded after it (MCX's
    # evening session) has a second summary, of the whole day, 2 minutes after its last session's close.
    daily_summary_time_ist: str = "15:45"
    # How often the summary schedule looks at the clock (seconds of real time).
    summary_check_seconds: float = Field(default=5.0, gt=0, le=300)
    # A bus request (a command) that takes longer fails with a short reply: "try again" for a read, "may still be
    # in progress, check ..." for a change (kill switch, square-off, pause/resume).
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Wait before trying again when the bot cannot reach the Bot API at start-up.
    bot_start_retry_seconds: float = Field(default=30.0, gt=0, le=3600)
    # The process mode, reported by /status and GetSystemStatus (the app passes AppSettings.mode).
    mode: Literal["paper", "live"] = "paper"

    @field_validator("daily_summary_time_ist")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if value:
            parse_hhmm(value)
        return value

    @field_validator("telegram_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _read_token_file(self) -> NotifierSettings:
        if self.telegram_bot_token is None and self.telegram_bot_token_file is not None:
            try:
                token = self.telegram_bot_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"telegram_bot_token_file {self.telegram_bot_token_file} cannot be read: "
                                 f"{exc.strerror}") from None
            self.telegram_bot_token = SecretStr(token) if token else None
        return self

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None and bool(self.telegram_bot_token.get_secret_value())

    @property
    def notify_chat_ids(self) -> list[int]:
        """Every chat that may talk to the bot hears the notifications (allowed, then admin chats)."""
        return list(dict.fromkeys([*self.allowed_chat_ids, *self.admin_chat_ids]))

    def is_allowed(self, chat_id: int) -> bool:
        return chat_id in self.allowed_chat_ids or chat_id in self.admin_chat_ids

    def is_admin(self, chat_id: int) -> bool:
        """Admin rights: an admin chat, or any allowed chat when no admins are configured."""
        return chat_id in self.admin_chat_ids if self.admin_chat_ids else self.is_allowed(chat_id)

    def follow_migration(self, old_id: int, new_id: int) -> bool:
        """A group Telegram upgraded to a supergroup (a new chat id) keeps its rights under the new id, for this run:
        its members' commands (a /kill among them) would otherwise be dropped as a stranger's. True when it had
        any (the config should then name the new id)."""
        followed = False
        for ids in (self.allowed_chat_ids, self.admin_chat_ids):
            if old_id in ids and new_id not in ids:
                ids.append(new_id)
                followed = True
        return followed
