"""What `neopulse ctl`'s arguments take, each an argparse type: a usage error (exit 2) says what is expected.

Prices in rupees become exact paise (never rounded); limits and parameters are NAME=VALUE pairs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _usage_error(parse: Callable[[str], T], text: str) -> T:
    """parse(text), its ValueError (whose message says what is expected) made argparse's usage error."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rupees(text: str) -> int:
    from shared.money import exact_paise

    return _usage_error(exact_paise, text)


def order_id(text: str) -> str:
    from shared.ids import MAX_TEXT_CHARS

    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise argparse.ArgumentTypeError(f"expected an id of 1-{MAX_TEXT_CHARS} characters, got {text!r}")
    return text.strip()


def limit_change(text: str) -> tuple[str, Any]:
    """NAME=VALUE of a RiskLimits field, the value in the field's type (a usage error names what is wrong)."""
    from services.notifier import setting_args

    return _usage_error(setting_args.limit_change, text)


def param_change(text: str) -> tuple[str, str]:
    from services.notifier import setting_args

    return _usage_error(setting_args.param_change, text)


def count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)
