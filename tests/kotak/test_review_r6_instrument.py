"""Kotak trades the instrument risk judged: the order's token's, never another its symbol names, never a guessed
segment."""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, ist_ns
from shared.contracts import trading_pb2 as T
from shared.errors import NotSent
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.kotak.conftest import RELIANCE
from tests.risk.factories import DAY, limits


def _risk() -> RiskEngine:
    engine = RiskEngine(limits(), ManualClock(ist_ns(DAY, 10, 0)), InstrumentBook(nse_instruments(["RELIANCE-EQ"])))
    engine.last_prices[RELIANCE] = 1290_00
    return engine


async def test_an_order_risk_accepted_for_its_token_is_placed_at_kotak_for_that_token(sim, broker):
    order = T.OrderRequest(client_order_id="r6-tok", token=RELIANCE, exchange_segment="nse_cm", symbol="TCS-EQ",
                           side=T.SIDE_BUY, quantity=3, order_type=T.ORDER_TYPE_MARKET, product=T.PRODUCT_MIS,
                           validity=T.VALIDITY_DAY, strategy_tag="MANUAL")
    decision = _risk().decide(order)

    ack = await broker.place_order(decision.order)

    row = (await broker.order_by_id(ack.exchange_order_id)).raw
    assert (int(row["tok"]), row["trdSym"]) == (RELIANCE, "RELIANCE-EQ")


async def test_an_order_with_no_segment_is_not_sent_rather_than_sent_to_nse_cm(sim, broker):
    order = T.OrderRequest(client_order_id="r6-seg", token=35001, symbol="NIFTY26JANFUT", side=T.SIDE_BUY,
                           quantity=75, order_type=T.ORDER_TYPE_MARKET, product=T.PRODUCT_NRML)

    with pytest.raises(NotSent, match="no exchange_segment"):
        await broker.place_order(order)

    assert sim.calls["place_order"] == 0

