"""Test helpers shared by every test package: waiting for an event without sleeping a fixed time, draining a
replay."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.ingestion.replay import ReplaySource


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


async def stop_worlds(tasks: list[asyncio.Task[Any]], oms_modules: list[Any]) -> None:
    """A test world's teardown: its tasks cancelled, the last started first, then each OMS's ledger lease released
    (a PgLedger's lease holds a connection of its own until then)."""
    for task in reversed(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for module in oms_modules:
        if module.lease is not None:
            await module.lease.release()


async def replay_all(source: ReplaySource, within: float = 5.0) -> list[list[Any]]:
    """Every tick batch (as lists of ticks) until the replay says it is done; one that never ends fails here."""
    if source.symbols:
        await source.instruments()
    stream, out = source.batches(), []
    try:
        async with asyncio.timeout(within):
            while True:
                nxt = asyncio.ensure_future(anext(stream))
                ended = asyncio.ensure_future(source.done.wait())
                await asyncio.wait({nxt, ended}, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                if not nxt.done():
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    return out
                out.append(list(nxt.result().ticks))
    finally:
        await stream.aclose()
