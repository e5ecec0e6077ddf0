"""Review checks: indicators and candles against plain reference computations, MOMENTUM_RSI against its rules.

The references are written here the textbook way (whole series, no incremental state), so a slip in the
incremental code shows up as a mismatch over a few hundred random closes with flat stretches and gaps.
"""

import itertools
import random
from datetime import date
from fractions import Fraction

import pytest

from services.strategy.candles import CandleBuilder
from services.strategy.engine import StrategyEngine
from services.strategy.indicators import EMA, RSI, SMA
from services.strategy.momentum_rsi import (
    MAX_EMA_PERIOD,
    MAX_RSI_PERIOD,
    WARM_UP_CLOSES,
    MomentumRsi,
    MomentumRsiParams,
)
from services.strategy.plugins import OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

DAY = date(2026, 1, 20)
T0915 = ist_ns(DAY, 9, 15)
MINUTE = 60 * NS
SBIN = 3045


# -- references ----------------------------------------------------------------------------------
def closes_with_flats_and_gaps(seed: int, n: int = 400) -> list[int]:
    """A random walk in paise on a 5-paise grid, with flat stretches and overnight-style gaps."""
    rng = random.Random(seed)
    price, out = 500_00, []
    while len(out) < n:
        roll = rng.random()
        if roll < 0.08:
            out.extend([price] * rng.randint(3, 25))  # flat stretch
        elif roll < 0.12:
            price = max(5, price + rng.choice((-1, 1)) * rng.randint(1_000, 3_000) * 5)  # gap
            out.append(price)
        else:
            price = max(5, price + rng.randint(-40, 40) * 5)
            out.append(price)
    return out[:n]


def reference_rsi(closes: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(closes)
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gains = [c if c > 0 else 0.0 for c in changes]
    losses = [-c if c < 0 else 0.0 for c in changes]

    def rsi(g: float, lo: float) -> float:
        if lo == 0:
            return 100.0 if g > 0 else 50.0
        return 100.0 - 100.0 / (1.0 + g / lo)

    if len(changes) < n:
        return out
    g, lo = sum(gains[:n]) / n, sum(losses[:n]) / n
    out[n] = rsi(g, lo)
    for i in range(n, len(changes)):
        g = (g * (n - 1) + gains[i]) / n
        lo = (lo * (n - 1) + losses[i]) / n
        out[i + 1] = rsi(g, lo)
    return out


def reference_ema(closes: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(closes)
    if len(closes) < n:
        return out
    k = 2 / (n + 1)
    ema = sum(closes[:n]) / n
    out[n - 1] = ema
    for i in range(n, len(closes)):
        ema = closes[i] * k + ema * (1 - k)
        out[i] = ema
    return out


def reference_sma(closes: list[float], n: int) -> list[float | None]:
    return [None if i < n - 1 else sum(closes[i - n + 1:i + 1]) / n for i in range(len(closes))]


def approx_series(expected: list[float | None]) -> list:
    return [None if e is None else pytest.approx(e, rel=1e-9, abs=1e-9) for e in expected]


# -- 1. indicators -------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "period"), [(1, 14), (2, 7), (3, 2), (4, 30)])
def test_rsi_matches_a_plain_wilder_computation_over_random_closes_with_flats_and_gaps(seed, period):
    closes = closes_with_flats_and_gaps(seed)
    rsi = RSI(period)
    assert [rsi.update(x) for x in closes] == approx_series(reference_rsi(closes, period))


@pytest.mark.parametrize(("seed", "period"), [(5, 9), (6, 1), (7, 50)])
def test_ema_matches_a_plain_sma_seeded_computation_over_random_closes(seed, period):
    closes = closes_with_flats_and_gaps(seed)
    ema = EMA(period)
    assert [ema.update(x) for x in closes] == approx_series(reference_ema(closes, period))


@pytest.mark.parametrize(("seed", "period"), [(8, 20), (9, 1), (10, 3)])
def test_sma_matches_the_mean_of_each_window_over_random_closes(seed, period):
    closes = closes_with_flats_and_gaps(seed)
    sma = SMA(period)
    assert [sma.update(x) for x in closes] == approx_series(reference_sma(closes, period))


def test_rsi_of_a_flat_series_is_50_and_of_a_series_without_losses_is_100():
    flat, rising = RSI(5), RSI(5)
    assert [flat.update(x) for x in [7] * 10][5:] == [50.0] * 5
    assert [rising.update(x) for x in [1, 2, 2, 3, 3, 4, 4, 4]][5:] == [100.0] * 3


# -- 2. candles ----------------------------------------------------------------------------------
def tick(ts_ns, ltp, ltq=1, volume=0, token=SBIN):
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=ltq,
                           volume=volume)


def ohlcv(c):
    return (c.start_ns, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume)


def test_candle_volume_is_the_growth_of_the_cumulative_day_volume_when_trades_are_conflated():
    # SFeed sends snapshots: between two updates several trades may print; ltq is only the last one's.
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 5 * NS, 100_00, ltq=100, volume=100),
                      tick(T0915 + 20 * NS, 100_05, ltq=30, volume=180),  # 80 traded, last trade 30
                      tick(T0915 + 40 * NS, 100_05, ltq=0, volume=180)])  # a quote update: nothing traded
    (candle, _), = builder.on_ticks([tick(T0915 + MINUTE + 1 * NS, 100_10, ltq=20, volume=250)])
    assert candle.volume == 180
    assert builder.open_candle(SBIN).volume == 70


