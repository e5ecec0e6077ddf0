"""A position in a token the instrument book no longer lists (a symbol dropped from the config, a restart mid-day):
its square-off goes whole (its lot is unknown, and pieces not of whole lots are refused by the exchange), and a
working exit of it can be changed like any other."""

from __future__ import annotations

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, ist_ns
from shared.contracts import trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.risk.factories import DAY, limits, order

NIFTY_FUT, LOT = 35001, 65  # NIFTY26JANFUT, held, no longer listed
SELL = trading_pb2.SIDE_SELL


def holding(lots: int) -> tuple[RiskEngine, ManualClock]:
    clock = ManualClock(ist_ns(DAY, 10, 0))
    engine = RiskEngine(limits(), clock, InstrumentBook(nse_instruments(["RELIANCE-EQ"])))
    req = trading_pb2.OrderRequest(client_order_id="entry", token=NIFTY_FUT, symbol="NIFTY26JANFUT",
                                   exchange_segment="nse_fo", side=trading_pb2.SIDE_BUY, quantity=lots * LOT,
                                   order_type=trading_pb2.ORDER_TYPE_MARKET, product=trading_pb2.PRODUCT_MIS)
    engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="entry", status=trading_pb2.ORDER_STATUS_TRADED, request=req, filled_quantity=lots * LOT,
        average_price_paise=100_00, last_fill_quantity=lots * LOT, last_fill_price_paise=100_00))
    return engine, clock


def test_an_unlisted_positions_square_off_goes_whole_past_max_order_quantity():
    engine, clock = holding(20)  # 1,300 units; max_order_quantity 1,000
    clock.set(ist_ns(DAY, 15, 16))

    decisions = [engine.decide(o) for o in engine.square_off_due()]

    assert [(d.accepted, d.order.quantity) for d in decisions] == [(True, 20 * LOT)]


def test_a_working_exit_in_an_unlisted_token_can_be_changed():
    engine, _ = holding(1)
    target = order(client_order_id="target", token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo",
                   side=SELL, quantity=LOT, price_paise=120_00, strategy_tag="MANUAL")
    assert engine.decide(target).accepted
    moved = order(client_order_id="target", token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo",
                  side=SELL, quantity=LOT, price_paise=110_00, strategy_tag="MANUAL")

    decision = engine.decide_modify(moved, filled=0)

    assert (decision.accepted, decision.reason) == (True, "")
