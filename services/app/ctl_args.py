"""What `neopulse ctl`'s arguments take, each an argparse type: a usage error (exit 2) says what is expected.

Prices in rupees become exact paise (never rounded); limits and parameters are NAME=VALUE pairs.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def rupees(text: str) -> int:
    from shared.money import exact_paise

    try:
        return exact_paise(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def order_id(text: str) -> str:
    from shared.ids import MAX_TEXT_CHARS

    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise argparse.ArgumentTypeError(f"expected an id of 1-{MAX_TEXT_CHARS} characters, got {text!r}")
    return text.strip()


def limit_change(text: str) -> tuple[str, Any]:
    """NAME=VALUE of a RiskLimits field, the value in the field's type (a usage error names what is wrong)."""
    from google.protobuf.descriptor import FieldDescriptor

    from shared.contracts import risk_pb2

    name, eq, value = text.partition("=")
    fields = risk_pb2.RiskLimits.DESCRIPTOR.fields_by_name
    field = fields.get(name.strip())
    if not eq or field is None:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(fields)}; got {text!r}")
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
            number = int(value)
            if not -(2**63) <= number < 2**63:
                raise ValueError(value)
            return field.name, number
    except ValueError:
        kind = {FieldDescriptor.TYPE_BOOL: "true or false", FieldDescriptor.TYPE_DOUBLE: "a number"}.get(
            field.type, "a whole number")
        raise argparse.ArgumentTypeError(f"{field.name}: expected {kind}, got {value!r}") from None
    return field.name, value


def param_change(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not (eq and name.strip() and value.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. rsi_period=10, got {text!r}")
    return name.strip(), value.strip()


def count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)
