"""MOMENTUM_RSI: trade RSI momentum bursts in the direction of the EMA trend, one position per token.

A plugin (see plugins.py): reads closed 1-minute candles and its own fills; returns order intents.

Rules, on each closed candle of a token (after warm-up: rsi_period + 1 and ema_period candles):
- Flat, no order in flight:
  - BUY `quantity` when RSI crosses up through `entry_long_rsi` (previous RSI below it, this one at
    or above) and the close is above the EMA (momentum agrees with the trend);
  - SELL `quantity` (a short, MIS) when RSI crosses down through `entry_short_rsi` and the close is
    below the EMA, if `allow_short`.
- Long: SELL the whole position when RSI falls below `exit_long_rsi` or the close falls below the EMA.
- Short: BUY the whole position back when RSI rises above `exit_short_rsi` or the close rises above the EMA.
- Either, first of all: with `stop_loss_pct`, exit at the market when a tick's price is that much against the entry
  price (the average of the fills that opened the position); with `target_pct`, when one is that much in its favour.
  With `trailing_stop_pct`, at the market when a tick is that much off the best price a tick reached since the entry
  (the entry price until one beats it; after a restart, the best of the stored ticks since the entry). All are watched
  on every tick (price_levels), not only at the closes; a stop reached while a LIMIT exit works moves that exit to the
  tick (limit_slippage_pct through it), and one reached while a LIMIT entry works with part of it filled cancels the
  rest of it, then exits what filled. A stop once reached stays due until the position is flat (a refused exit goes
  again, whatever the price). A close past one (a restart, a change of params) exits too, a stop's as a tick's would.
- An entry's size: `quantity` rounded down to whole lots (at least one); or, with `order_value` set, as many whole
  lots as that many rupees buy at the entry's price (a contract at its price factor): a LIMIT's own, the worst it
  fills at; a MARKET order's the close. An instrument one lot of which costs more than `order_value` is not entered
  (said once in the log): the budget is a ceiling. With `risk_per_trade` (and a stop), as many whole lots as lose at
  most that many rupees from that price to the entry's stop, capped by `order_value` when set; none when one lot
  would lose more.
- Never pyramids: while a signal's order is in flight, or a position is open, no new entry.
- When to enter: only on a close from `entry_from_ist` up to (not at) `entry_until_ist` (IST "HH:MM", "" for no
  bound): say not in the open's first minutes, nor so near the intraday square-off that an entry has no time.
  With `max_positions`, no entry while that many tokens hold a position or an entry on its way. Exits are never
  held back.
- With `trend_index` (an index NeoPulse follows, e.g. "Nifty 50"), entries also go with the market: a long only
  while the index's last close is above its EMA(`trend_ema_period`) of 1-minute closes, a short only while below;
  until that EMA is warm, no entry. Exits never wait for it.
- With `exit_at_ist` ("HH:MM"), from then each position exits at the market at its token's first close (as a stop:
  a part-filled entry is cancelled first), an entry still working is cancelled, and none is made that day.
- With `max_reprices` above 0, a LIMIT order still working at a candle's close is moved to that close (the OMS's
  ModifyOrder, which risk checks), at most that many times per order: an exit always, an entry only while the
  close stays on its trend's side of the EMA, its quantity cut to what `order_value` and `risk_per_trade` allow at
  the new price (not moved when that is no more than has filled).
Orders are MIS; MARKET, or LIMIT `limit_slippage_pct` (default 0.05%) worse than the candle's close, to the tick
within it: a marketable limit, which trades at once unless the market has run that far past the close. At 0 the LIMIT
is at the close, where a momentum entry fills only if the market comes back to it.
A period change (SetStrategyParams) warms the new indicators up at once from the latest closes of each token,
kept for that (as many as the longest valid periods need), and then checks the exits (exits_due); it never enters.
At start the stored candles warm it up the same way (closes_needed: the longer of the two warm-ups); a position
restored while they could not (its indicators cold) and with no stop_loss_pct or trailing_stop_pct has no exit until
they are warm again, which a CRITICAL notification says (unguarded).
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.strategy.indicators import EMA, RSI
from services.strategy.plugins import (
    EVERY_TICK,
    NEVER,
    Decision,
    OrderChange,
    OrderIntent,
    Strategy,
    StrategyContext,
    StrategyParams,
    WorkingOrder,
    limit_through,
    moved_by_pct,
    register,
)
from shared.clock import hhmm_minutes, ist_minute_of_day, parse_hhmm
from shared.config import RupeesOrOff
from shared.contracts import market_pb2, trading_pb2
from shared.money import fmt_inr
from shared.positions import exit_side

log = logging.getLogger(__name__)


MAX_RSI_PERIOD, MAX_EMA_PERIOD = 200, 500
# Closes kept per token: the most any valid periods need to be warm (RSI period + 1, and one more for the cross).
WARM_UP_CLOSES = max(MAX_RSI_PERIOD + 2, MAX_EMA_PERIOD)


class MomentumRsiParams(StrategyParams):
    """Defaults are tuned so the seeded synthetic market trades within minutes of warm-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rsi_period: int = Field(default=7, ge=2, le=MAX_RSI_PERIOD)
    ema_period: int = Field(default=9, ge=1, le=MAX_EMA_PERIOD)
    entry_long_rsi: float = Field(default=60.0, gt=0, lt=100)
    exit_long_rsi: float = Field(default=50.0, gt=0, lt=100)
    entry_short_rsi: float = Field(default=40.0, gt=0, lt=100)
    exit_short_rsi: float = Field(default=50.0, gt=0, lt=100)
    allow_short: bool = True
    # Shares per entry; rounded down to the instrument's lot size (at least one lot).
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    # Rupees per entry instead (0: off): whole lots worth at most this at the entry's price. Sizes a list of
    # instruments from Rs 100 to Rs 10,000 alike.
    order_value: RupeesOrOff = Decimal(0)
    # Rupees lost at the stop per entry instead of `quantity` (0: off): whole lots whose loss at the entry's stop
    # (the tighter of stop_loss_pct and trailing_stop_pct, which it needs) is at most this; no more than
    # order_value buys when that is set.
    risk_per_trade: RupeesOrOff = Decimal(0)
    order_type: Literal["LIMIT", "MARKET"] = "LIMIT"
    # A LIMIT order priced this many % worse than the close (or tick) it comes from, a buy's above and a sell's below:
    # it trades at once while the market is within that of it, and never beyond. 0: at the close, where an entry
    # fills only if the market comes back to it (in a trend, the trades that go wrong).
    limit_slippage_pct: float = Field(default=0.05, ge=0, le=5)
    # A LIMIT order still working at a candle's close is moved to that close, at most this many times per order
    # (0: never; it then works until it fills or [strategy] cancel_working_after_s cancels it). See _reprice.
    max_reprices: int = Field(default=0, ge=0, le=100)
    # The market's trend an entry must go with: an index's symbol as [app] indices names it ("" = none), and the
    # period of the EMA of its 1-minute closes that says which way it goes.
    trend_index: str = Field(default="", max_length=64)
    trend_ema_period: int = Field(default=20, ge=1, le=MAX_EMA_PERIOD)
    # Entries only on closes in [entry_from_ist, entry_until_ist) IST, "HH:MM" ("": no bound); and in at most
    # max_positions tokens at once (0: no limit).
    entry_from_ist: str = ""
    entry_until_ist: str = ""
    max_positions: int = Field(default=0, ge=0, le=10_000)
    # From this IST time ("HH:MM", "" = never) its positions exit at the market at each token's first close, its
    # working entries are cancelled, and it enters no more that day (before the platform's 15:15 square-off).
    exit_at_ist: str = ""
    # Exit at the first tick this many % against the entry (at the market) or in its favour (0: off).
    stop_loss_pct: float = Field(default=0.0, ge=0, lt=100)
    target_pct: float = Field(default=0.0, ge=0, le=1_000)
    # Exit at the market when a tick is this many % off the best price since the entry (0: off).
    trailing_stop_pct: float = Field(default=0.0, ge=0, lt=100)

    @field_validator("entry_from_ist", "entry_until_ist", "exit_at_ist")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if value:
            parse_hhmm(value)  # ValueError: expected HH:MM
        return value

    @model_validator(mode="after")
    def _entry_window_is_one(self) -> MomentumRsiParams:
        if self.entry_from_ist and self.entry_until_ist and \
                parse_hhmm(self.entry_from_ist) >= parse_hhmm(self.entry_until_ist):
            raise ValueError(f"entry_from_ist {self.entry_from_ist} must be before entry_until_ist "
                             f"{self.entry_until_ist}")
        return self

    @model_validator(mode="after")
    def _risk_needs_a_stop(self) -> MomentumRsiParams:
        if self.risk_per_trade and not (self.stop_loss_pct or self.trailing_stop_pct):
            raise ValueError("risk_per_trade sizes an entry by its stop: set stop_loss_pct or trailing_stop_pct too")
        return self

    @model_validator(mode="after")
    def _thresholds_are_ordered(self) -> MomentumRsiParams:
        if self.exit_long_rsi >= self.entry_long_rsi:
            raise ValueError("exit_long_rsi must be below entry_long_rsi")
        if self.exit_short_rsi <= self.entry_short_rsi:
            raise ValueError("exit_short_rsi must be above entry_short_rsi")
        return self


