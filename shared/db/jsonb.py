"""JSON text that PostgreSQL's jsonb takes whatever the strings in it hold.

jsonb refuses the escape \\u0000 that json.dumps writes for a NUL, so a free-text field a caller filled (a kill
switch's reason, a pause's) would make the whole save fail: NUL is kept as the visible text "\\u0000" instead.
"""

from __future__ import annotations

import json
from typing import Any


def jsonb_dumps(value: Any) -> str:
    """json.dumps(value), with every NUL in its strings (keys too) written as the six characters \\u0000."""
    return json.dumps(_without_nul(value))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value