def test_the_first_tick_seen_in_a_day_counts_its_own_trade_not_the_day_volume_before_it():
    builder = CandleBuilder()  # e.g. started at noon: the day's volume so far belongs to earlier candles
    builder.on_ticks([tick(T0915 + 5 * NS, 100_00, ltq=10, volume=1_000_000)])
    assert builder.open_candle(SBIN).volume == 10


def test_cumulative_volume_restarts_with_the_next_ist_day():
    builder = CandleBuilder()
    builder.on_ticks([tick(ist_ns(DAY, 15, 29, 30), 100_00, ltq=10, volume=2_000_000)])
    next_day = ist_ns(date(2026, 1, 21), 9, 15)
    builder.on_ticks([tick(next_day + 3 * NS, 101_00, ltq=40, volume=40),
                      tick(next_day + 9 * NS, 101_05, ltq=5, volume=60)])
    assert builder.open_candle(SBIN).volume == 60


def test_a_tick_without_day_volume_in_a_stream_that_has_it_leaves_the_volume_to_the_next_cumulative():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 1 * NS, 100_00, ltq=10, volume=500),
                      tick(T0915 + 2 * NS, 100_05, ltq=7, volume=0),  # field missing from this update
                      tick(T0915 + 3 * NS, 100_05, ltq=3, volume=510)])
    assert builder.open_candle(SBIN).volume == 20


def test_a_duplicated_tick_does_not_count_its_volume_twice():
    builder = CandleBuilder()
    t = tick(T0915 + 1 * NS, 100_00, ltq=10, volume=510)
    builder.on_ticks([tick(T0915, 100_00, ltq=10, volume=500), t, t])
    assert builder.open_candle(SBIN).volume == 20


def test_a_tick_of_an_earlier_second_arriving_late_in_the_minute_is_not_the_close():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 10 * NS, 100_00), tick(T0915 + 30 * NS, 100_50), tick(T0915 + 20 * NS, 100_20)])
    candle = builder.open_candle(SBIN)
    assert (candle.open_paise, candle.high_paise, candle.low_paise, candle.close_paise) == (
        100_00, 100_50, 100_00, 100_50)


def test_a_tick_of_an_earlier_second_arriving_late_in_the_minute_is_the_open():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 30 * NS, 100_50), tick(T0915 + 10 * NS, 100_00)])
    candle = builder.open_candle(SBIN)
    assert (candle.open_paise, candle.close_paise) == (100_00, 100_50)


def test_ticks_of_the_same_second_keep_their_arrival_order():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 10 * NS, 100_00), tick(T0915 + 10 * NS, 100_10), tick(T0915 + 10 * NS, 100_05)])
    candle = builder.open_candle(SBIN)
    assert (candle.open_paise, candle.close_paise) == (100_00, 100_05)


def test_a_tick_in_the_last_nanosecond_of_a_minute_is_in_its_candle_until_the_timer_reaches_the_minute_end():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 10 * NS, 100_00)])
    assert builder.close_due(T0915 + MINUTE - 1) == []
    builder.on_ticks([tick(T0915 + MINUTE - 1, 100_05)])
    (candle, recv_ns), = builder.close_due(T0915 + MINUTE)
    assert (candle.start_ns, candle.close_paise, candle.tick_count, recv_ns) == (T0915, 100_05, 2, 0)


