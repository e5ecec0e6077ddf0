"""Configuration: one pydantic-settings model per module, from a TOML file plus env vars.

Priority: NEOPULSE_<MODULE>_* environment > [<module>] table of the TOML file > secret files > defaults.
Every SecretStr value loaded is handed to shared.logs, which masks it in every log line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin
from urllib.parse import unquote

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from shared import logs
from shared.errors import ConfigError
from shared.money import MAX_PAISE, to_rupees

# A rupee amount in config: whole paise only (1000.105 is refused, not rounded) and within the contract's int64.
Rupees = Annotated[Decimal, Field(gt=0, decimal_places=2, le=to_rupees(MAX_PAISE))]
# The same where 0 turns the limit off.
RupeesOrOff = Annotated[Decimal, Field(ge=0, decimal_places=2, le=to_rupees(MAX_PAISE))]

CONFIG_ENV = "NEOPULSE_CONFIG"
# A directory of secret files, one per setting, named like its env var (NEOPULSE_KOTAK_MPIN, ...):
# docker/compose secrets land in /run/secrets, which is used when it exists and this is not set.
SECRETS_DIR_ENV = "NEOPULSE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"
# The tables a config file may have, one per module's settings (`section`); any other table is a typo
# ([rsik], [Risk]) that would otherwise leave every limit in it at its default, silently.
SECTIONS = ("ingestion", "strategy", "risk", "oms", "notifier", "database", "grpc", "kotak", "split")


class _TomlSection(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        # An empty secret in the file is a placeholder, not a value: it must not hide the secret file.
        self._data = {k: v for k, v in data.items() if not (v == "" and _secret_field(settings_cls, k))}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class _NoEmptySecrets(PydanticBaseSettingsSource):
    """The environment, where an empty secret is no value either: compose's `${NEOPULSE_GRPC_AUTH_TOKEN:-}` passes ""
    when the variable is unset, and that must not hide the secret file (gRPC would run without its token, Telegram
    be off, DATABASE_URL fall back to the embedded database)."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._env = env
        self._secret_keys = {key for name in settings_cls.model_fields if _secret_field(settings_cls, name)
                             for key in _field_keys(settings_cls, name)}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._env.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._env().items() if not (v == "" and k in self._secret_keys)}


class NumbersNotBooleans(BaseModel):
    """TOML's true/false for a number would be read as 1/0 (`price_band_bps = false`: the band off; a strategy's
    `stop_loss_pct = false`: a 0% stop): refused, in module settings and strategy params alike."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and is_numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("must be a number, not true/false")
        return value


class ModuleSettings(BaseSettings, NumbersNotBooleans):
    """Base for every module's settings; `section` names its TOML table ("" = top level)."""

    # Subclasses' model_config is merged over this one. No inf/nan in floats: `timer_interval_ms = inf` (valid
    # TOML) would switch a check off instead of being refused.
    model_config = SettingsConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)
    section: ClassVar[str] = ""
    _toml_data: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _NoEmptySecrets(settings_cls, env_settings), _TomlSection(settings_cls, cls._toml_data),
                file_secret_settings)


S = TypeVar("S", bound=ModuleSettings)


def _secret_field(cls: type[BaseSettings], name: str) -> bool:
    field = cls.model_fields.get(name)
    return field is not None and (field.annotation is SecretStr or SecretStr in get_args(field.annotation))


def _field_keys(cls: type[BaseSettings], name: str) -> set[str]:
    """The keys a source may give the field under: its name and its alias choices."""
    alias = cls.model_fields[name].validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
    return {name, *(c for c in choices if isinstance(c, str))}


def is_numeric(annotation: Any) -> bool:
    """int, float or Decimal, alone or in a union (`int | None`); never bool."""
    if annotation in (int, float, Decimal):
        return True
    return get_origin(annotation) in (Union, UnionType) and any(is_numeric(arg) for arg in get_args(annotation))


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
    if cls.section:
        section = data.get(cls.section, {})
    else:  # the top level: its tables belong to the modules, and must be one of theirs
        section = {k: v for k, v in data.items() if not isinstance(v, dict)}
        unknown = [k for k, v in data.items() if isinstance(v, dict) and k not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown table [{unknown[0]}] in the config file; the tables are "
                              + ", ".join(f"[{name}]" for name in SECTIONS))
    if not isinstance(section, dict):
        raise ConfigError(f"[{cls.section}] in the config file must be a table")
    # The source reads the section from the class for the duration of this one construction;
    # it is reset afterwards so a later direct `Cls()` never sees a stale file.
    cls._toml_data = section
    # The ConfigError is raised after the except blocks: raised inside them it would keep the pydantic error,
    # which holds the input values (a secret among them), as its __context__ for whatever reports it.
    problem = ""
    try:
        settings = cls(**overrides, _secrets_dir=secrets_dir())  # type: ignore[call-arg]  # pydantic-settings init arg
    except ValidationError as exc:
        problem = describe_validation_error(exc, cls)
    except SettingsError as exc:  # an env value pydantic-settings could not even parse (a list not in JSON)
        problem = (f"{exc}; lists and tables in environment variables are JSON, "
                   'e.g. NEOPULSE_SYMBOLS=\'["RELIANCE-EQ", "TCS-EQ"]\'')
    finally:
        cls._toml_data = {}
    if problem:
        raise ConfigError(problem)
    logs.add_secrets(*secret_values(settings))
    return settings


def secret_values(settings: BaseSettings) -> list[str]:
    """The clear text of every SecretStr setting (and the password inside a URL one), for shared.logs to mask."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and (text := value.get_secret_value()):
            values.append(text)
            # scheme://user:password@host: credentials end at the last "@" (as shared.db.database.where_of reads it)
            password = text.partition("://")[2].rpartition("@")[0].partition(":")[2]
            if password:
                values += [password, unquote(password)]
    return values


def unknown_env(classes: Iterable[type[ModuleSettings]], environ: Mapping[str, str] | None = None) -> list[str]:
    """NEOPULSE_* environment variables no setting of `classes` reads: a misspelt one
    (NEOPULSE_RISK_DAILY_LOSS_HALTT) would leave its setting at the default without a word."""
    known = {CONFIG_ENV, SECRETS_DIR_ENV}
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        for name, field in cls.model_fields.items():
            known.add(f"{prefix}{name}".upper())
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
            known |= {c.upper() for c in choices if isinstance(c, str)}
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if k.upper().startswith("NEOPULSE_") and k.upper() not in known)


def secrets_dir() -> str | None:
    """Where secret files are read from: NEOPULSE_SECRETS_DIR, else /run/secrets if present, else nowhere."""
    chosen = os.environ.get(SECRETS_DIR_ENV)
    if chosen:
        if not os.path.isdir(chosen):
            raise ConfigError(f"{SECRETS_DIR_ENV}={chosen} is not a directory; point it at the secret files")
        return chosen
    return DEFAULT_SECRETS_DIR if os.path.isdir(DEFAULT_SECRETS_DIR) else None


def describe_validation_error(exc: ValidationError, cls: type[ModuleSettings]) -> str:
    """One line: each error's table.field, its env var and pydantic's message (never the input value)."""
    env_prefix = cls.model_config.get("env_prefix", "")
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = ".".join(str(p) for p in err["loc"])
        if not field:  # a rule across fields (a model validator): the message names them
            parts.append(f"[{cls.section}]: {msg}" if cls.section else msg)
            continue
        where = f"[{cls.section}].{field}" if cls.section else field
        parts.append(f"{where} (env {env_prefix.upper()}{str(err['loc'][0]).upper()}): {msg}")
    return "invalid configuration: " + "; ".join(parts)
