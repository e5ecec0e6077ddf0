"""Indices (Instrument.is_index) in the strategy engine: their candles are built, no strategy trades them."""

from __future__ import annotations

from datetime import date

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from services.strategy.plugins import OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.config import load
from shared.contracts import market_pb2, trading_pb2
from shared.errors import ConfigError, InvalidInput
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.strategy.test_engine import BuyEveryTick, NoParams

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN, NIFTY = 3045, 26000
MINUTE = 60 * NS


class BuyEveryCandle(Strategy):
    """A test plugin: buys one share at every candle it is given, and notes each."""

    kind = "BUY_EVERY_CANDLE"
    Params = NoParams

    def reset(self) -> None:
        self.seen: list[int] = []

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[OrderIntent]:
        self.seen.append(candle.token)
        return [OrderIntent(candle.token, trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)]


def book() -> InstrumentBook:
    out = InstrumentBook(nse_instruments(["SBIN-EQ"]))
    out.add(market_pb2.Instrument(token=NIFTY, symbol="Nifty 50", exchange_segment="nse_cm", tick_size_paise=1,
                                  lot_size=1, is_index=True))
    return out


def tick(token: int, ts_ns: int, price: int) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=price, recv_ns=1)


def test_a_strategy_without_symbols_trades_every_instrument_but_an_index():
    strategy = BuyEveryCandle("every", NoParams())
    engine = StrategyEngine([strategy], book(), ManualClock(T0915))
    engine.on_ticks([tick(SBIN, T0915, 600_00), tick(NIFTY, T0915, 24_000_05)])

    candles, signals = engine.on_ticks([tick(SBIN, T0915 + MINUTE, 601_00), tick(NIFTY, T0915 + MINUTE, 24_010_00)])

    assert [(c.token, c.close_paise) for c in candles] == [(SBIN, 600_00), (NIFTY, 24_000_05)]  # both built
    assert [s.token for s in signals] == [SBIN]
    assert strategy.seen == [SBIN]  # the index's candle never reached it


def test_a_tick_strategy_without_symbols_gets_no_index_tick():
    engine = StrategyEngine([BuyEveryTick("every", NoParams())], book(), ManualClock(T0915))

    _, signals = engine.on_ticks([tick(NIFTY, T0915, 24_000_00), tick(SBIN, T0915, 600_00)])

    assert [s.token for s in signals] == [SBIN]


def test_an_index_needs_no_warm_up_closes():
    engine = StrategyEngine([BuyEveryCandle("every", NoParams())], book(), ManualClock(T0915))

    assert set(engine.closes_needed()) == {SBIN}


def test_warm_up_feeds_no_index_candle_to_a_strategy():
    strategy = BuyEveryCandle("every", NoParams())
    engine = StrategyEngine([strategy], book(), ManualClock(T0915))
    stored = [market_pb2.Candle(token=t, start_ns=T0915, close_paise=100) for t in (NIFTY, SBIN)]

    engine.warm_up(stored, [SBIN, NIFTY], T0915 + MINUTE)

    assert strategy.seen == [SBIN]


