"""JSON text that PostgreSQL's jsonb takes whatever the strings in it hold.

jsonb refuses NUL (the \\u0000 json.dumps writes for it) and a lone surrogate: one in a free-text field a caller
filled (a kill switch's reason, a pause's) would make the whole save fail, and what it guards would not survive a
restart. Each is replaced by U+FFFD, the replacement character: the text shows that something was there.
"""

from __future__ import annotations

import json
import re
from typing import Any

_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")  # NUL, and a surrogate (in a str, always an unpaired one)


def jsonb_dumps(value: Any) -> str:
    """json.dumps(storable(value))."""
    return json.dumps(storable(value))


def storable(value: Any) -> Any:
    """`value` with every string (keys too) one jsonb takes."""
    if isinstance(value, str):
        return _NOT_JSONB.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
