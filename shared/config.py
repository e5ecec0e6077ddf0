"""Configuration: one pydantic-settings model per module, from a TOML file plus env vars.

Priority: NEOPULSE_<MODULE>_* environment > [<module>] table of the TOML file > defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from shared.errors import ConfigError

CONFIG_ENV = "NEOPULSE_CONFIG"
# A directory of secret files, one per setting, named like its env var (NEOPULSE_KOTAK_MPIN, ...):
# docker/compose secrets land in /run/secrets, which is used when it exists and this is not set.
SECRETS_DIR_ENV = "NEOPULSE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"


class _TomlSection(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class ModuleSettings(BaseSettings):
    """Base for every module's settings; `section` names its TOML table ("" = top level)."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)
    section: ClassVar[str] = ""
    _toml_data: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSection(settings_cls, cls._toml_data), file_secret_settings)


S = TypeVar("S", bound=ModuleSettings)


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """The whole config file as a dict; {} when no file is given or set in NEOPULSE_CONFIG."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; pass --config with an existing TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load(cls: type[S], toml: dict[str, Any] | None = None, **overrides: Any) -> S:
    """Build `cls` from the file's section + env, turning validation errors into one ConfigError."""
    data = toml or {}
    section = data.get(cls.section, {}) if cls.section else {k: v for k, v in data.items() if not isinstance(v, dict)}
    if not isinstance(section, dict):
        raise ConfigError(f"[{cls.section}] in the config file must be a table")
    # The source reads the section from the class for the duration of this one construction;
    # it is reset afterwards so a later direct `Cls()` never sees a stale file.
    cls._toml_data = section
    try:
        return cls(**overrides, _secrets_dir=secrets_dir())  # type: ignore[call-arg]  # pydantic-settings init arg
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, cls)) from None
    except SettingsError as exc:  # an env value pydantic-settings could not even parse (a list not in JSON)
        raise ConfigError(f"{exc}; lists and tables in environment variables are JSON, "
                          'e.g. NEOPULSE_SYMBOLS=\'["RELIANCE-EQ", "TCS-EQ"]\'') from None
    finally:
        cls._toml_data = {}


def secrets_dir() -> str | None:
    """Where secret files are read from: NEOPULSE_SECRETS_DIR, else /run/secrets if present, else nowhere."""
    chosen = os.environ.get(SECRETS_DIR_ENV)
    if chosen:
        if not os.path.isdir(chosen):
            raise ConfigError(f"{SECRETS_DIR_ENV}={chosen} is not a directory; point it at the secret files")
        return chosen
    return DEFAULT_SECRETS_DIR if os.path.isdir(DEFAULT_SECRETS_DIR) else None


def describe_validation_error(exc: ValidationError, cls: type[ModuleSettings]) -> str:
    env_prefix = cls.model_config.get("env_prefix", "")
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(settings)"
        where = f"[{cls.section}].{field}" if cls.section else field
        env = f"{env_prefix}{err['loc'][0]}".upper() if err["loc"] else ""
        parts.append(f"{where} (env {env}): {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)
