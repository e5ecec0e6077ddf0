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
    """NAME=VALUE of a strategy parameter (the strategy checks the value when it is set)."""
    name, eq, value = text.partition("=")
    if not (eq and name.strip() and value.strip()):
        raise ValueError(f"expected NAME=VALUE, e.g. rsi_period=10, got {text!r}")
    return name.strip(), value.strip()
