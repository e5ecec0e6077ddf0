"""The instrument book a module keeps: token -> Instrument, filled from ingestion over the bus.

Risk and strategy ask ingestion's ListInstruments (locally or, in split mode, over gRPC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from shared import rpc
from shared.bus import Bus
from shared.clock import Session, day_of, fmt_hhmm, ist_time_on_day_ns, session_in_force
from shared.contracts import ingestion_pb2, market_pb2
from shared.errors import ConfigError, NotFound, RetryableError

log = logging.getLogger(__name__)


def one_per_token(instruments: list[market_pb2.Instrument]) -> list[market_pb2.Instrument]:
    """The instruments to trade, each once; raises ConfigError when two of them share a token.

    Tokens are unique within an exchange segment only (an NSE F&O contract and an MCX one may carry the same
    number), but NeoPulse keys an instrument by its token alone: candles, last prices, positions and the
    risk checks of one would be taken for the other's. Refused at start, naming both, rather than mixed."""
    seen: dict[int, market_pb2.Instrument] = {}
    out = []
    for inst in instruments:
        other = seen.get(inst.token)
        if other is None:
            seen[inst.token] = inst
            out.append(inst)
        elif other.exchange_segment != inst.exchange_segment or other.symbol != inst.symbol:
            raise ConfigError(
                f"symbols: {_named(other)} and {_named(inst)} share token {inst.token}; NeoPulse keys instruments "
                "by token, so it trades one of them at a time: leave one out of symbols")
    return out


def index_instrument(token: int, symbol: str, exchange_segment: str, name: str = "") -> market_pb2.Instrument:
    """An index as ingestion lists it (Instrument.is_index): its value has two decimals, as paise do."""
    return market_pb2.Instrument(token=token, symbol=symbol, exchange_segment=exchange_segment, name=name or symbol,
                                 tick_size_paise=1, lot_size=1, is_index=True)


def not_tradable(inst: market_pb2.Instrument) -> str:
    """Why an index cannot be ordered (risk's denial and the strategy configuration's error say it alike)."""
    return (f"{_named(inst)} (token {inst.token}) is an index: it has a value and candles, but it cannot be traded; "
            "trade one of its futures or an ETF that tracks it")


def trading_ends_ns(inst: market_pb2.Instrument, sessions: Mapping[str, Session] | None = None) -> int:
    """When a derivative stops trading, UTC nanoseconds: the close of its segment's session (the process's table
    unless `sessions`; a special session's, if the day holds one) on its expiry day (the IST day of expiry_ns). 0 for
    an instrument that does not expire."""
    if not inst.expiry_ns:
        return 0
    close = session_in_force(inst.exchange_segment, inst.expiry_ns, sessions)[1]
    return ist_time_on_day_ns(inst.expiry_ns, close)


def expired(inst: market_pb2.Instrument, now_ns: int, sessions: Mapping[str, Session] | None = None) -> bool:
    """Whether the contract has stopped trading at `now_ns` (its expiry day's close is past): the exchange no longer
    takes orders in it, and what is still held is settled by the exchange."""
    ends = trading_ends_ns(inst, sessions)
    return bool(ends) and now_ns >= ends


def expired_reason(inst: market_pb2.Instrument, sessions: Mapping[str, Session] | None = None) -> str:
    """Why an expired contract is not traded (risk's CONTRACT_EXPIRED), naming what to do."""
    close = session_in_force(inst.exchange_segment, inst.expiry_ns, sessions)[1]
    return (f"{_named(inst)} (token {inst.token}) expired on {day_of(inst.expiry_ns)}: it traded until "
            f"{fmt_hhmm(close)} IST that day, and only orders that reduce a position in it pass; roll to a live "
            "contract in symbols (the exchange settles what is still held)")


def _named(inst: market_pb2.Instrument) -> str:
    return f"{inst.exchange_segment}:{inst.symbol}" if inst.exchange_segment else inst.symbol


class InstrumentBook:
    def __init__(self, instruments: list[market_pb2.Instrument] | None = None) -> None:
        self._by_token: dict[int, market_pb2.Instrument] = {}
        # Symbol (upper case) -> segment (lower case) -> instrument: one symbol may be listed on several segments
        # (RELIANCE-EQ on nse_cm and on bse_cm), each its own contract with its own token.
        self._by_symbol: dict[str, dict[str, market_pb2.Instrument]] = {}
        for inst in instruments or []:
            self.add(inst)

    def add(self, inst: market_pb2.Instrument) -> None:
        old = self._by_token.get(inst.token)
        if old is not None:  # listed again (a reload): its new symbol and segment replace the old ones
            self._by_symbol.get(old.symbol.upper(), {}).pop(old.exchange_segment.lower(), None)
        self._by_token[inst.token] = inst
        self._by_symbol.setdefault(inst.symbol.upper(), {})[inst.exchange_segment.lower()] = inst

    def get(self, token: int) -> market_pb2.Instrument | None:
        return self._by_token.get(token)

    def by_symbol(self, symbol: str) -> market_pb2.Instrument | None:
        """The instrument `symbol` names, read as [app] symbols reads it (services/ingestion/source.resolve):
        "segment:SYMBOL" is that segment's; a bare "SYMBOL" is nse_cm's, or the only one listed. None when it is not
        listed. A bare symbol listed on several segments, none of them nse_cm, is a ConfigError: picking one would
        trade a contract nobody chose."""
        segment, sep, name = symbol.partition(":")
        listed = self._by_symbol.get((name if sep else symbol).upper(), {})
        if sep:
            return listed.get(segment.lower())
        if "nse_cm" in listed or len(listed) <= 1:
            return listed.get("nse_cm") or next(iter(listed.values()), None)
        where = sorted(listed)
        raise ConfigError(f"symbol {symbol!r} is listed on {', '.join(where)}: name the segment, e.g. "
                          f"\"{where[0]}:{symbol}\"")

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