class _TokenState:
    __slots__ = ("close", "ema", "prev_rsi", "rsi")

    def __init__(self, rsi_period: int, ema_period: int) -> None:
        self.rsi = RSI(rsi_period)
        self.ema = EMA(ema_period)
        self.prev_rsi: float | None = None
        self.close = 0

    def update(self, close: int) -> float | None:
        """Take a candle's close; returns the RSI before it (None: not warm yet)."""
        prev, self.prev_rsi = self.prev_rsi, self.rsi.update(close)
        self.ema.update(close)
        self.close = close
        return prev


@register
class MomentumRsi(Strategy):
    kind = "MOMENTUM_RSI"
    Params = MomentumRsiParams
    reset_on = frozenset({"rsi_period", "ema_period", "trend_index", "trend_ema_period"})
    intraday_only = True  # every intent is MIS (_intent)
    params: MomentumRsiParams

    def __init__(self, name: str, params: MomentumRsiParams, tokens: frozenset[int] = frozenset()) -> None:
        # Each token's latest closes, kept across resets: a period change warms the new indicators up from them at
        # once, instead of leaving the strategy blind, exits included, for a whole warm-up.
        self._closes: dict[int, deque[int]] = {}
        self._index_closes: dict[str, deque[int]] = {}  # the same, for each index followed (by upper-case symbol)
        # token -> (entry price, long, the best price a tick reached since): for the trailing stop (_best_price).
        self._best: dict[int, tuple[int, bool, int]] = {}
        super().__init__(name, params, tokens)

    @classmethod
    def indices_of(cls, params: BaseModel) -> frozenset[str]:
        trend = getattr(params, "trend_index", "")
        return frozenset({trend}) if trend else frozenset()

    def reset(self) -> None:
        p = self.params
        self._state: dict[int, _TokenState] = {}
        for token, closes in self._closes.items():
            state = self._state[token] = _TokenState(p.rsi_period, p.ema_period)
            for close in closes:
                state.update(close)
        self._trend = EMA(p.trend_ema_period)
        self._trend_close = 0
        for close in self._index_closes.get(p.trend_index.upper(), ()):
            self._trend.update(close)
            self._trend_close = close

    def on_index_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> None:
        name = candle.symbol.upper()
        closes = self._index_closes.get(name)  # every index's: a trend_index changed to another starts warm
        if closes is None:
            closes = self._index_closes[name] = deque(maxlen=MAX_EMA_PERIOD)
        closes.append(candle.close_paise)
        if name == self.params.trend_index.upper():
            self._trend.update(candle.close_paise)
            self._trend_close = candle.close_paise

    def _with_the_market(self, side: trading_pb2.Side) -> bool:
        """Whether an entry on `side` goes with trend_index's trend (always, without one; never before it is warm)."""
        if not self.params.trend_index:
            return True
        ema = self._trend.value
        if ema is None:
            return False
        return self._trend_close > ema if side == trading_pb2.SIDE_BUY else self._trend_close < ema

    def _trend_said(self, where: str) -> str:
        """An entry's reason names the trend it went with (its Telegram notification shows it)."""
        if not self.params.trend_index:
            return ""
        return f", {self.params.trend_index} {where} its EMA {fmt_inr(round(self._trend.value or 0))}"

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[Decision]:
        p = self.params
        token, close = candle.token, candle.close_paise
        closes = self._closes.get(token)
        if closes is None:
            closes = self._closes[token] = deque(maxlen=WARM_UP_CLOSES)
        closes.append(close)
        state = self._state.get(token)
        if state is None:
            state = self._state[token] = _TokenState(p.rsi_period, p.ema_period)
        prev = state.update(close)
        rsi, ema = state.rsi.value, state.ema.value
        timed = self.time_exit(token, close, ctx, p.exit_at_ist)
        if timed is not None:
            return timed
        if rsi is None or ema is None:
            return []
        if self.is_pending(token, ctx.now_ns):
            change = self._reprice(token, close, ema, ctx)
            return [] if change is None else [change]
        if self.position(token):
            return self._exit(token, close, rsi, ema, ctx)
        if prev is None:
            return []
        if prev < p.entry_long_rsi <= rsi and close > ema and self._with_the_market(trading_pb2.SIDE_BUY):
            side, reason = trading_pb2.SIDE_BUY, (f"RSI crossed above {p.entry_long_rsi:g} ({rsi:.1f}), close above "
                                                  f"EMA {fmt_inr(round(ema))}" + self._trend_said("above"))
        elif (p.allow_short and prev > p.entry_short_rsi >= rsi and close < ema
              and self._with_the_market(trading_pb2.SIDE_SELL)):
            side, reason = trading_pb2.SIDE_SELL, (f"RSI crossed below {p.entry_short_rsi:g} ({rsi:.1f}), close below "
                                                   f"EMA {fmt_inr(round(ema))}" + self._trend_said("below"))
        else:
            return []
        if not self._may_enter(ctx.now_ns):
            return []
        # Sized at the worst price it fills at: a LIMIT's own (a MARKET order's is not known; the close stands for it).
        at = close if p.order_type == "MARKET" else limit_through(close, side, p.limit_slippage_pct,
                                                                   ctx.instruments.get(token))
        stop = self._entry_stop(at, side)
        quantity = self.entry_quantity(token, ctx, at, p.quantity, p.order_value, p.risk_per_trade, stop)
        reason += self.sized_by_risk(p.risk_per_trade, stop)
        return [self._intent(token, close, ctx, side, quantity, reason)] if quantity else []

    def _entry_stop(self, price: int, side: trading_pb2.Side) -> int:
        """The stop of an entry at `price` (the tighter of stop_loss_pct and trailing_stop_pct), 0 without one."""
        pct = min((x for x in (self.params.stop_loss_pct, self.params.trailing_stop_pct) if x), default=0.0)
        if not pct:
            return 0
        return moved_by_pct(price, -pct if side == trading_pb2.SIDE_BUY else pct)

    def _may_enter(self, now_ns: int) -> bool:
        """Within the entry window, and below max_positions."""
        p = self.params
        if p.entry_from_ist or p.entry_until_ist:
            minute = ist_minute_of_day(now_ns)
            if p.entry_from_ist and minute < hhmm_minutes(p.entry_from_ist):
                return False
            if p.entry_until_ist and minute >= hhmm_minutes(p.entry_until_ist):
                return False
        if p.max_positions:
            taken = {token for (token, _), held in self.positions().items() if held}
            taken.update(token for token in self.pending_tokens() if self.is_pending(token, now_ns))
            return len(taken) < p.max_positions
        return True

    def closes_needed(self) -> int:
        """RSI needs rsi_period + 1 closes for a value and one more for the cross; the EMA ema_period; the trend
        index's EMA trend_ema_period (of the index's closes: the engine reads that many of them too)."""
        p = self.params
        return max(p.rsi_period + 2, p.ema_period, p.trend_ema_period if p.trend_index else 0)

    def unguarded(self, now_ns: int) -> list[int]:
        """The held tokens with no exit against them for now: their RSI or EMA not warm (the warm-up at start failed,
        timed out or was off) and no stop_loss_pct or trailing_stop_pct, they ride any fall until the indicators are
        warm again, up to closes_needed() live minutes."""
        p = self.params
        if p.stop_loss_pct or p.trailing_stop_pct:
            return []
        held = sorted({token for (token, _), quantity in self.positions().items() if quantity})
        return [token for token in held if not self._warm(token)]

    def _warm(self, token: int) -> bool:
        state = self._state.get(token)
        return state is not None and state.rsi.value is not None and state.ema.value is not None

    def exits_due(self, ctx: StrategyContext) -> list[OrderIntent]:
        """The exits the indicators (warmed up again after a period change, or from stored candles at start) call
        for at each token's latest close."""
        out: list[OrderIntent] = []
        for token, state in self._state.items():
            rsi, ema = state.rsi.value, state.ema.value
            if rsi is None or ema is None or self.is_pending(token, ctx.now_ns):
                continue
            out.extend(d for d in self._exit(token, state.close, rsi, ema, ctx) if isinstance(d, OrderIntent))
        return out

    def _exit(self, token: int, close: int, rsi: float, ema: float, ctx: StrategyContext) -> list[Decision]:
        """The exit a close calls for (no order of ours under way): a stop reached (or due since) at the market
        through stop_exit, as at a tick (a refusal goes again a second later); a target, or the indicators, as
        order_type says."""
        p, pos = self.params, self.position(token)
        if not pos:
            return []
        due = self.due_stop(token)
        if due:
            return self.stop_exit(token, close, due, ctx)
        side = exit_side(pos)
        stop = self._stop_or_target(token, close, pos)
        if stop is not None:
            reason, at_market = stop
            if at_market:
                return self.stop_exit(token, close, reason, ctx)
            return [self._intent(token, close, ctx, side, abs(pos), reason)]
        if pos > 0 and (rsi < p.exit_long_rsi or close < ema):
            return [self._intent(token, close, ctx, side, pos, f"exit long: RSI {rsi:.1f}, EMA {fmt_inr(round(ema))}")]
        if pos < 0 and (rsi > p.exit_short_rsi or close > ema):
            return [self._intent(token, close, ctx, side, -pos,
                                 f"exit short: RSI {rsi:.1f}, EMA {fmt_inr(round(ema))}")]
        return []

    def price_levels(self, token: int, now_ns: int) -> tuple[int, int] | None:
        """The stop loss and the target of the position in `token` (_exit_levels), watched on every tick, and with
        a trailing stop the price of a new best too (on_price_level moves the stop up to it). While an order of ours
        works, the stop (stop_while_working: a LIMIT exit is moved, an entry partly filled cancelled) and a new best:
        the price may run while the rest of a LIMIT entry works, and the stop is to trail from there once it ends.
        Once a stop was reached, every tick until the position is flat (stop_exit)."""
        pos = self.position(token)
        levels = self._exit_levels(token, pos)
        if levels is None:
            self._best.pop(token, None)  # flat: the next position's best starts at its entry
            return None
        low, high, _ = levels
        if self.is_pending(token, now_ns):
            watched = self.stop_while_working(token, low if pos > 0 else (high if high != NEVER else 0))
            if watched is None or not self.params.trailing_stop_pct:
                return watched
            best = self._best_price(token, pos)
            return (watched[0], best + 1) if pos > 0 else (best - 1, watched[1])
        if self.due_stop(token):
            return EVERY_TICK
        if self.params.trailing_stop_pct:
            best = self._best_price(token, pos)
            if pos > 0:
                high = min(high, best + 1)
            else:
                low = max(low, best - 1)
        return low, high

    def on_price_level(self, tick: market_pb2.Tick, ctx: StrategyContext) -> list[Decision]:
        """A tick reached the stop loss, the trailing stop or the target: the exit goes now (as _exit's would at a
        close); a stop's at the market, through stop_exit (which, while an order of ours works in the token, moves a
        LIMIT exit or cancels an entry partly filled first). A new best price moves the trailing stop."""
        token, price = tick.token, tick.ltp_paise
        pos = self.position(token)
        due = self.due_stop(token)
        if due:
            return self.stop_exit(token, price, due, ctx)
        if self.params.trailing_stop_pct and pos and price > 0:
            best = self._best_price(token, pos)
            if (price > best) if pos > 0 else (price < best):
                self._best[token] = (self.entry_price(token), pos > 0, price)
        hit = self._stop_or_target(token, price, pos, "tick")
        if hit is None:
            return []
        reason, at_market = hit
        if at_market:
            return self.stop_exit(token, price, reason, ctx)
        if self.is_pending(token, ctx.now_ns):
            return []
        return [self.mis_order(token, exit_side(pos), abs(pos), price, ctx, reason,
                               self.params.order_type == "MARKET", self.params.limit_slippage_pct)]

    def exit_prices(self, token: int, now_ns: int) -> tuple[int, int]:
        pos = self.position(token)
        levels = self._exit_levels(token, pos)
        if levels is None:
            return 0, 0
        low, high, _ = levels
        stop, target = (low, high) if pos > 0 else (high, low)
        return (stop if 0 < stop < NEVER else 0), (target if 0 < target < NEVER else 0)

    def on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        """A fill that adds to the position held (the rest of a LIMIT entry) moves its average entry price; the best
        price since the entry stays what it was, or the trailing stop would trail from the new average again."""
        token = update.request.token
        held, entry, kept = self.position(token), self.entry_price(token), self._best.get(token)
        super().on_order_update(update)
        pos = self.position(token)
        if kept is None or not held or not pos or (held > 0) != (pos > 0) or kept[:2] != (entry, held > 0):
            return
        entry = self.entry_price(token)
        self._best[token] = (entry, pos > 0, max(kept[2], entry) if pos > 0 else min(kept[2], entry))

    def since_entries(self) -> dict[int, int]:
        """With a trailing stop, the held tokens whose entry time is known: after a restart their best price since
        the entry comes back from the stored ticks (restore_extremes)."""
        if not self.params.trailing_stop_pct:
            return {}
        held = {token for (token, _), quantity in self.positions().items() if quantity}
        return {token: when for token in sorted(held) if (when := self.entry_time(token))}

    def restore_extremes(self, token: int, high: int, low: int) -> None:
        pos, entry = self.position(token), self.entry_price(token)
        if not pos or not entry:
            return
        best = max(entry, high) if pos > 0 else min(entry, low or entry)
        self._best[token] = (entry, pos > 0, best)

    def _best_price(self, token: int, pos: int) -> int:
        """The best price of the position `pos` in `token` since its entry that a tick reached (the highest for a
        long, the lowest for a short; the entry price until one beats it; after a restart, from the stored ticks
        since the entry: restore_extremes)."""
        entry, kept = self.entry_price(token), self._best.get(token)
        if kept is None or kept[:2] != (entry, pos > 0):
            return entry
        return kept[2]

    def _exit_levels(self, token: int, pos: int) -> tuple[int, int, bool] | None:
        """(low, high, trailing) paise: a price at or below low, or at or above high, exits the position `pos` in
        `token`. A long's low is its stop (the fixed stop loss, or the trailing stop under the best price once that
        is higher: `trailing` says so) and its high its target; a short's the other way round. One turned off is 0
        (low) or NEVER (high). Whole paise, exactly: a price at or below low is at least stop_loss_pct under."""
        p, entry = self.params, self.entry_price(token)
        if not pos or not entry or not (p.stop_loss_pct or p.target_pct or p.trailing_stop_pct):
            return None
        best = self._best_price(token, pos) if p.trailing_stop_pct else 0
        if pos > 0:
            fixed = moved_by_pct(entry, -p.stop_loss_pct) if p.stop_loss_pct else 0
            trail = moved_by_pct(best, -p.trailing_stop_pct) if p.trailing_stop_pct else 0
            return max(fixed, trail), moved_by_pct(entry, p.target_pct) if p.target_pct else NEVER, trail > fixed
        fixed = moved_by_pct(entry, p.stop_loss_pct) if p.stop_loss_pct else NEVER
        trail = moved_by_pct(best, p.trailing_stop_pct) if p.trailing_stop_pct else NEVER
        return moved_by_pct(entry, -p.target_pct) if p.target_pct else 0, min(fixed, trail), trail < fixed

    def _stop_or_target(self, token: int, price: int, pos: int, what: str = "close") -> tuple[str, bool] | None:
        """The reason of the stop loss or the trailing stop (at the market: True) or of the target (False) when
        `price` (a close, a tick's) reached one."""
        levels = self._exit_levels(token, pos)
        if levels is None or price <= 0 or levels[0] < price < levels[1]:
            return None
        low, high, trailing = levels
        p, entry = self.params, self.entry_price(token)
        stopped = price <= low if pos > 0 else price >= high
        if stopped and trailing:
            best = self._best_price(token, pos)
            off_pct = abs(price - best) * 100 / best
            return (f"trailing stop {p.trailing_stop_pct:g}%: {what} {fmt_inr(price)}, {off_pct:.2f}% "
                    f"{'under' if pos > 0 else 'over'} the best {fmt_inr(best)} since the entry {fmt_inr(entry)}",
                    True)
        gain_pct = (price - entry) * 100 / entry * (1 if pos > 0 else -1)
        said = f"{what} {fmt_inr(price)}, {abs(gain_pct):.2f}% {'over' if price > entry else 'under'} the entry " \
               f"{fmt_inr(entry)}"
        if stopped:
            return f"stop loss {p.stop_loss_pct:g}%: {said}", True
        return f"target {p.target_pct:g}%: {said}", False

    def _reprice(self, token: int, close: int, ema: float, ctx: StrategyContext) -> OrderChange | None:
        """A LIMIT order of ours still working at a candle's close follows the market to that close (priced as an order
        made there would be: limit_slippage_pct worse), up to max_reprices times per order: an exit always (the
        position is to close), an entry only while the close stays on its trend's side of the EMA (above for a buy,
        below for a sell), with its quantity sized again there (_resized), and not moved when that is no more than
        has filled (a change must leave more than that; the rest then waits at its price, within the budget)."""
        most, working = self.params.max_reprices, self.working_order(token)
        if (not most or working is None or working.order_type != trading_pb2.ORDER_TYPE_LIMIT or working.changing
                or working.changes >= most or working.remaining <= 0):
            return None
        price = limit_through(close, working.side, self.params.limit_slippage_pct, ctx.instruments.get(token))
        if price == working.limit_price_paise:
            return None
        held, buying = self.position(token), working.side == trading_pb2.SIDE_BUY
        exiting = held < 0 if buying else held > 0
        if not exiting and buying != (close > ema):
            return None
        quantity = working.quantity if exiting else self._resized(token, working, price, ctx)
        if quantity <= working.filled_quantity:  # the budget at the new price is spent: the rest waits where it is
            return None
        what = "exit" if exiting else "entry"
        said = f"{what} repriced to the close ({working.changes + 1} of {most}), EMA {fmt_inr(round(ema))}"
        if quantity != working.quantity:
            said += f"; {quantity} units, as many as its budget buys there"
            return OrderChange(token, limit_price_paise=price, quantity=quantity, reason=said)
        return OrderChange(token, limit_price_paise=price, reason=said)

    def _resized(self, token: int, working: WorkingOrder, price: int, ctx: StrategyContext) -> int:
        """The quantity of the working entry `working` moved to `price`: sized again there by order_value and
        risk_per_trade (ceilings, which the order that fills must keep too), never more than it was."""
        p = self.params
        if not p.order_value and not p.risk_per_trade:
            return working.quantity
        side = trading_pb2.SIDE_BUY if working.side == trading_pb2.SIDE_BUY else trading_pb2.SIDE_SELL
        sized = self.entry_quantity(token, ctx, price, p.quantity, p.order_value, p.risk_per_trade,
                                    self._entry_stop(price, side))
        return min(working.quantity, sized)

    def _intent(self, token: int, close: int, ctx: StrategyContext, side: trading_pb2.Side, quantity: int,
                reason: str) -> OrderIntent:
        """An order as order_type says: at the market, or a LIMIT at `close` (limit_slippage_pct worse)."""
        return self.mis_order(token, side, quantity, close, ctx, reason, self.params.order_type == "MARKET",
                              self.params.limit_slippage_pct)