def reference_candles(ticks: list[market_pb2.Tick]) -> list[tuple]:
    """OHLCV per (token, minute) from ticks sorted by time (stable: arrival order within a second)."""
    out = []
    for token in sorted({t.token for t in ticks}):
        mine = sorted((t for t in ticks if t.token == token), key=lambda t: t.ts_ns)
        prev_cum = 0
        for minute in sorted({t.ts_ns // MINUTE for t in mine}):
            inside = [t for t in mine if t.ts_ns // MINUTE == minute]
            prices = [t.ltp_paise for t in inside]
            cum = max(t.volume for t in inside)
            volume = cum - prev_cum
            prev_cum = cum
            out.append((token, minute * MINUTE, prices[0], max(prices), min(prices), prices[-1], volume))
    return out


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_candles_match_a_plain_grouping_of_random_ticks_shuffled_within_each_minute(seed):
    rng = random.Random(seed)
    ticks, cum = [], {1: 0, 2: 0}
    for minute in range(30):
        batch = []
        for second in sorted(rng.sample(range(60), rng.randint(0, 12))):  # some minutes have no ticks
            token = rng.choice((1, 2))
            ltq = rng.choice((1, 5, 10, 50))
            cum[token] += ltq + rng.choice((0, 0, 0, 20))  # now and then trades the feed conflated
            batch.append(tick(T0915 + minute * MINUTE + second * NS, rng.randint(990, 1010) * 10, ltq, cum[token],
                              token))
        rng.shuffle(batch)  # arrival order within a minute is not time order
        ticks.extend(batch)
    builder = CandleBuilder()
    built = [c for c, _ in builder.on_ticks(ticks)] + [c for c, _ in builder.close_due(T0915 + 31 * MINUTE)]
    got = sorted((c.token, c.start_ns, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume)
                 for c in built)
    # The first tick to arrive for a token has no earlier cumulative: its own ltq is its volume.
    expected = reference_candles(ticks)
    firsts = {token: next(t for t in ticks if t.token == token) for token in (1, 2)}
    expected = [(*row[:6], row[6] - firsts[row[0]].volume + firsts[row[0]].ltq)
                if row[1] == firsts[row[0]].ts_ns // MINUTE * MINUTE else row for row in expected]
    assert got == sorted(expected)
    assert builder.late_ticks == 0


# -- 3. MOMENTUM_RSI -----------------------------------------------------------------------------
def candle(i: int, close: int, token: int = SBIN) -> market_pb2.Candle:
    return market_pb2.Candle(token=token, start_ns=T0915 + i * MINUTE, open_paise=close, high_paise=close,
                             low_paise=close, close_paise=close)


def update(side, quantity, status=trading_pb2.ORDER_STATUS_TRADED, tag="mom"):
    return trading_pb2.OrderUpdate(status=status, last_fill_quantity=quantity, last_fill_price_paise=100_00,
                                   request=trading_pb2.OrderRequest(token=SBIN, side=side, strategy_tag=tag))


def reference_decisions(closes, p: MomentumRsiParams) -> list[tuple[int, int, int]]:
    """The docstring's rules on plain indicator series, every order filling at once: (index, side, qty)."""
    rsi, ema = reference_rsi([float(c) for c in closes], p.rsi_period), reference_ema(closes, p.ema_period)
    pos, out = 0, []
    for i, close in enumerate(closes):
        r, e, prev = rsi[i], ema[i], rsi[i - 1] if i else None
        if r is None or e is None:
            continue
        if pos > 0 and (r < p.exit_long_rsi or close < e):
            out.append((i, trading_pb2.SIDE_SELL, pos))
            pos = 0
        elif pos < 0 and (r > p.exit_short_rsi or close > e):
            out.append((i, trading_pb2.SIDE_BUY, -pos))
            pos = 0
        elif pos == 0 and prev is not None and prev < p.entry_long_rsi <= r and close > e:
            out.append((i, trading_pb2.SIDE_BUY, p.quantity))
            pos = p.quantity
        elif pos == 0 and p.allow_short and prev is not None and prev > p.entry_short_rsi >= r and close < e:
            out.append((i, trading_pb2.SIDE_SELL, p.quantity))
            pos = -p.quantity
    return out


def run(strategy: Strategy, closes, fill=True, first=0):
    ctx = StrategyContext(InstrumentBook(nse_instruments(["SBIN-EQ"])))
    out = []
    for i, close in enumerate(closes, start=first):
        ctx.now_ns = T0915 + (i + 1) * MINUTE
        for intent in strategy.on_candle(candle(i, close), ctx):
            strategy.mark_sent(intent, ctx.now_ns)
            out.append((i, intent))
            if fill:
                strategy.on_order_update(update(intent.side, intent.quantity))
    return out


@pytest.mark.parametrize(("seed", "params"), [
    (21, {}), (22, {"rsi_period": 14, "ema_period": 20, "quantity": 3}), (23, {"allow_short": False}),
    (24, {"rsi_period": 2, "ema_period": 2, "entry_long_rsi": 70, "exit_long_rsi": 30})])
def test_momentum_rsi_trades_exactly_the_documented_rules_over_random_closes(seed, params):
    closes = closes_with_flats_and_gaps(seed, 300)
    p = MomentumRsiParams(**params)
    got = run(MomentumRsi("mom", p), closes)
    assert [(i, t.side, t.quantity) for i, t in got] == reference_decisions(closes, p)
    assert len(got) >= 4
    # A LIMIT at the tick furthest through the close within limit_slippage_pct (0.05%): buys over it, sells under.
    by = Fraction(repr(p.limit_slippage_pct)) / 100
    bound = {i: closes[i] * (1 + by if t.side == trading_pb2.SIDE_BUY else 1 - by) for i, t in got}
    assert all(t.limit_price_paise % 5 == 0 and (
        closes[i] <= t.limit_price_paise <= bound[i] < t.limit_price_paise + 5 if t.side == trading_pb2.SIDE_BUY else
        closes[i] >= t.limit_price_paise >= bound[i] > t.limit_price_paise - 5) for i, t in got)


def test_no_signal_before_the_warm_up_even_when_the_closes_cross_early():
    # rsi_period 3, ema_period 6: RSI from the 4th close (0, then 60 at the 5th: a cross), the EMA from the 6th.
    strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=6, allow_short=False))
    closes = [100_00, 99_00, 98_00, 97_00, 100_00, 96_00, 95_00, 94_00, 99_00]
    assert [i for i, _ in run(strategy, closes, fill=False)] == [8]


def test_after_a_partial_fill_and_a_cancel_the_exit_sells_what_was_filled_and_no_new_entry_is_sent():
    strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3, quantity=10))
    (_, entry), = run(strategy, [100_00, 99_00, 98_00, 97_00, 96_00, 100_00], fill=False)
    strategy.on_order_update(update(entry.side, 4, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED))
    assert run(strategy, [99_00, 103_00], fill=False, first=6) == []  # still working: nothing, not even exits
    strategy.on_order_update(update(entry.side, 0, trading_pb2.ORDER_STATUS_CANCELLED))
    (_, exit_), = run(strategy, [95_00], fill=False, first=8)
    assert (exit_.side, exit_.quantity) == (trading_pb2.SIDE_SELL, 4)


