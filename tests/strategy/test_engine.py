"""The engine's plugin hooks: per-tick plugins, paused plugins, symbol filters."""

from datetime import date

from pydantic import BaseModel, ConfigDict

from services.strategy.engine import StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from services.strategy.plugins import OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN, TCS = 3045, 11536


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuyEveryTick(Strategy):
    """A test plugin: wants every tick, buys one share on each, ignores candles."""

    kind = "BUY_EVERY_TICK"
    Params = NoParams

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[OrderIntent]:
        return []

    def on_tick(self, tick: market_pb2.Tick, ctx: StrategyContext) -> list[OrderIntent]:
        return [OrderIntent(tick.token, trading_pb2.SIDE_BUY, 1, trading_pb2.ORDER_TYPE_MARKET)]


def engine_with(*strategies):
    return StrategyEngine(list(strategies), InstrumentBook(nse_instruments()), ManualClock(T0915))


def tick(token, recv_ns=0):
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=T0915 + NS, ltp_paise=100_00, ltq=1,
                           recv_ns=recv_ns)


def test_a_plugin_with_on_tick_gets_every_tick_of_its_tokens():
    engine = engine_with(BuyEveryTick("every", NoParams(), frozenset({SBIN})))
    _, signals = engine.on_ticks([tick(SBIN, recv_ns=99), tick(TCS)])
    assert [(s.signal_id, s.symbol, s.order_type, s.tick_recv_ns) for s in signals] == [
        (f"every-{SBIN}-{T0915 + NS}-BUY", "SBIN-EQ", trading_pb2.ORDER_TYPE_MARKET, 99)]


def test_a_paused_plugin_sends_nothing():
    strategy = BuyEveryTick("every", NoParams())
    strategy.paused = True
    _, signals = engine_with(strategy).on_ticks([tick(SBIN)])
    assert signals == []
    assert strategy.signals_emitted == 0


def test_signal_sequences_increase_across_strategies():
    engine = engine_with(BuyEveryTick("a", NoParams()), BuyEveryTick("b", NoParams()))
    _, signals = engine.on_ticks([tick(SBIN), tick(TCS)])
    sequences = [s.sequence for s in signals]
    assert len(sequences) == 4 and sequences == sorted(set(sequences))


def test_a_plugin_that_raises_does_not_stop_candles_or_other_strategies():
    class Broken(Strategy):
        kind = "BROKEN"
        Params = NoParams

        def on_candle(self, candle, ctx):
            raise RuntimeError("bug in a plugin")

    healthy = MomentumRsi("healthy", MomentumRsiParams())
    engine = engine_with(Broken("broken", NoParams()), healthy)
    candles, _ = engine.on_ticks([tick(SBIN), market_pb2.Tick(token=SBIN, ts_ns=T0915 + 60 * NS, ltp_paise=1)])
    assert [c.token for c in candles] == [SBIN]
    assert healthy._state[SBIN].rsi._prev == 100_00


def filled(tag: str, side: int, quantity: int, sequence: int) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(
        client_order_id=f"{tag}-{sequence}", status=trading_pb2.ORDER_STATUS_TRADED, sequence=sequence,
        filled_quantity=quantity, last_fill_quantity=quantity, last_fill_price_paise=800_00,
        request=trading_pb2.OrderRequest(client_order_id=f"{tag}-{sequence}", token=SBIN, side=side,
                                         quantity=quantity, strategy_tag=tag))


def test_a_square_off_fill_closes_the_position_the_strategies_held_for_it():
    """Risk's intraday square-off trades under its own tag: the strategies it closed for must see it, or their
    next exit signal (SELL 'the long') would open a short."""
    first, second = (MomentumRsi(name, MomentumRsiParams(), frozenset({SBIN})) for name in ("rsi-a", "rsi-b"))
    engine = engine_with(first, second)
    engine.on_order_update(filled("rsi-a", trading_pb2.SIDE_BUY, 10, 1))
    engine.on_order_update(filled("rsi-b", trading_pb2.SIDE_BUY, 5, 2))

    engine.on_order_update(filled("SQUAREOFF", trading_pb2.SIDE_SELL, 12, 3))

    assert (first.position(SBIN), second.position(SBIN)) == (0, 3)
