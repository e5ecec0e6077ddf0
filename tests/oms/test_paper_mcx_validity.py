"""MCX takes DAY orders only: the SDK refuses an IOC order on mcx_fo before it leaves for Kotak
(settings.validity_allowed_by_segment), so the VirtualBroker refuses it too, in those words, rather than filling on
paper an order that live never reaches the exchange (services/oms/fill_rules.py: validity_refusal)."""

from __future__ import annotations

import pytest
from neo_api_client.settings import validity_allowed_by_segment

from services.oms.charges import ChargeModel
from services.oms.fill_rules import validity_refusal
from services.oms.virtual_broker import VirtualBroker
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected
from tests.oms.helpers import T0

CRUDE = 451669  # T0 is 21:30 IST on a Monday: MCX trades (09:00-23:30)
VALIDITY = {"DAY": t.VALIDITY_DAY, "IOC": t.VALIDITY_IOC}


def crude(validity: int, client_order_id: str = "crude-1") -> t.OrderRequest:
    """A market buy of one lot of an MCX future, as risk stamps it (the instrument's segment and symbol)."""
    return t.OrderRequest(client_order_id=client_order_id, token=CRUDE, exchange_segment="mcx_fo",
                          symbol="CRUDEOIL26FEBFUT", side=t.SIDE_BUY, quantity=1, order_type=t.ORDER_TYPE_MARKET,
                          product=t.PRODUCT_NRML, validity=validity, strategy_tag="TEST")


async def quoted_broker() -> VirtualBroker:
    """A paper broker that has seen a quote of the future, so that a market order would fill on arrival."""
    vb = VirtualBroker(None, ChargeModel.default(), ManualClock(T0 + 1))
    await vb.on_ticks(market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=CRUDE, exchange_segment="mcx_fo", ts_ns=T0, ltp_paise=6000_00, bid_paise=5999_00, ask_paise=6001_00)]))
    return vb


async def test_an_ioc_order_on_mcx_is_refused_in_the_sdks_words():
    vb = await quoted_broker()

    with pytest.raises(BrokerRejected) as refused:
        await vb.place_order(crude(t.VALIDITY_IOC))

    assert str(refused.value) == (
        "order crude-1: Invalid validity 'IOC' for exchange segment 'mcx_fo'. Allowed values are DAY: mcx_fo takes "
        "DAY orders only; send it with validity DAY (and cancel what does not fill at once, if it must not rest)")


async def test_a_refused_ioc_order_on_mcx_leaves_nothing_in_the_book_to_fill():
    vb = await quoted_broker()

    with pytest.raises(BrokerRejected):
        await vb.place_order(crude(t.VALIDITY_IOC))

    assert (vb.book, vb._events.qsize()) == ({}, 0)


async def test_a_day_order_on_mcx_still_fills_on_arrival():
    vb = await quoted_broker()

    ack = await vb.place_order(crude(t.VALIDITY_DAY))
    await vb.stop()  # books the fills decided on arrival

    assert (vb.book[ack.exchange_order_id].status, vb.book[ack.exchange_order_id].average_price_paise) == (
        t.ORDER_STATUS_TRADED, 6001_00)


@pytest.mark.parametrize(("segment", "validity"), [
    (segment, validity) for segment in validity_allowed_by_segment for validity in VALIDITY])
def test_the_paper_rule_refuses_exactly_the_validities_the_sdk_refuses(segment, validity):
    refusal = validity_refusal("c-1", segment, VALIDITY[validity])

    assert bool(refusal) == (validity not in validity_allowed_by_segment[segment])
