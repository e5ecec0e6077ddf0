"""The market-source interface ingestion reads from (synthetic, Kotak SFeed (SDK), replay), and the one way
configured symbols resolve against an instrument master (Kotak's scrip master live, instrument_master in replay).

A source owns its connection (reconnects, resubscribes); ingestion owns the bus side.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from shared.contracts import market_pb2
from shared.errors import ConfigError


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


def resolve(symbols: list[str], master: list[market_pb2.Instrument],
            master_name: str = "the instrument master") -> list[market_pb2.Instrument]:
    """The instrument-master rows for the symbols, in order: "RELIANCE-EQ" (nse_cm first when a symbol is listed in
    several segments) or "segment:SYMBOL" (e.g. "mcx_fo:CRUDEOIL26JANFUT"); unknown ones fail naming close
    matches and `master_name`, the master they were looked up in."""
    by_key = {(i.exchange_segment.lower(), i.symbol.upper()): i for i in master}
    by_symbol: dict[str, market_pb2.Instrument] = {}
    for i in sorted(master, key=lambda i: i.exchange_segment != "nse_cm"):
        by_symbol.setdefault(i.symbol.upper(), i)

    def find(text: str) -> market_pb2.Instrument | None:
        segment, sep, symbol = text.partition(":")
        return by_key.get((segment.lower(), symbol.upper())) if sep else by_symbol.get(text.upper())

    unknown = [s for s in symbols if find(s) is None]
    if unknown:
        names = list(by_symbol)
        hints = {s: difflib.get_close_matches(s.rpartition(":")[2].upper(), names, n=3) for s in unknown}
        detail = "; ".join(f"{s!r} (close: {', '.join(m) or 'none'})" for s, m in hints.items())
        raise ConfigError(f"symbols: not in {master_name}: {detail}")
    return [i for i in map(find, symbols) if i is not None]


def parse_index(text: str) -> tuple[str, str]:
    """An [app] indices entry -> (segment, name): "Nifty 50" is on nse_cm; "bse_cm:SENSEX" names its segment."""
    segment, sep, name = text.partition(":")
    segment, name = (segment.strip().lower(), name.strip()) if sep else ("nse_cm", text.strip())
    if not name or not segment:
        raise ConfigError(f"indices: {text!r} is not an index name; write it as Kotak spells it, e.g. \"Nifty 50\" "
                          "or \"bse_cm:SENSEX\"")
    return segment, name
