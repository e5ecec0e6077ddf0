"""The instrument book a module keeps: token -> Instrument, filled from ingestion over the bus.

Risk and strategy ask ingestion's ListInstruments (locally or, in split mode, over gRPC).
"""

from __future__ import annotations

import asyncio
import logging

from shared import rpc
from shared.bus import Bus
from shared.contracts import ingestion_pb2, market_pb2
from shared.errors import NotFound, RetryableError

log = logging.getLogger(__name__)


class InstrumentBook:
    def __init__(self, instruments: list[market_pb2.Instrument] | None = None) -> None:
        self._by_token: dict[int, market_pb2.Instrument] = {}
        self._by_symbol: dict[str, market_pb2.Instrument] = {}
        for inst in instruments or []:
            self.add(inst)

    def add(self, inst: market_pb2.Instrument) -> None:
        self._by_token[inst.token] = inst
        self._by_symbol[inst.symbol.upper()] = inst

    def get(self, token: int) -> market_pb2.Instrument | None:
        return self._by_token.get(token)

    def by_symbol(self, symbol: str) -> market_pb2.Instrument | None:
        return self._by_symbol.get(symbol.upper())

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self):
        return iter(self._by_token.values())

    async def load_from(self, bus: Bus, within_s: float = 30.0) -> None:
        """Ask ingestion for the instruments, retrying until it answers or `within_s` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                reply = await bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
                for inst in reply.instruments:
                    self.add(inst)
                return
            except (NotFound, RetryableError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
