"""Notifier settings: the token from a file or env, kept secret; chats from the TOML file."""

from __future__ import annotations

import pytest

from services.notifier.config import NotifierSettings
from shared.config import load
from shared.errors import ConfigError


def test_the_bot_is_off_without_a_token():
    settings = load(NotifierSettings, {})

    assert settings.telegram_enabled is False


def test_the_token_is_read_from_the_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("123:abc\n")

    settings = load(NotifierSettings, {"notifier": {"telegram_bot_token_file": str(path)}})

    assert settings.telegram_bot_token.get_secret_value() == "123:abc"
    assert "123:abc" not in repr(settings)


def test_a_missing_token_file_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"telegram_bot_token_file .*missing.* cannot be read"):
        load(NotifierSettings, {"notifier": {"telegram_bot_token_file": str(tmp_path / "missing")}})


def test_env_overrides_the_file_for_chat_ids(monkeypatch):
    monkeypatch.setenv("NEOPULSE_NOTIFIER_ALLOWED_CHAT_IDS", "[7, 8]")

    settings = load(NotifierSettings, {"notifier": {"allowed_chat_ids": [1]}})

    assert settings.allowed_chat_ids == [7, 8]


def test_without_admins_every_allowed_chat_is_admin_and_with_admins_only_they_are():
    open_ = NotifierSettings(allowed_chat_ids=[1, 2])
    strict = NotifierSettings(allowed_chat_ids=[1, 2], admin_chat_ids=[2])

    assert [open_.is_admin(c) for c in (1, 2, 3)] == [True, True, False]
    assert [strict.is_admin(c) for c in (1, 2, 3)] == [False, True, False]
