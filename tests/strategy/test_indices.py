"""Indices (Instrument.is_index) in the strategy engine: their candles are built, no strategy trades them."""

from __future__ import annotations

from datetime import date

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.plugins import OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.config import load
from shared.contracts import market_pb2, trading_pb2
from shared.errors import ConfigError
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
