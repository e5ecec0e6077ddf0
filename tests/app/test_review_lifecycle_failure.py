"""A module that fails in the monolith, running or starting: the others get the ordered stop (reverse start order,
each stop() called: the OMS records what it will not place, the notifier sends its queue) and the trader is told.

Real parts: the monolith (synthetic market, paper broker, no database) and the fake Bot API for Telegram; the failure
is injected by replacing one module's run() or start().
"""

from __future__ import annotations

import asyncio

import pytest

from services.app.config import AppSettings
from services.app.monolith import Monolith
from services.ingestion.module import IngestionModule
from services.notifier.module import NotifierModule
from services.oms.module import OmsModule
from services.risk.module import RiskModule
from services.strategy.module import StrategyModule
from shared import runtime
from shared.bus import Topic
from shared.contracts import ops_pb2
from tests.notifier.conftest import CHAT, fake_api  # noqa: F401  (its fixture: the fake Bot API)
from tests.notifier.fake_bot_api import TOKEN

pytestmark = pytest.mark.slow

MODULES = (NotifierModule, IngestionModule, OmsModule, RiskModule, StrategyModule)  # start order
RUN_WITHIN_S = 60


def paper_settings() -> AppSettings:
    return AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=60.0, symbols=["SBIN-EQ"])


def record_stops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the modules whose stop() is called, in the order called."""
    stopped: list[str] = []
    for cls in MODULES:
        async def stop(self, _original=cls.stop) -> None:
            stopped.append(self.name)
            await _original(self)

        monkeypatch.setattr(cls, "stop", stop)
    return stopped


def record_critical_notes(app: Monolith) -> list[str]:
    titles: list[str] = []

    async def on_note(note: ops_pb2.Notification) -> None:
        if note.severity == ops_pb2.SEVERITY_CRITICAL:
            titles.append(note.title)

    app.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    return titles



async def test_a_module_whose_run_fails_has_the_others_stopped_in_reverse_order(monkeypatch):
    async def failing_run(self) -> None:
        raise RuntimeError("strategy crashed")

    monkeypatch.setattr(StrategyModule, "run", failing_run)
    stopped = record_stops(monkeypatch)
    app = Monolith(paper_settings(), {})

    with pytest.raises(runtime.TaskFailed, match="strategy failed: RuntimeError: strategy crashed"):
        await asyncio.wait_for(app.run(duration=RUN_WITHIN_S), RUN_WITHIN_S)

    assert stopped == ["strategy", "risk", "oms", "ingestion", "notifier"]


async def test_the_trader_is_told_on_telegram_that_a_failed_module_stops_trading(monkeypatch, fake_api):  # noqa: F811
    toml = {"notifier": {"telegram_bot_token": TOKEN, "telegram_base_url": fake_api.url, "allowed_chat_ids": [CHAT],
                         "batch_window_seconds": 0.05, "polling_timeout_seconds": 1, "daily_summary_time_ist": ""}}
    app = Monolith(paper_settings(), toml)

    async def failing_run(self) -> None:  # once the bot is up: a failure in the middle of the session
        await next(c for c in app.components if c.name == "notifier").bot_started.wait()  # type: ignore[attr-defined]
        raise RuntimeError("strategy crashed")

    monkeypatch.setattr(StrategyModule, "run", failing_run)

    with pytest.raises(runtime.TaskFailed):
        await asyncio.wait_for(app.run(duration=RUN_WITHIN_S), RUN_WITHIN_S)

    texts = [m["text"] for m in fake_api.sent(chat_id=CHAT)]
    assert any("🚨 <b>strategy failed: RuntimeError: strategy crashed; stopping</b>" in t for t in texts), texts


async def test_a_module_failing_to_start_has_those_already_started_stopped_in_reverse_order(monkeypatch):
    """Notifier, ingestion and OMS started (the OMS may have announced its reconciliation), then risk's start fails."""
    async def failing_start(self) -> None:
        raise RuntimeError("risk state could not be read")

    monkeypatch.setattr(RiskModule, "start", failing_start)
    stopped = record_stops(monkeypatch)
    app = Monolith(paper_settings(), {})

    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(app.run(duration=RUN_WITHIN_S), RUN_WITHIN_S)

    assert (stopped, str(runtime.first_leaf(raised.value))) == (["oms", "ingestion", "notifier"],
                                                                 "risk state could not be read")


async def test_a_module_failing_to_start_is_announced_as_critical_before_the_stop(monkeypatch):
    async def failing_start(self) -> None:
        raise RuntimeError("risk state could not be read")

    monkeypatch.setattr(RiskModule, "start", failing_start)
    app = Monolith(paper_settings(), {})
    critical = record_critical_notes(app)

    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(app.run(duration=RUN_WITHIN_S), RUN_WITHIN_S)

    assert critical == ["risk failed to start: RuntimeError: risk state could not be read; stopping"]


async def test_the_failure_notice_masks_credentials_in_the_error_as_the_log_does(monkeypatch):
    secret = "s3cr3t-db-pass"

    async def failing_run(self) -> None:
        raise OSError(f"connection lost to postgresql://neopulse:{secret}@db.internal:5432/neopulse")

    monkeypatch.setattr(StrategyModule, "run", failing_run)
    app = Monolith(AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=60.0,
                               symbols=["SBIN-EQ"]), {})
    critical: list[str] = []

    async def on_note(note: ops_pb2.Notification) -> None:
        if note.severity == ops_pb2.SEVERITY_CRITICAL:
            critical.append(f"{note.title} {note.text}")

    app.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    with pytest.raises(runtime.TaskFailed) as failed:
        await asyncio.wait_for(app.run(duration=60), 60)

    assert critical and not any(secret in text for text in critical), critical  # what goes to Telegram
    assert secret not in str(failed.value)  # what goes to stderr
