"""The module lifecycle: every module is a Component started, run and stopped by its process.

A component talks only through the bus it is given.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from shared.bus import Bus


class Component:
    """start() subscribes and registers handlers; run() holds long-lived work; stop() cleans up.

    The process starts components in order, runs every run() in one TaskGroup,
    and stops them in reverse order.
    """

    name: ClassVar[str] = "component"

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ready = asyncio.Event()
        # A backtest drives the components' clock timers itself, a turn after every replayed batch (on_clock), so
        # that what they do falls at the same point of the data on every run; their own timers then do nothing.
        self.clock_driven = False

    async def start(self) -> None:
        self.ready.set()

    async def run(self) -> None:
        """Long-lived work; the default has none."""
        return None

    async def on_clock(self) -> None:
        """One turn of the component's clock timer, for a backtest's replay (clock_driven); the default has none."""
        return None

    async def stop(self) -> None:
        return None