def test_a_strategy_configured_to_trade_an_index_is_refused_naming_it():
    settings = load(StrategySettings, {"strategy": {"strategies": [
        {"name": "idx", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ", "nifty 50"]}]}})

    with pytest.raises(ConfigError, match=r"strategy 'idx': symbol 'nifty 50': nse_cm:Nifty 50 \(token 26000\) is "
                                          r"an index: .* cannot be traded"):
        build_strategies(settings, book())


# -- MOMENTUM_RSI's trend_index: entries go with the market ------------------------------------------------------
# SBIN's closes that make MOMENTUM_RSI (periods 3) buy at the last one (tests/strategy/test_momentum_rsi.py).
FALLING_THEN_JUMP = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]


def momentum(**params) -> MomentumRsi:
    return MomentumRsi("mom", MomentumRsiParams(**{"rsi_period": 3, "ema_period": 3, "trend_index": "Nifty 50",
                                                   "trend_ema_period": 3, **params}))


def candle(token: int, minute: int, close: int, symbol: str = "") -> market_pb2.Candle:
    return market_pb2.Candle(token=token, symbol=symbol, start_ns=T0915 + minute * MINUTE, open_paise=close,
                             high_paise=close, low_paise=close, close_paise=close)


def buys_with_the_index_at(index_closes: list[int], **params) -> list[int]:
    """The tokens MOMENTUM_RSI signals for as SBIN's closes go FALLING_THEN_JUMP, the index's closes beside them
    (each minute's index candle closing first)."""
    engine = StrategyEngine([momentum(**params)], book(), ManualClock(T0915))
    signals = []
    for minute, close in enumerate(FALLING_THEN_JUMP):
        closed = [(candle(SBIN, minute, close, "SBIN-EQ"), 0)]
        if minute < len(index_closes):
            closed.insert(0, (candle(NIFTY, minute, index_closes[minute], "Nifty 50"), 0))
        signals += engine.on_closed(closed)[1]
    return [s.token for s in signals]


def test_momentum_rsi_buys_while_its_trend_index_is_above_its_ema():
    assert buys_with_the_index_at([24_000_00, 24_010_00, 24_020_00, 24_030_00, 24_040_00, 24_050_00]) == [SBIN]


def test_an_entry_with_a_trend_index_says_so_in_its_reason():
    engine = StrategyEngine([momentum()], book(), ManualClock(T0915))
    signals = []
    for minute, close in enumerate(FALLING_THEN_JUMP):
        index = candle(NIFTY, minute, 24_000_00 + minute * 10_00, "Nifty 50")
        signals += engine.on_closed([(index, 0), (candle(SBIN, minute, close, "SBIN-EQ"), 0)])[1]

    # The index's EMA(3) in paise: seeded at the mean of its first three closes (2,401,000), then half way to each
    # next close: 2,402,000, 2,403,000, 2,404,000 at the sixth, under the close of 2,405,000.
    [signal] = signals
    assert signal.reason.endswith(", Nifty 50 above its EMA ₹24,040.00"), signal.reason


def test_momentum_rsi_does_not_buy_against_its_trend_index():
    assert buys_with_the_index_at([24_050_00, 24_040_00, 24_030_00, 24_020_00, 24_010_00, 24_000_00]) == []


def test_momentum_rsi_does_not_enter_before_its_trend_index_is_warm():
    assert buys_with_the_index_at([24_000_00, 24_010_00]) == []  # two closes: its EMA(3) has no value yet


def test_momentum_rsi_without_a_trend_index_buys_whatever_an_index_does():
    assert buys_with_the_index_at([24_050_00, 24_040_00, 24_030_00, 24_020_00, 24_010_00, 24_000_00],
                                  trend_index="") == [SBIN]


def test_the_warm_up_reads_the_trend_index_closes_too():
    strategy = momentum(trend_ema_period=5)
    engine = StrategyEngine([strategy], book(), ManualClock(T0915))
    stored = [candle(NIFTY, m, 24_000_00 + m * 100, "") for m in range(5)]

    engine.warm_up(stored, [SBIN, NIFTY], T0915 + 5 * MINUTE)

    assert engine.closes_needed() == {SBIN: 5, NIFTY: 5}
    assert strategy._trend.value is not None and strategy._trend_close == 24_004_00


@pytest.mark.parametrize(("index", "why"), [
    ("Nifty IT", "index 'Nifty IT' is not followed; indices followed: Nifty 50"),
    ("SBIN-EQ", "index 'SBIN-EQ' is not an index; indices followed: Nifty 50")])
def test_a_trend_index_not_followed_is_refused_at_start_and_at_run_time(index, why):
    settings = load(StrategySettings, {"strategy": {"strategies": [
        {"name": "mom", "kind": "MOMENTUM_RSI", "params": {"trend_index": index}}]}})
    engine = StrategyEngine([momentum(trend_index="")], book(), ManualClock(T0915))

    with pytest.raises(ConfigError) as at_start:
        build_strategies(settings, book())
    with pytest.raises(InvalidInput) as at_run_time:
        engine.set_params("mom", {"trend_index": index})

    assert str(at_start.value) == f"[strategy] strategy 'mom': {why}"
    assert why in str(at_run_time.value) and engine.get("mom").params.trend_index == ""


def test_a_trend_index_named_at_run_time_is_warm_from_the_closes_kept_before():
    strategy = momentum(trend_index="")
    engine = StrategyEngine([strategy], book(), ManualClock(T0915))
    for minute in range(3):
        engine.on_closed([(candle(NIFTY, minute, 24_000_00 + minute * 100, "Nifty 50"), 0)])

    engine.set_params("mom", {"trend_index": "Nifty 50"})

    assert strategy._trend.value is not None and strategy._trend_close == 24_002_00
