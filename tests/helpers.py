"""Test helpers shared by every test package: waiting for an event without sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], within: float = 5.0,
                     every: float = 0.005) -> None:
    """Poll `predicate` (plain or async) until it is true; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(every)
