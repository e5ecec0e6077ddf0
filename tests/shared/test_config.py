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
