"""1-minute OHLCV candles per token, built from ticks on exchange-time (IST) minute boundaries.

The hot path of the strategy module: no bus, no I/O; the module feeds it tick batches and a timer.

Rules:
- A tick belongs to the minute `minute_start_ns(tick.ts_ns)` (IST is UTC+05:30, so UTC minute
  boundaries are IST ones): 09:15:59.999 is in the 09:15 candle, 09:16:00.000 opens the 09:16 one.
- A candle closes when a tick of a later minute arrives for its token, or when `close_due(now_ns)`
  is called at or after the end of its minute (the timer, so a quiet instrument still closes).
- Gaps: a minute with no tick for a token produces no candle (no flat filler bars); indicators see
  the next real candle as the next value.
- Open and close are the prices of the minute's earliest and latest tick by `ts_ns` (arrival order
  breaks ties: SFeed stamps whole seconds), so a tick of an earlier second that arrives late is not
  taken for the close.
- Volume: SFeed conflates trades (`ltq` is only the last one's), so when ticks carry the cumulative day
  volume a candle's volume is how much that grew during the minute; the first tick seen in an IST day
  counts its own `ltq` (the day's volume before it belongs to earlier candles), a tick whose day volume
  is missing or not higher adds nothing (the next one's growth covers it), and a duplicated tick adds
  nothing. A tick newer (by ts_ns) than the newest one that carried the held day volume, with a lower one, is a
  correction ingestion accepted (its stale-volume reset): its `ltq` counts and its day volume becomes the base,
  or every later candle would have volume 0 until the feed passed the old maximum (and the paper broker, which
  fills at most a candle's volume, would fill nothing); a lower one not newer is late (as in ingestion, whose
  stale rule compares with the last tick it passed on, one repeating the volume included) and adds nothing.
  Ticks without day volume at all (lite mode) add their `ltq`. tick_count counts the ticks.
- The SQL candles over stored ticks (shared/db/queries.py `candles_1m`, replay's view) follow the same rules,
  with one intended difference: they count the first minute with day volume of each IST day from that tick's
  own day volume, without its `ltq` (a query range may start mid-day). They work in time order, this in
  arrival order: "first tick seen" is the first to arrive, so if an earlier tick of that minute arrives after
  it (day volume not higher) it adds nothing here, while replay and SQL count the growth from it.
- A tick older than the token's current minute (or of a minute already closed by the timer) is
  out of order: it is counted in `late_ticks` and left out of the candles (not out of `watch`: its price is still
  checked against the token's watched levels, the stops). So is, after a warm start, a tick of a minute whose
  stored candle the strategies were fed (`closed_before`). A warm start also resumes the candle of the minute
  in progress from its stored ticks (`resume`), and the day volume they reached (`hold_day_volume`), so the
  first live tick counts its growth from there.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.clock import ist_day_number
from shared.contracts import market_pb2

MINUTE_NS = 60 * 1_000_000_000

# Slots of the per-token open-candle list (a list, mutated in place: no allocation per tick). _FIRST_TS and
# _LAST_TS are the times of the ticks that set the open and the close; _DAY_VOLUME is the cumulative day volume
# the token's candles count from this IST day (0: none yet), kept across its candles, and _DAY_VOLUME_TS the time
# of the newest tick that carried it. _TICK is the latest tick taken (by arrival, a late one not), for quotes.
# _WATCH: the token's watched prices (low, high) or None (watch).
(_START, _OPEN, _HIGH, _LOW, _CLOSE, _VOLUME, _COUNT, _CLOSED, _SEGMENT, _FIRST_TS, _LAST_TS, _DAY_VOLUME,
 _DAY_VOLUME_TS, _TICK, _WATCH) = range(15)

Closed = tuple[market_pb2.Candle, int]  # the candle, and recv_ns of the tick that closed it (0 = timer)


class CandleBuilder:
    """Open candles by token; `on_ticks` and `close_due` return the candles they closed."""

    def __init__(self, symbols: dict[int, str] | None = None) -> None:
        self.symbols: dict[int, str] = dict(symbols or {})
        self._bars: dict[int, list] = {}
        # Day volumes held for tokens without a bar yet (hold_day_volume): taken by the token's first bar.
        self._held: dict[int, tuple[int, int]] = {}
        self.late_ticks = 0
        # token -> (low, high): a tick at or below low, or at or above high, goes to `reached` (watch).
        self._watch: dict[int, tuple[int, int]] = {}
        self.reached: list[market_pb2.Tick] = []
        # Closed candles are built inside the batch that will carry them (no copy when it is published).
        self.batch = market_pb2.CandleBatch()

    def take_batch(self) -> market_pb2.CandleBatch:
        """The candles closed since the last call, as one batch; the next ones go into a new batch."""
        batch, self.batch = self.batch, market_pb2.CandleBatch()
        return batch

    def watch(self, token: int, levels: tuple[int, int] | None) -> None:
        """From now on the ticks of `token` priced at or below levels[0], or at or above levels[1], are also put in
        `reached` (in arrival order; the caller empties it), until watch(token, None). Checked in the candle loop
        itself: a second pass over every tick would cost the strategy module a fifth of its ticks/s."""
        if levels is None:
            self._watch.pop(token, None)
        else:
            self._watch[token] = levels
        bar = self._bars.get(token)
        if bar is not None:
            bar[_WATCH] = levels

    def is_late(self, tick: market_pb2.Tick) -> bool:
        """Whether `tick` is of a minute before its token's current one (or of one closed already): out of order."""
        bar = self._bars.get(tick.token)
        if bar is None:
            return False
        start = tick.ts_ns - tick.ts_ns % MINUTE_NS
        return start < bar[0] or (start == bar[0] and bar[7])

    def on_ticks(self, ticks: Iterable[market_pb2.Tick]) -> list[Closed]:
        """Fold ticks (in arrival order) into their candles; returns the candles a later minute closed."""
        closed: list[Closed] = []
        reached = self.reached
        bars = self._bars
        get = bars.get
        late = 0
        for t in ticks:
            ts = t.ts_ns
            start = ts - ts % MINUTE_NS
            bar = get(t.token)
            # Literal indexes below are the _START.._TICK slots: globals cost a lookup per tick.
            if bar is not None and start == bar[0] and not bar[7]:
                price = t.ltp_paise
                if price > bar[2]:
                    bar[2] = price
                elif price < bar[3]:
                    bar[3] = price
                if ts >= bar[10]:
                    bar[4], bar[10] = price, ts
                elif ts < bar[9]:
                    bar[1], bar[9] = price, ts
                bar[6] += 1
            elif bar is None:
                price = t.ltp_paise
                bar = bars[t.token] = [start, price, price, price, price, 0, 1, False, t.exchange_segment, ts, ts, 0, 0,
                                       None, self._watch.get(t.token)]
                if self._held:
                    held = self._held.pop(t.token, None)
                    if held is not None and ist_day_number(held[1]) == ist_day_number(ts):
                        bar[11], bar[12] = held
            elif start > bar[0]:
                if not bar[7]:
                    closed.append((self._candle(t.token, bar), t.recv_ns))
                if ist_day_number(start) != ist_day_number(bar[0]):
                    bar[11] = 0  # the cumulative day volume starts again
                price = t.ltp_paise
                bar[0] = start
                bar[1] = bar[2] = bar[3] = bar[4] = price
                bar[5] = 0
                bar[6] = 1
                bar[7] = False
                bar[9] = bar[10] = ts
            else:
                late += 1
                # Out of its candle, not of the stops: a trade at the stop is one whenever it arrives (one tick
                # stamped minutes ahead would otherwise make every later one late, and mute the stops meanwhile).
                watch = bar[14]
                if watch is not None and not watch[0] < t.ltp_paise < watch[1]:
                    reached.append(t)
                continue
            bar[13] = t
            watch = bar[14]
            if watch is not None and not watch[0] < price < watch[1]:
                reached.append(t)
            day_volume = t.volume
            if day_volume:
                seen = bar[11]
                if day_volume > seen:
                    bar[5] += day_volume - seen if seen else min(t.ltq, day_volume)
                    bar[11], bar[12] = day_volume, ts
                elif ts > bar[12]:  # newer than the tick the held day volume came with
                    if day_volume < seen:  # a correction, not a late tick: re-base on it
                        bar[5] += min(t.ltq, day_volume)
                        bar[11] = day_volume
                    bar[12] = ts  # an equal one is newer evidence: a lower one of its time is late (ingestion's rule)
            elif not bar[11]:
                bar[5] += t.ltq
        if late:
            self.late_ticks += late
        return closed

    def close_due(self, now_ns: int) -> list[Closed]:
        """Close every open candle whose minute ended at or before `now_ns` (timer close; recv_ns 0)."""
        closed: list[Closed] = []
        for token, bar in self._bars.items():
            if not bar[_CLOSED] and bar[_START] + MINUTE_NS <= now_ns:
                bar[_CLOSED] = True
                closed.append((self._candle(token, bar), 0))
        return closed

    def closed_before(self, token: int, segment: str, start_ns: int) -> None:
        """The token's candles before the minute starting at `start_ns` were closed elsewhere (the warm-up fed
        them from the stored ticks): a tick of an earlier minute is late from now on, not the first of a second
        candle for a minute already seen. A candle of that minute or a later one is kept; an earlier one dropped."""
        bar = self._bars.get(token)
        if bar is not None and bar[_START] >= start_ns:
            return
        # A closed bar of the minute before: the next tick opens its own minute and closes nothing.
        self._bars[token] = [start_ns - MINUTE_NS, 0, 0, 0, 0, 0, 0, True, segment, 0, 0, 0, 0, None,
                             self._watch.get(token)]

    def resume(self, candle: market_pb2.Candle) -> None:
        """The candle of the minute in progress as far as the stored ticks have it (a warm start): the live ticks
        carry it on, so the candle that closes is the minute's, not just what came after the restart. Its open stays
        (the live ticks are later), the next live tick sets its close. The day volume its ticks reached comes after
        (`hold_day_volume`). Kept: a bar of that minute or a later one the builder has from live ticks."""
        bar = self._bars.get(candle.token)
        if bar is not None and (bar[_START] > candle.start_ns or (bar[_START] == candle.start_ns and not bar[_CLOSED])):
            return
        start, c = candle.start_ns, candle
        self._bars[c.token] = [start, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume, c.tick_count,
                               False, c.exchange_segment, start, start, 0, 0, None, self._watch.get(c.token)]

    def hold_day_volume(self, token: int, day_volume: int, ts_ns: int) -> None:
        """A warm start: the cumulative day volume the stored ticks reached (carried by the newest, at `ts_ns`), so
        that the first live tick counts its growth from there instead of its own `ltq` as a day's first tick does
        (what traded between the last stored tick and it would be missed). After `closed_before` and `resume`;
        not over a day volume the token's bar holds already (from live ticks: newer). A bar of an earlier IST day
        forgets it at the new day's first tick, as it forgets any day volume."""
        bar = self._bars.get(token)
        if bar is None:  # no candle of it stored nor read: its first live tick's bar takes it, on the same day
            self._held[token] = (day_volume, ts_ns)
        elif not bar[_DAY_VOLUME]:
            bar[_DAY_VOLUME], bar[_DAY_VOLUME_TS] = day_volume, ts_ns

    def last_tick(self, token: int) -> market_pb2.Tick | None:
        """The latest tick of the token taken (a quote), or None before its first."""
        bar = self._bars.get(token)
        return bar[_TICK] if bar is not None else None

    def open_candle(self, token: int) -> market_pb2.Candle | None:
        """The token's candle in progress, or None (for inspection and tests)."""
        bar = self._bars.get(token)
        if bar is None or bar[_CLOSED]:
            return None
        return self._fill(market_pb2.Candle(), token, bar)

    def _candle(self, token: int, bar: list) -> market_pb2.Candle:
        """A closed candle: a new element of `self.batch`."""
        return self._fill(self.batch.candles.add(), token, bar)

    def _fill(self, c: market_pb2.Candle, token: int, bar: list) -> market_pb2.Candle:
        c.token, c.exchange_segment, c.start_ns = token, bar[_SEGMENT], bar[_START]
        c.symbol = self.symbols.get(token, "")
        c.open_paise, c.high_paise, c.low_paise, c.close_paise = bar[_OPEN], bar[_HIGH], bar[_LOW], bar[_CLOSE]
        c.volume, c.tick_count = bar[_VOLUME], bar[_COUNT]
        return c
