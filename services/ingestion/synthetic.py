"""The seeded synthetic market source: NSE-like ticks on the session clock, straight onto the bus.

Talks to nothing: it is the offline source for paper runs, tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from services.ingestion.config import IngestionSettings
from services.ingestion.source import SourceStats
from shared.clock import Clock, is_market_open
from shared.contracts import market_pb2
from shared.errors import ConfigError
from shared.marketdata import NSE_EQUITIES, SyntheticMarket, nse_instruments


def resolve_symbols(symbols: list[str]) -> list[market_pb2.Instrument]:
    """Bundled instruments for the configured symbols; unknown ones fail naming close matches."""
    import difflib

    known = [s for s, _, _ in NSE_EQUITIES]
    unknown = [s for s in symbols if s not in known]
    if unknown:
        hints = {s: difflib.get_close_matches(s, known, n=3) for s in unknown}
        detail = "; ".join(f"{s!r} (close: {', '.join(m) or 'none'})" for s, m in hints.items())
        raise ConfigError(f"symbols: unknown symbol {detail}")
    return nse_instruments(symbols)


class SyntheticSource:
    name = "synthetic"

    def __init__(self, settings: IngestionSettings, clock: Clock, symbols: list[str] | None = None,
                 seed: int = 7, respect_session: bool = True) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = SourceStats()
        self.respect_session = respect_session
        self._instruments = resolve_symbols(symbols) if symbols else nse_instruments()
        self.market = SyntheticMarket(self._instruments, seed=seed, vol_bps=settings.volatility_bps)

    async def instruments(self) -> list[market_pb2.Instrument]:
        return list(self._instruments)

    async def batches(self) -> AsyncIterator[market_pb2.TickBatch]:
        """Batches every batch_interval_ms at ticks_per_second overall; quiet outside the session."""
        interval = self.settings.batch_interval_ms / 1000
        owed = 0.0
        self.stats.connected = True
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = self.clock.now_ns()
            if self.respect_session and not is_market_open(now):
                continue
            owed += self.settings.ticks_per_second * interval
            count, owed = int(owed), owed - int(owed)
            if count:
                ticks = self.market.next_ticks(now, count)
                recv = time.time_ns()
                for t in ticks:
                    t.recv_ns = recv
                yield market_pb2.TickBatch(ticks=ticks)

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        self.stats.connected = False
