"""A MOMENTUM_RSI position restored while its indicators are cold (the warm-up at start failed, timed out or was
off), with no stop, has no exit until they are warm: unguarded names it, for the module's CRITICAL notification."""

from datetime import date

from services.strategy.engine import StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

SBIN = 3045
T1000 = ist_ns(date(2026, 1, 20), 10, 0)


def restored(warm: bool = False, **params) -> StrategyEngine:
    """An engine with MOMENTUM_RSI (RSI 3, EMA 3) that got back today's long 100 at 500.00 from the OMS, warmed up
    from four stored candles or not at all."""
    strategy = MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3, **params), frozenset({SBIN}))
    engine = StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T1000))
    if warm:
        engine.warm_up([market_pb2.Candle(token=SBIN, start_ns=T1000 - (5 - i) * 60 * NS, open_paise=close,
                                          high_paise=close, low_paise=close, close_paise=close)
                        for i, close in enumerate([500_00, 501_00, 499_00, 502_00, 503_00])], [], T1000)
    engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id="e1", status=trading_pb2.ORDER_STATUS_TRADED, sequence=1, filled_quantity=100,
        average_price_paise=500_00, ts_ns=T1000 - 600 * NS, request=trading_pb2.OrderRequest(
            client_order_id="e1", signal_id="mom-3045-x-BUY", token=SBIN, side=trading_pb2.SIDE_BUY, quantity=100,
            strategy_tag="mom", product=trading_pb2.PRODUCT_MIS))])
    return engine


def test_a_position_restored_with_cold_indicators_and_no_stop_is_named_unguarded():
    assert restored().unguarded() == {"mom": [SBIN]}


def test_a_position_restored_with_cold_indicators_and_a_stop_is_not_named():
    assert restored(stop_loss_pct=1).unguarded() == {}


def test_a_position_restored_with_warm_indicators_is_not_named():
    assert restored(warm=True).unguarded() == {}
