"""ORB: the opening range breakout. One trade per token a day, entered at the tick that breaks the range.

A plugin (see plugins.py). Rules, per token and IST day:
- The opening range: the highest high and the lowest low of the token's 1-minute candles from its exchange's open
  (09:15 for NSE and BSE, 09:00 for MCX and currencies; `session_start_ist` sets another) for `range_minutes`
  (15). It is complete at the close of its last minute's candle, or of any later one, and then fixed for the day
  (it gives the stops: a run-time change of either param applies from the next day's). A token with no candle inside
  it has no range that day; neither has one whose range is wider than `max_range_pct` of its low (0: any width),
  since its stop would be too far away, nor one no wider than the instrument's tick (all its trades at one or two
  adjacent prices: nothing can break out of it, and its stop would sit at the entry).
- Entry, once the range is complete and until `entry_until_ist` (14:30), flat, with no order of this strategy's
  working in the token and none filled in it yet that day: BUY at the first tick at or above the range's high (plus
  `buffer_pct`), or SELL (a short, with `allow_short`) at the first at or below its low (minus `buffer_pct`). Watched
  on every tick (price_levels), not at the closes. Sized as `quantity` units (whole lots) or, with `order_value`
  (rupees), as many whole lots as that buys at the entry's price (a LIMIT's own, the worst it fills at; a MARKET
  order's the tick); with `risk_per_trade` (rupees), as many as lose at most that from there to the stop (capped
  by `order_value` when set).
- Exits, on every tick: the stop is the range's other side (a long's at its low), or `stop_loss_pct` from the entry
  price when set; the target `target_r` times the risk (entry to stop) beyond the entry (0: none). Both at the market (a
  target as `order_type` says). The stop is watched while an order of ours works too: it moves a LIMIT exit to the tick
  (limit_slippage_pct through it), or cancels the rest of a LIMIT entry part of which filled and then exits what filled;
  once reached it stays due until the position is flat. With `exit_at_ist`, from then the position exits at the market
  at its token's first close (and an entry still working is cancelled). What is left at 15:15 the intraday square-off
  (risk) closes.
- A rejected entry is tried again at the next tick past the range after the token's next close; a second trade the
  same day never goes (its fills say the token traded, also after a restart, from the day's orders).
Orders are MIS; MARKET, or with `order_type = "LIMIT"` a LIMIT `limit_slippage_pct` worse than the tick. After a
restart the day's complete ranges come back from the strategy's saved state (saved), the day's stored candles too (the
warm-up), and the OMS's orders the position and its entry price; a position whose stop neither gives back starts the
strategy paused, said in a CRITICAL notification (unguarded).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.strategy.plugins import (
    EVERY_TICK,
    NEVER,
    Decision,
    Strategy,
    StrategyContext,
    StrategyParams,
    limit_through,
    moved_by_pct,
    register,
)
from shared.clock import hhmm_minutes, ist_day_number, ist_minute_of_day, parse_hhmm, session_of
from shared.config import RupeesOrOff
from shared.contracts import market_pb2, trading_pb2
from shared.money import fmt_inr
from shared.positions import exit_side


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _open_of(segment: str) -> int:
    """The IST minute of the day the segment's normal session opens (NSE's for an unknown one)."""
    (hour, minute), _ = session_of(segment)
    return hour * 60 + minute


LATEST_OPEN = "09:15"  # the latest of the segments' opens: what entry_until_ist is checked against by default


class OrbParams(StrategyParams):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The range starts at this IST time ("HH:MM"); "": at the open of each token's exchange segment.
    session_start_ist: str = ""
    range_minutes: int = Field(default=15, ge=1, le=375)
    entry_until_ist: str = "14:30"
    # From this IST time ("HH:MM", "" = never: the platform's 15:15 square-off) its positions exit at the market at
    # each token's first close, and an entry still working is cancelled. After entry_until_ist.
    exit_at_ist: str = ""
    # A break must go this many % past the range (0: the range itself).
    buffer_pct: float = Field(default=0.0, ge=0, lt=10)
    # No trade on a day whose range is wider than this many % of its low (0: any).
    max_range_pct: float = Field(default=0.0, ge=0, lt=100)
    allow_short: bool = True
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    order_value: RupeesOrOff = Decimal(0)
    # Rupees lost at the stop per entry instead of `quantity` (0: off): whole lots whose loss at the stop (the range's
    # other side, or stop_loss_pct) is at most this; no more than order_value buys when that is set.
    risk_per_trade: RupeesOrOff = Decimal(0)
    order_type: Literal["LIMIT", "MARKET"] = "MARKET"
    # With order_type LIMIT: priced this many % worse than the tick it comes from (a buy's above, a sell's below), to
    # trade at once while the market is within that of it, never beyond. 0: at the tick.
    limit_slippage_pct: float = Field(default=0.05, ge=0, le=5)
    # The stop this many % from the entry instead of the range's other side (0: the range).
    stop_loss_pct: float = Field(default=0.0, ge=0, lt=100)
    # The target: this many times the risk (entry to stop) beyond the entry (0: none).
    target_r: float = Field(default=2.0, ge=0, le=100)

    @field_validator("session_start_ist", "entry_until_ist", "exit_at_ist")
    @classmethod
    def _is_hhmm(cls, value: str, info: ValidationInfo) -> str:
        if value or info.field_name == "entry_until_ist":
            parse_hhmm(value)  # ValueError: expected HH:MM
        return value

    @model_validator(mode="after")
    def _entries_after_the_range(self) -> OrbParams:
        end = hhmm_minutes(self.session_start_ist or LATEST_OPEN) + self.range_minutes
        if hhmm_minutes(self.entry_until_ist) <= end:
            raise ValueError(f"entry_until_ist {self.entry_until_ist} must be after the range ends "
                             f"({_hhmm(end)}: the session's start + range_minutes)")
        if self.exit_at_ist and hhmm_minutes(self.exit_at_ist) < hhmm_minutes(self.entry_until_ist):
            raise ValueError(f"exit_at_ist {self.exit_at_ist} must not be before entry_until_ist "
                             f"{self.entry_until_ist}")
        return self


@dataclass(slots=True)
class _Range:
    day: int
    start: int  # its first minute, IST minutes of the day
    high: int = 0
    low: int = NEVER
    complete: bool = False
    tick: int = 0  # the instrument's tick size, paise (0: not known)


@register
class OpeningRangeBreakout(Strategy):
    kind = "ORB"
    Params = OrbParams
    intraday_only = True  # every intent is MIS
    params: OrbParams

    def __init__(self, name: str, params: OrbParams, tokens: frozenset[int] = frozenset()) -> None:
        self._ranges: dict[int, _Range] = {}
        self._traded: dict[int, int] = {}  # token -> the IST day its last entry filled on
        super().__init__(name, params, tokens)

    # -- the range -----------------------------------------------------------------------------
    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[Decision]:
        p, token = self.params, candle.token
        day, minute = ist_day_number(candle.start_ns), ist_minute_of_day(candle.start_ns)
        start = hhmm_minutes(p.session_start_ist) if p.session_start_ist else _open_of(candle.exchange_segment)
        end = start + p.range_minutes
        r = self._ranges.get(token)
        if r is not None and day < r.day:  # an earlier day's (read at the warm-up for another strategy): kept apart
            return []
        # A new day; or the range's start changed (params) before today's range was complete. A complete one is kept
        # for the day, whatever the params say now: a position's stop and target are read from it, and a range whose
        # minutes are over would never complete again (session_start_ist, range_minutes: from the next day).
        if r is None or r.day != day or (r.start != start and not r.complete):
            inst = ctx.instruments.get(token)
            r = self._ranges[token] = _Range(day, start, tick=inst.tick_size_paise if inst is not None else 0)
        if start <= minute < end and not r.complete:
            r.high, r.low = max(r.high, candle.high_paise), min(r.low, candle.low_paise)
        if not r.complete and r.high and minute >= end - 1:
            r.complete = True
            self.levels_changed(token)
            self.saved_changed()
        return self.time_exit(token, candle.close_paise, ctx, p.exit_at_ist) or []

    def saved(self) -> dict[str, Any]:
        """The complete opening ranges: after a restart they give a position its stop back, also when the warm-up
        could not read the day's candles (the range's minutes over, live candles never rebuild it)."""
        return {"session_start_ist": self.params.session_start_ist,
                "ranges": {str(token): [r.day, r.start, self.params.range_minutes, r.high, r.low, r.tick]
                           for token, r in sorted(self._ranges.items()) if r.complete}}

    def restore_saved(self, saved: dict[str, Any], now_ns: int) -> None:
        """The saved ranges of `now_ns`'s day, of as many minutes and from the same start as the params say now."""
        ranges, today = saved.get("ranges"), ist_day_number(now_ns)
        if not isinstance(ranges, dict) or saved.get("session_start_ist", "") != self.params.session_start_ist:
            return
        for token, kept in ranges.items():
            if not (token.isdigit() and isinstance(kept, list) and len(kept) == 6
                    and all(type(x) is int for x in kept)):
                continue
            day, start, minutes, high, low, tick = kept
            if day == today and minutes == self.params.range_minutes and 0 < low <= high:
                self._ranges[int(token)] = _Range(day, start, high, low, True, tick)

    def unguarded(self, now_ns: int) -> list[int]:
        """The held tokens with no stop: neither stop_loss_pct nor today's range (not saved, not rebuilt)."""
        held = sorted({token for (token, _), quantity in self.positions().items() if quantity})
        return [token for token in held if self._exits(token, self.position(token), now_ns) is None]

    def _range_today(self, token: int, now_ns: int) -> _Range | None:
        """The token's opening range of `now_ns`'s day, once complete, neither too wide nor too narrow: one no wider
        than a tick (every trade at one price, or two next to each other: an illiquid contract, a stock at its
        circuit) is no range. A tick at its own high would "break" it, its stop at the entry or a tick off (the
        next tick stops it out; risk_per_trade would buy a lot per paisa of risk)."""
        r, p = self._ranges.get(token), self.params
        if r is None or not r.complete or r.day != ist_day_number(now_ns):
            return None
        if r.high - r.low <= r.tick:
            return None
        if p.max_range_pct and (r.high - r.low) * 100 > p.max_range_pct * r.low:
            return None
        return r

    # -- what to watch -------------------------------------------------------------------------
    def price_levels(self, token: int, now_ns: int) -> tuple[int, int] | None:
        """Flat: the range's breaks, while an entry may go. Holding: the stop and the target (_exits); the stop alone
        while an order of ours works (Strategy.stop_while_working); every tick once the stop was reached, until
        flat (Strategy.stop_exit)."""
        pos = self.position(token)
        if self.is_pending(token, now_ns):
            exits = self._exits(token, pos, now_ns) if pos else None
            return None if exits is None else self.stop_while_working(token, exits[0] if pos > 0 else exits[1])
        if pos:
            if self.due_stop(token):
                return EVERY_TICK
            exits = self._exits(token, pos, now_ns)
            return None if exits is None else (exits[0], exits[1])
        return self._breaks(token, now_ns)

    def _breaks(self, token: int, now_ns: int) -> tuple[int, int] | None:
        p = self.params
        r = self._range_today(token, now_ns)
        if r is None or self._traded.get(token) == r.day:
            return None
        if ist_minute_of_day(now_ns) >= hhmm_minutes(p.entry_until_ist):
            return None
        low = moved_by_pct(r.low, -p.buffer_pct) if p.allow_short else 0
        return low, moved_by_pct(r.high, p.buffer_pct)

    def exit_prices(self, token: int, now_ns: int) -> tuple[int, int]:
        pos = self.position(token)
        exits = self._exits(token, pos, now_ns) if pos else None
        if exits is None:
            return 0, 0
        stop, target = (exits[0], exits[1]) if pos > 0 else (exits[1], exits[0])
        return stop, (target if 0 < target < NEVER else 0)

    def _exits(self, token: int, pos: int, now_ns: int) -> tuple[int, int, str] | None:
        """(low, high, what the stop is) for the position `pos`: a long's low is its stop and its high its target,
        a short's the other way round. None: no stop known (no range today and no stop_loss_pct)."""
        p, entry = self.params, self.entry_price(token)
        long = pos > 0
        stopped = self._stop(token, long, entry, now_ns) if entry else None
        if stopped is None:
            return None
        stop, said = stopped
        risk = entry - stop if long else stop - entry
        if long:
            target = entry + round(risk * p.target_r) if p.target_r and risk > 0 else NEVER
            return stop, target, said
        target = entry - round(risk * p.target_r) if p.target_r and risk > 0 else 0
        return target, stop, said

    def _stop(self, token: int, long: bool, price: int, now_ns: int) -> tuple[int, str] | None:
        """The stop of a position (long or not) entered at `price`, and what it is: stop_loss_pct from the price,
        else the range's other side. None: no stop known (no complete range today and no stop_loss_pct)."""
        p = self.params
        if p.stop_loss_pct:
            return moved_by_pct(price, -p.stop_loss_pct if long else p.stop_loss_pct), f"stop loss {p.stop_loss_pct:g}%"
        r = self._ranges.get(token)
        if r is None or not r.complete or r.day != ist_day_number(now_ns):
            return None
        return (r.low, "the range's low") if long else (r.high, "the range's high")

    # -- decisions -----------------------------------------------------------------------------
    def on_price_level(self, tick: market_pb2.Tick, ctx: StrategyContext) -> list[Decision]:
        token, price = tick.token, tick.ltp_paise
        pos = self.position(token)
        if pos:
            return self._exit(token, pos, price, ctx)
        if self.is_pending(token, ctx.now_ns):
            return []
        levels = self._breaks(token, ctx.now_ns)
        if levels is None:
            return []
        r = self._ranges[token]
        if price >= levels[1]:
            side, way = trading_pb2.SIDE_BUY, "above"
        elif price <= levels[0]:
            side, way = trading_pb2.SIDE_SELL, "below"
        else:
            return []
        p = self.params
        # Sized at the worst price it fills at: a LIMIT's own (a MARKET order's is not known; the tick stands for it).
        at = price if p.order_type == "MARKET" else limit_through(price, side, p.limit_slippage_pct,
                                                                   ctx.instruments.get(token))
        stop, _ = self._stop(token, side == trading_pb2.SIDE_BUY, at, ctx.now_ns) or (0, "")
        quantity = self.entry_quantity(token, ctx, at, p.quantity, p.order_value, p.risk_per_trade, stop)
        if not quantity:
            return []
        reason = (f"broke {way} the opening range {fmt_inr(r.low)}-{fmt_inr(r.high)} "
                  f"({_hhmm(r.start)}-{_hhmm(r.start + self.params.range_minutes)} IST): tick {fmt_inr(price)}"
                  + self.sized_by_risk(p.risk_per_trade, stop))
        return [self.mis_order(token, side, quantity, price, ctx, reason, p.order_type == "MARKET",
                               p.limit_slippage_pct)]

    def _exit(self, token: int, pos: int, price: int, ctx: StrategyContext) -> list[Decision]:
        """The stop (at the market, through stop_exit: also while an order of ours works) or the target (not while
        one works) the tick at `price` reached."""
        due = self.due_stop(token)
        if due:
            return self.stop_exit(token, price, due, ctx)
        exits = self._exits(token, pos, ctx.now_ns)
        if exits is None or exits[0] < price < exits[1]:
            return []
        low, high, said = exits
        if price <= low if pos > 0 else price >= high:
            stop = low if pos > 0 else high
            return self.stop_exit(token, price, f"stop at {said} {fmt_inr(stop)}: tick {fmt_inr(price)}", ctx)
        if self.is_pending(token, ctx.now_ns):
            return []
        target = high if pos > 0 else low
        p = self.params
        reason = f"target {p.target_r:g}R {fmt_inr(target)}: tick {fmt_inr(price)}"
        return [self.mis_order(token, exit_side(pos), abs(pos), price, ctx, reason, p.order_type == "MARKET",
                               p.limit_slippage_pct)]

    def on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        """An entry's fill marks its token traded that day (one trade a day, after a restart too)."""
        token = update.request.token
        opening = update.last_fill_quantity and not self.position(token)
        super().on_order_update(update)
        if opening:
            r = self._ranges.get(token)
            self._traded[token] = ist_day_number(update.ts_ns) if update.ts_ns else (r.day if r is not None else 0)
