"""Generated indices (Nifty 50, Nifty Bank): each index's reading, computed from its constituents' ticks.

Pure state (no I/O). The Kotak simulator feeds it its market's ticks and streams the readings as SFeed
IndexMessages; the synthetic source adds the readings of the indices configured to its tick batches.

Index model (documented contract of the simulator): an index is its base value times the mean, over its
constituents, of each constituent's last price over its previous close (tick.close_paise); a constituent not
ticked yet counts at 1. So the base is the index's previous close, and the index moves by the average relative move
of its constituents. A reading is a Tick: ltp_paise the value (whole paise, half rounded up), open/high/low of the
IST day's readings, close_paise the previous close (the base).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from shared.clock import ist_day_number
from shared.contracts import market_pb2
from shared.instruments import index_instrument

# Kotak's index names and tokens (nse_cm), as the SDK subscribes them ("nse_cm|Nifty 50").
NIFTY_50, NIFTY_BANK = "Nifty 50", "Nifty Bank"
NIFTY_50_TOKEN, NIFTY_BANK_TOKEN = 26000, 26009
# Nifty Bank's constituents; those among the simulator's instruments make up its Nifty Bank.
BANK_SYMBOLS = frozenset({
    "HDFCBANK-EQ", "ICICIBANK-EQ", "SBIN-EQ", "KOTAKBANK-EQ", "AXISBANK-EQ", "INDUSINDBK-EQ", "BANKBARODA-EQ",
    "PNB-EQ", "CANBK-EQ", "FEDERALBNK-EQ", "IDFCFIRSTB-EQ", "AUBANK-EQ"})


@dataclass(frozen=True)
class IndexSpec:
    """One index: its Kotak name and token, its constituents' tokens (same segment) and base value."""

    name: str
    exchange_segment: str
    token: int
    constituents: tuple[int, ...]
    base_paise: int  # the previous close: the value with every constituent at its previous close


@dataclass
class _Day:
    number: int  # IST day of the readings
    open: int
    high: int
    low: int


def default_indices(instruments: Iterable[market_pb2.Instrument]) -> list[IndexSpec]:
    """Nifty 50 over every nse_cm stock and Nifty Bank over the banks among them; an index with none is left out."""
    index_tokens = (NIFTY_50_TOKEN, NIFTY_BANK_TOKEN)  # an index among the instruments is no constituent
    stocks = [i for i in instruments
              if i.exchange_segment == "nse_cm" and not i.is_index and i.token not in index_tokens]
    specs = [IndexSpec(NIFTY_50, "nse_cm", NIFTY_50_TOKEN, tuple(i.token for i in stocks), 2_400_000),
             IndexSpec(NIFTY_BANK, "nse_cm", NIFTY_BANK_TOKEN,
                       tuple(i.token for i in stocks if i.symbol in BANK_SYMBOLS), 5_200_000)]
    return [s for s in specs if s.constituents]


class IndexBoard:
    """The indices and their current readings (index token -> Tick)."""

    def __init__(self, specs: Iterable[IndexSpec]) -> None:
        self.specs = {s.token: s for s in specs}
        self.readings: dict[int, market_pb2.Tick] = {}
        self._by_name = {(s.exchange_segment.lower(), s.name.lower()): s for s in self.specs.values()}
        self._of_constituent: dict[tuple[str, int], list[IndexSpec]] = {}
        for spec in self.specs.values():
            for token in spec.constituents:
                self._of_constituent.setdefault((spec.exchange_segment, token), []).append(spec)
        self._last: dict[tuple[str, int], market_pb2.Tick] = {}  # constituents' latest ticks
        self._days: dict[int, _Day] = {}

    @classmethod
    def for_instruments(cls, instruments: Iterable[market_pb2.Instrument]) -> IndexBoard:
        return cls(default_indices(instruments))

    def instrument(self, spec: IndexSpec) -> market_pb2.Instrument:
        return index_instrument(spec.token, spec.name, spec.exchange_segment)

    def find(self, exchange_segment: str, name: str) -> IndexSpec | None:
        """The index Kotak calls `name` in that segment (any case: "nifty bank" is Nifty Bank), or None."""
        return self._by_name.get((exchange_segment.strip().lower(), name.strip().lower()))

    def update(self, ticks: Iterable[market_pb2.Tick]) -> list[market_pb2.Tick]:
        """Take in market ticks; the new readings of the indices they touch (stamped with their latest tick)."""
        touched: dict[int, int] = {}  # index token -> ts_ns
        for tick in ticks:
            key = (tick.exchange_segment, tick.token)
            if key in self._of_constituent:
                self._last[key] = tick
                for spec in self._of_constituent[key]:
                    touched[spec.token] = max(touched.get(spec.token, 0), tick.ts_ns)
        readings = [self._computed(self.specs[token], ts_ns) for token, ts_ns in touched.items()]
        self.readings.update((r.token, r) for r in readings)
        return readings

    def set_reading(self, reading: market_pb2.Tick) -> market_pb2.Tick:
        """Make `reading` (token = an index token) the index's reading exactly, as it is; later computed readings
        continue its day (its open, high and low; the value for one left 0). KeyError for a token that is no index."""
        if reading.token not in self.specs:
            raise KeyError(f"token {reading.token} is no index of the simulator; indices: "
                           + ", ".join(f"{s.name} ({t})" for t, s in self.specs.items()))
        tick = market_pb2.Tick()
        tick.CopyFrom(reading)
        value = tick.ltp_paise
        self._days[tick.token] = _Day(ist_day_number(tick.ts_ns), tick.open_paise or value, tick.high_paise or value,
                                      tick.low_paise or value)
        self.readings[tick.token] = tick
        return tick

    def current(self, spec: IndexSpec, now_ns: int) -> market_pb2.Tick:
        """The index's reading; one computed now for an index not moved yet (as Kotak, which always has a last
        value to answer a subscribe or snapshot with, before the first trade of the day too)."""
        reading = self.readings.get(spec.token)
        if reading is None:  # not the day's open: that is the first reading the market moves
            value = self.value_of(spec)
            reading = self.readings[spec.token] = market_pb2.Tick(
                token=spec.token, exchange_segment=spec.exchange_segment, ts_ns=now_ns, ltp_paise=value,
                open_paise=value, high_paise=value, low_paise=value, close_paise=spec.base_paise)
        return reading

    def value_of(self, spec: IndexSpec) -> int:
        """base x mean(ltp / previous close) over the constituents, in whole paise (half up)."""
        total = Fraction(0)
        for token in spec.constituents:
            last = self._last.get((spec.exchange_segment, token))
            total += Fraction(last.ltp_paise, last.close_paise) if last and last.close_paise else 1
        value = spec.base_paise * total / len(spec.constituents)
        return int(value + Fraction(1, 2))

    def _computed(self, spec: IndexSpec, ts_ns: int) -> market_pb2.Tick:
        value, number = self.value_of(spec), ist_day_number(ts_ns)
        day = self._days.get(spec.token)
        if day is None or day.number != number:
            day = self._days[spec.token] = _Day(number, value, value, value)
        day.high, day.low = max(day.high, value), min(day.low, value)
        return market_pb2.Tick(token=spec.token, exchange_segment=spec.exchange_segment, ts_ns=ts_ns,
                               ltp_paise=value, open_paise=day.open, high_paise=day.high, low_paise=day.low,
                               close_paise=spec.base_paise)
