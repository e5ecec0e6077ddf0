"""Default MOMENTUM_RSI trades on the seeded synthetic market soon after warm-up; the hot path is fast."""

from datetime import date

from services.strategy.bench import bench_strategy_ticks
from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from shared import config as cfg
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import SyntheticMarket, nse_instruments

T0915 = ist_ns(date(2026, 1, 20), 9, 15)


def test_default_strategy_signals_within_the_first_dozen_simulated_minutes():
    # What `make run` feeds at 60x: 2,000 ticks per real second in 10 ms batches = 20 ticks per
    # batch, each batch 0.6 simulated seconds apart, over the 50 bundled instruments.
    instruments = InstrumentBook(nse_instruments())
    strategies = build_strategies(cfg.load(StrategySettings, {}), instruments)
    engine = StrategyEngine(strategies, instruments, ManualClock(T0915))
    market = SyntheticMarket(nse_instruments(), seed=7, vol_bps=1.0)
    signals = []
    for i in range(12 * 100):
        _, out = engine.on_ticks(market.next_ticks(T0915 + i * 6 * NS // 10, 20))
        signals.extend(out)
    assert len(signals) >= 5
    assert {s.side for s in signals} == {trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL}
    assert all(s.limit_price_paise % 5 == 0 and s.quantity == 1 for s in signals)


def test_the_candle_and_rsi_path_far_exceeds_the_pipeline_target_rate():
    # The whole pipeline must carry 200,000 ticks/s; this part alone runs at ~1.5M/s on the dev box.
    assert bench_strategy_ticks(50_000) > 200_000
