"""The seeded synthetic market source: NSE-like ticks on the session clock, straight onto the bus.

Talks to nothing: it is the offline source for paper runs, tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from services.ingestion.config import IngestionSettings
from services.ingestion.source import SourceStats, parse_index
from shared.clock import Clock, is_market_open
from shared.contracts import market_pb2
from shared.errors import ConfigError
from shared.indices import IndexBoard, IndexSpec
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
                 seed: int = 7, respect_session: bool = True, indices: list[str] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = SourceStats()
        self.respect_session = respect_session
        self._instruments = resolve_symbols(symbols) if symbols else nse_instruments()
        self.market = SyntheticMarket(self._instruments, seed=seed, vol_bps=settings.volatility_bps)
        # Indices over the generated stocks (shared.indices), as the simulator serves them: their readings go out in
        # the batch of the ticks that moved them.
        self._board = IndexBoard.for_instruments(self._instruments)
        self._indices = [self._index(text) for text in indices or []]
        self._index_tokens = frozenset(spec.token for spec in self._indices)

    def _index(self, text: str) -> IndexSpec:
        segment, name = parse_index(text)
        spec = self._board.find(segment, name)
        if spec is None:
            known = ", ".join(s.name for s in self._board.specs.values()) or "none over these symbols"
            raise ConfigError(f"indices: the synthetic market has no index {text!r}; it has: {known}")
        return spec

    async def instruments(self) -> list[market_pb2.Instrument]:
        return [*self._instruments, *(self._board.instrument(spec) for spec in self._indices)]

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
                if self._index_tokens:
                    ticks += [r for r in self._board.update(ticks) if r.token in self._index_tokens]
                recv = time.time_ns()
                for t in ticks:
                    t.recv_ns = recv
                yield market_pb2.TickBatch(ticks=ticks)

    async def reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1

    async def close(self) -> None:
        self.stats.connected = False
