"""The daily summary books a square-off's fill to the strategies whose positions it closed: each strategy's line is
its own P&L, not marked at the day's last price after it was flat; only what no strategy held has a line of its own."""

from __future__ import annotations

from datetime import date

from services.notifier.summary import UNATTRIBUTED, StrategyDay, summarise
from shared.clock import ist_ns
from shared.contracts import oms_pb2, trading_pb2
from shared.positions import SQUAREOFF_TAG
from tests.notifier.conftest import order

DAY = date(2026, 11, 25)  # a Wednesday
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


def flat_at(last_paise: int, realised_paise: int) -> oms_pb2.ListPositionsResponse:
    """The OMS's book at the end of the day: SBIN flat, its last trade at `last_paise`."""
    return oms_pb2.ListPositionsResponse(
        positions=[trading_pb2.Position(token=3045, symbol="SBIN-EQ", net_quantity=0, last_price_paise=last_paise,
                                        realised_pnl_paise=realised_paise)],
        realised_pnl_paise=realised_paise)


def test_a_strategy_squared_off_by_risk_makes_what_its_square_off_fill_gave_it():
    orders = [order(side=BUY, filled=10, avg=100_00, tag="momentum", ts_ns=ist_ns(DAY, 10, 0)),
              order(side=SELL, filled=10, avg=105_00, tag=SQUAREOFF_TAG, ts_ns=ist_ns(DAY, 15, 15))]

    summary = summarise(DAY, orders, flat_at(110_00, 50_00))

    assert summary.strategies == {"momentum": StrategyDay(trades=2, realised_pnl_paise=50_00)}


def test_one_square_off_closes_each_strategys_position_and_what_none_held_has_its_own_line():
    """Two strategies long 10 and 5, and 5 bought at the broker by hand: the square-off sells 20 at Rs 105."""
    orders = [order(side=BUY, filled=10, avg=100_00, tag="a", ts_ns=ist_ns(DAY, 10, 0)),
              order(side=BUY, filled=5, avg=102_00, tag="b", ts_ns=ist_ns(DAY, 11, 0)),
              order(side=SELL, filled=20, avg=105_00, tag=SQUAREOFF_TAG, ts_ns=ist_ns(DAY, 15, 15))]

    summary = summarise(DAY, orders, flat_at(110_00, 65_00))

    assert (summary.trades, summary.strategies) == (3, {"a": StrategyDay(trades=2, realised_pnl_paise=50_00),
                                                        "b": StrategyDay(trades=2, realised_pnl_paise=15_00),
                                                        UNATTRIBUTED: StrategyDay(trades=1)})


def test_a_carried_delivery_position_squared_off_today_is_its_strategys_loss_of_the_day():
    """Bought for delivery (CNC) yesterday at Rs 100; today the operator's SquareOff sells it at Rs 90."""
    bought = order(side=BUY, filled=10, avg=100_00, tag="swing", ts_ns=ist_ns(date(2026, 11, 24), 10, 0))
    sold = order(side=SELL, filled=10, avg=90_00, tag=SQUAREOFF_TAG, ts_ns=ist_ns(DAY, 9, 20))
    bought.request.product = sold.request.product = trading_pb2.PRODUCT_CNC

    summary = summarise(DAY, [sold, bought], flat_at(95_00, -100_00))

    assert summary.strategies == {"swing": StrategyDay(trades=1, realised_pnl_paise=-100_00)}