def engine_with_momentum(**params) -> StrategyEngine:
    strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3, **params))
    return StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0915))


def reject(engine: StrategyEngine) -> None:
    engine.on_decision(trading_pb2.RiskDecision(accepted=False, reason_code="MARKET_HOURS", strategy="mom",
                                                order=trading_pb2.OrderRequest(token=SBIN)))


def test_a_rejected_entry_is_not_sent_again_without_a_new_cross():
    engine = engine_with_momentum()
    strategy = engine.strategies["mom"]
    assert len(run(strategy, [100_00, 99_00, 98_00, 97_00, 96_00, 100_00], fill=False)) == 1
    reject(engine)
    assert not strategy.is_pending(SBIN, T0915 + 7 * MINUTE)
    assert run(strategy, [101_00], fill=False, first=6) == []  # RSI still above 60: no cross, no entry


def test_a_rejected_exit_is_sent_again_on_the_next_candle_for_the_whole_position():
    engine = engine_with_momentum(quantity=2)
    strategy = engine.strategies["mom"]
    (_, entry), = run(strategy, [100_00, 99_00, 98_00, 97_00, 96_00, 100_00], fill=False)
    strategy.on_order_update(update(entry.side, entry.quantity))
    (_, first), = run(strategy, [95_00], fill=False, first=6)
    reject(engine)
    (_, again), = run(strategy, [94_00], fill=False, first=7)
    assert [(x.side, x.quantity) for x in (first, again)] == [(trading_pb2.SIDE_SELL, 2)] * 2


