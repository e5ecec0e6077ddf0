"""A tick the candle builder leaves out of the candles as late (older than the token's open minute) is still checked
against the watched price levels: a trade at the stop is a trade at the stop whenever it arrives."""

from shared.clock import NS
from shared.contracts import market_pb2
from tests.strategy.test_price_levels import SBIN, SELL, T0930, Desk, described


def tick(seconds: float, price: int) -> market_pb2.Tick:
    return market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0930 + int(seconds * NS), ltp_paise=price,
                           ltq=1, recv_ns=1)


def test_a_trade_at_the_stop_arriving_after_the_next_minutes_first_tick_still_stops():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    desk.engine.on_ticks([tick(50, 100_00), tick(60, 99_80)])  # 09:31:00 opens the next minute

    signals = desk.engine.on_ticks([tick(59, 98_90)])[1]  # 09:30:59's trade, 1.1% under the entry, arrives late

    assert [(s.side, s.quantity) for s in signals] == [(SELL, 10)], described(signals)


def test_one_tick_stamped_minutes_ahead_does_not_mute_the_stop():
    desk = Desk(stop_loss_pct=1)
    desk.hold()
    desk.engine.on_ticks([tick(1, 100_00), tick(240, 100_10)])  # a corrupt time, 4 minutes ahead: every later is late

    signals = desk.engine.on_ticks([tick(3, 97_00), tick(4, 95_00)])[1]

    assert [(s.side, s.quantity) for s in signals] == [(SELL, 10)], described(signals)
