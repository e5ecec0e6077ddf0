"""The market-source interface ingestion reads from: synthetic, Kotak SFeed (SDK), replay.

A source owns its connection (reconnects, resubscribes); ingestion owns the bus side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from shared.contracts import market_pb2


@dataclass
class SourceStats:
    connected: bool = False
    reconnects: int = 0
    malformed_packets: int = 0


class MarketSource(Protocol):
    name: str
    stats: SourceStats

    async def instruments(self) -> list[market_pb2.Instrument]:
        """The resolved universe (from config symbols via the scrip master); raises ConfigError
        for unknown symbols, listing close matches."""

    def batches(self) -> AsyncIterator[market_pb2.TickBatch]:
        """Tick batches forever (recv_ns set on every tick). Reconnects with backoff and
        resubscribes on its own; never yields the same tick twice."""
        ...

    async def reconnect(self, reason: str) -> None:
        """Drop and re-establish the connection (stall watchdog); re-login if the session expired."""

    async def close(self) -> None: ...
