"""MOMENTUM_RSI's trailing stop follows the best price a tick reached while part of its LIMIT entry still works:
once the rest of the entry ends (cancelled, or filled), the stop trails from that best price, not the entry's."""

from shared.contracts import trading_pb2
from tests.strategy.test_price_levels import BUY, SBIN, SELL, Desk, described

PART = trading_pb2.ORDER_STATUS_PARTIALLY_FILLED


def test_the_best_price_reached_while_the_rest_of_the_entry_works_moves_the_trailing_stop():
    desk = Desk(trailing_stop_pct=1)
    desk.update("entry", BUY, PART, fill=5, price=100_00, quantity=10, limit=100_00)  # 5 of 10 filled at 100.00
    desk.ticks(102_00, 105_00, 110_00)  # the market runs away from the rest of the entry
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_CANCELLED, fill=0, price=0, quantity=10, limit=100_00)

    signals = desk.ticks(109_50, 108_80)  # 108.80: 1.09% under the best, 110.00

    assert [(s.side, s.quantity) for s in signals] == [(SELL, 5)], described(signals)


def test_the_rest_of_the_entry_filling_at_another_price_keeps_the_best_price_reached():
    desk = Desk(trailing_stop_pct=1)
    desk.update("entry", BUY, PART, fill=5, price=100_00, quantity=10, limit=100_00)
    desk.ticks(102_00, 105_00, 110_00)
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=5, price=99_90, quantity=10, limit=100_00)
    assert (desk.strategy.position(SBIN), desk.strategy.entry_price(SBIN)) == (10, 99_95)

    signals = desk.ticks(109_50, 108_80)

    assert [(s.side, s.quantity) for s in signals] == [(SELL, 10)], described(signals)