def test_changing_thresholds_mid_stream_keeps_the_indicators_as_if_they_had_always_been_set():
    closes = closes_with_flats_and_gaps(31, 200)
    changed = MomentumRsi("mom", MomentumRsiParams())
    run(changed, closes[:100])
    changed.apply_params(MomentumRsiParams(entry_long_rsi=65, exit_long_rsi=45, quantity=2))
    fresh = MomentumRsi("mom", MomentumRsiParams(entry_long_rsi=65, exit_long_rsi=45, quantity=2))
    run(fresh, closes[:100])
    fresh._positions = dict(changed._positions)
    assert [(i, t) for i, t in run(changed, closes[100:], first=100)] == run(fresh, closes[100:], first=100)
    assert changed._state[SBIN].rsi.value == pytest.approx(reference_rsi(closes, 7)[-1], rel=1e-9)


def test_changing_a_period_mid_stream_warms_the_indicators_up_as_if_that_period_had_always_been_set():
    closes = closes_with_flats_and_gaps(32, 200)
    changed = MomentumRsi("mom", MomentumRsiParams())
    run(changed, closes[:100])
    flat = changed.position(SBIN) == 0
    changed.apply_params(MomentumRsiParams(rsi_period=5, ema_period=12))
    assert changed._state[SBIN].rsi.value == pytest.approx(reference_rsi(closes[:100], 5)[-1], rel=1e-9)
    run(changed, closes[100:], fill=flat, first=100)
    assert changed._state[SBIN].rsi.value == pytest.approx(reference_rsi(closes, 5)[-1], rel=1e-9)
    assert changed._state[SBIN].ema.value == pytest.approx(reference_ema(closes, 12)[-1], rel=1e-9)


def test_a_period_change_warms_up_from_the_latest_closes_kept_only():
    closes = closes_with_flats_and_gaps(33, WARM_UP_CLOSES + 300)
    changed = MomentumRsi("mom", MomentumRsiParams())
    run(changed, closes, fill=False)
    changed.apply_params(MomentumRsiParams(rsi_period=MAX_RSI_PERIOD, ema_period=MAX_EMA_PERIOD))
    kept = closes[-WARM_UP_CLOSES:]
    assert changed._state[SBIN].rsi.value == pytest.approx(reference_rsi(kept, MAX_RSI_PERIOD)[-1], rel=1e-9)
    assert changed._state[SBIN].ema.value == pytest.approx(reference_ema(kept, MAX_EMA_PERIOD)[-1], rel=1e-9)


def test_a_limit_price_off_the_tick_grid_is_snapped_onto_it():
    strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3))
    book = InstrumentBook([market_pb2.Instrument(token=SBIN, tick_size_paise=10, lot_size=1)])
    ctx = StrategyContext(book)
    intents = []
    for i, close in enumerate([100_00, 99_00, 98_00, 97_00, 96_00, 100_07]):
        ctx.now_ns = T0915 + (i + 1) * MINUTE
        intents += strategy.on_candle(candle(i, close), ctx)
    (intent,) = intents
    assert intent.limit_price_paise == 100_10


# -- 4. engine -----------------------------------------------------------------------------------
def test_a_plugin_whose_on_tick_raises_does_not_stop_candles_or_the_other_strategies():
    class BrokenOnTick(Strategy):
        kind = "BROKEN_ON_TICK"
        Params = MomentumRsiParams

        def on_candle(self, candle, ctx) -> list[OrderIntent]:
            return []

        def on_tick(self, tick, ctx) -> list[OrderIntent]:
            raise RuntimeError("bug in a plugin")

    healthy = MomentumRsi("healthy", MomentumRsiParams(rsi_period=3, ema_period=3))
    engine = StrategyEngine([BrokenOnTick("broken", MomentumRsiParams()), healthy],
                            InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0915))
    closes = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00, 100_00]
    candles, signals = [], []
    for i, close in enumerate(closes):
        out_candles, out_signals = engine.on_ticks([tick(T0915 + i * MINUTE + 5 * NS, close)])
        candles += out_candles
        signals += out_signals
    assert [c.close_paise for c in candles] == closes[:-1]
    assert [(s.strategy, s.side) for s in signals] == [("healthy", trading_pb2.SIDE_BUY)]
