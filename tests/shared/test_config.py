"""Config loading: TOML section + env, errors naming the field and env var, no stale file state."""

import pytest
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings, load
from shared.errors import ConfigError


class DemoSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_DEMO_", extra="forbid")
    section = "demo"
    size: int = 1
    name: str = "x"


def test_the_toml_section_sets_values_and_env_overrides_it(monkeypatch):
    monkeypatch.setenv("NEOPULSE_DEMO_NAME", "from-env")
    settings = load(DemoSettings, {"demo": {"size": 5, "name": "from-file"}})
    assert (settings.size, settings.name) == (5, "from-env")


def test_a_bad_value_names_the_table_field_and_env_var():
    with pytest.raises(ConfigError, match=r"\[demo\]\.size \(env NEOPULSE_DEMO_SIZE\)"):
        load(DemoSettings, {"demo": {"size": "lots"}})


def test_an_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="sise"):
        load(DemoSettings, {"demo": {"sise": 3}})


def test_a_later_direct_construction_does_not_reuse_the_last_file():
    load(DemoSettings, {"demo": {"size": 9}})
    assert DemoSettings().size == 1


def test_a_secret_is_read_from_a_file_named_like_its_env_var(tmp_path, monkeypatch):
    from shared.kotak.config import KotakSettings

    (tmp_path / "NEOPULSE_KOTAK_MPIN").write_text("654321")
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", str(tmp_path))
    settings = load(KotakSettings, {})
    assert settings.mpin.get_secret_value() == "654321" and "654321" not in repr(settings)


def test_a_secrets_dir_that_does_not_exist_is_a_config_error(monkeypatch):
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", "/nonexistent/neopulse-secrets")
    with pytest.raises(ConfigError, match="NEOPULSE_SECRETS_DIR"):
        load(DemoSettings, {})
