"""The daily summary's strategy lines: a position carried from an earlier day and closed today is realised today, not
read as a new open one, and quantity in a token the account no longer holds is never valued."""

from __future__ import annotations

from datetime import date

from services.notifier.summary import StrategyDay, summarise
from shared.clock import ist_ns
from shared.contracts import oms_pb2, trading_pb2
from tests.notifier.conftest import order

DAY, YESTERDAY = date(2026, 11, 25), date(2026, 11, 24)
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


def swing(side: int, avg: int, day: date) -> trading_pb2.OrderUpdate:
    o = order("SBIN-EQ", side, filled=10, avg=avg, tag="SWING", ts_ns=ist_ns(day, 10, 0))
    o.request.product = trading_pb2.PRODUCT_NRML
    return o


def flat_sbin(realised: int) -> oms_pb2.ListPositionsResponse:
    return oms_pb2.ListPositionsResponse(
        positions=[trading_pb2.Position(symbol="SBIN-EQ", token=3045, product=trading_pb2.PRODUCT_NRML,
                                        net_quantity=0, last_price_paise=81_500, realised_pnl_paise=realised)],
        realised_pnl_paise=realised)


def test_a_carried_position_closed_today_is_realised_today_and_not_shown_open():
    orders = [swing(SELL, 81_000, DAY), swing(BUY, 70_000, YESTERDAY)]  # newest first, as ListOrders answers

    summary = summarise(DAY, orders, flat_sbin(realised=1_100_00))

    assert summary.strategies == {"SWING": StrategyDay(trades=1, realised_pnl_paise=1_100_00)}


def test_quantity_in_a_token_the_account_does_not_hold_is_not_valued():
    """The buy that opened it is not among the orders given (beyond ListOrders' limit, or made at the broker)."""
    summary = summarise(DAY, [swing(SELL, 81_000, DAY), swing(SELL, 80_000, DAY)], flat_sbin(realised=0))

    assert summary.strategies["SWING"].unrealised_pnl_paise == 0
