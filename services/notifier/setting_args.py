"""Risk limits and strategy parameters as a trader types them (Telegram's /limits and /params, `neopulse ctl`):
NAME=VALUE pairs, a limit's value in its RiskLimits field's type. A ValueError's message says what is expected."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from shared.contracts import risk_pb2


def limit_change(text: str) -> tuple[str, Any]:
    """NAME=VALUE of a RiskLimits field -> (the field's name, the value in its type)."""
    name, eq, value = text.partition("=")
    fields = risk_pb2.RiskLimits.DESCRIPTOR.fields_by_name
    field = fields.get(name.strip())
    if not eq or field is None:
        raise ValueError(f"expected NAME=VALUE with NAME one of {', '.join(fields)}; got {text!r}")
    value = value.strip()
    try:
        if field.type == FieldDescriptor.TYPE_BOOL:
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return field.name, value.lower() == "true"
        if field.type == FieldDescriptor.TYPE_DOUBLE:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return field.name, number
        if field.type == FieldDescriptor.TYPE_INT64:
            whole = int(value)
            if not -(2**63) <= whole < 2**63:
                raise ValueError(value)
            return field.name, whole
    except ValueError:
        kind = {FieldDescriptor.TYPE_BOOL: "true or false", FieldDescriptor.TYPE_DOUBLE: "a number"}.get(
            field.type, "a whole number")
        raise ValueError(f"{field.name}: expected {kind}, got {value!r}") from None
    return field.name, value


def param_change(text: str) -> tuple[str, str]:
    """NAME=VALUE of a strategy parameter (the strategy checks the value when it is set). An empty value is one:
    `trend_index=` clears a text parameter (a number's is refused when it is set, naming it)."""
    name, eq, value = text.partition("=")
    if not (eq and name.strip()):
        raise ValueError(f"expected NAME=VALUE, e.g. rsi_period=10, got {text!r}")
    return name.strip(), _unquoted(value.strip())


def param_changes(words: list[str]) -> dict[str, str]:
    """NAME=VALUE pairs as a chat splits them into words: a word without "=" goes on the value before it, so that
    `trend_index=Nifty 50` is one change (quotes around a value are dropped too: `trend_index="Nifty 50"`)."""
    pairs: list[list[str]] = []
    for word in words:
        if "=" in word or not pairs:
            pairs.append(list(param_change(word)))
        else:
            pairs[-1][1] = f"{pairs[-1][1]} {word}".strip()
    return {name: _unquoted(value) for name, value in pairs}


_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}  # phones type curly ones


def _unquoted(value: str) -> str:
    if len(value) >= 2 and _QUOTES.get(value[0]) == value[-1]:
        return value[1:-1]
    return value
