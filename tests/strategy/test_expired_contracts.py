"""A contract past its last session (Instrument.expiry_ns: its expiry day's close) takes no more entries: risk would
refuse each (CONTRACT_EXPIRED), so the strategies do not send them, and say so once. Exits of what they still hold
there go out as before."""

import logging
from datetime import date

from pydantic import BaseModel, ConfigDict

from services.strategy.engine import StrategyEngine
from services.strategy.plugins import OrderIntent, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook

FUT = 52_168
EXPIRY = date(2026, 1, 27)  # a Tuesday: the contract trades until 15:30 IST that day
FUTURE = market_pb2.Instrument(token=FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo", tick_size_paise=10,
                               lot_size=65, expiry_ns=ist_ns(EXPIRY, 0, 0))
SKIPPED = "an entry in an expired contract skipped"


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InAndOut(Strategy):
    """A test plugin: at each close, buys a lot when flat and sells all it holds otherwise."""

    kind = "IN_AND_OUT"
    Params = NoParams

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[OrderIntent]:
        held = self.position(candle.token)
        if held:
            return [OrderIntent(candle.token, trading_pb2.SIDE_SELL, held, trading_pb2.ORDER_TYPE_MARKET)]
        return [OrderIntent(candle.token, trading_pb2.SIDE_BUY, 65, trading_pb2.ORDER_TYPE_MARKET)]


def closes(engine: StrategyEngine, minute_ns: int, minutes: int = 1) -> list[trading_pb2.Signal]:
    """The signals of `minutes` candles of the future from `minute_ns`, each closed by the next minute's tick."""
    signals = []
    for m in range(minutes + 1):
        tick = market_pb2.Tick(token=FUT, exchange_segment="nse_fo", ts_ns=minute_ns + m * 60 * NS,
                               ltp_paise=23_000_00, ltq=65)
        signals.extend(engine.on_ticks([tick])[1])
    return signals


def engine_at(minute_ns: int, strategy: Strategy) -> StrategyEngine:
    return StrategyEngine([strategy], InstrumentBook([FUTURE]), ManualClock(minute_ns))


def long_a_lot(engine: StrategyEngine) -> None:
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="in-1", status=trading_pb2.ORDER_STATUS_TRADED, sequence=1, filled_quantity=65,
        last_fill_quantity=65, last_fill_price_paise=23_000_00,
        request=trading_pb2.OrderRequest(client_order_id="in-1", token=FUT, side=trading_pb2.SIDE_BUY, quantity=65,
                                         strategy_tag="in")))


def test_an_entry_on_the_expiry_day_before_the_close_goes_out():
    at = ist_ns(EXPIRY, 14, 0)
    engine = engine_at(at, InAndOut("in", NoParams()))

    signals = closes(engine, at)

    assert [(s.side, s.quantity) for s in signals] == [(trading_pb2.SIDE_BUY, 65)]


def test_an_entry_in_a_contract_past_its_expiry_days_close_is_not_sent():
    at = ist_ns(date(2026, 1, 28), 10, 0)
    strategy = InAndOut("in", NoParams())
    engine = engine_at(at, strategy)

    signals = closes(engine, at)

    assert (signals, strategy.signals_emitted) == ([], 0)


def test_the_exit_of_a_position_held_in_an_expired_contract_still_goes_out():
    at = ist_ns(date(2026, 1, 28), 10, 0)
    engine = engine_at(at, InAndOut("in", NoParams()))
    long_a_lot(engine)

    signals = closes(engine, at)

    assert [(s.side, s.quantity) for s in signals] == [(trading_pb2.SIDE_SELL, 65)]


def test_the_skipped_entries_are_said_once_per_strategy_and_token(caplog):
    caplog.set_level(logging.WARNING, logger="services.strategy.engine")
    at = ist_ns(date(2026, 1, 28), 10, 0)
    engine = engine_at(at, InAndOut("in", NoParams()))

    closes(engine, at, minutes=3)

    said = [r for r in caplog.records if r.getMessage() == SKIPPED]
    assert [(r.strategy, r.token, r.reason.startswith("nse_fo:NIFTY26JANFUT (token 52168) expired on 2026-01-27"))
            for r in said] == [("in", FUT, True)]
