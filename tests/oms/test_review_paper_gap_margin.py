"""The paper account between a fill and its booking: the VirtualBroker takes a filled order out of its working set at
once, the OMS books the fill into its positions only after its ledger write (milliseconds on PostgreSQL). A count in
that gap counts the fill as a position; once booked, it counts there alone (not twice)."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.paper import PaperAccount
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected
from shared.positions import PositionBook
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, order, tick

RATES = {t.PRODUCT_MIS: Fraction(1, 5), t.PRODUCT_CNC: Fraction(1), t.PRODUCT_NRML: Fraction(1, 5)}


async def test_a_fill_the_oms_has_not_booked_yet_still_holds_its_margin():
    clock = ManualClock(T0 + 1)
    broker = VirtualBroker(None, ChargeModel.default(), clock)
    book = PositionBook()  # the OMS's: nothing booked yet (its ledger write of the fill is under way)
    broker.account = PaperAccount(50_000_00, RATES, lambda: book, clock.now_ns)
    await broker.on_ticks(tick(1_000_00, bid=999_00, ask=1_000_00))
    await broker.place_order(order(kind=t.ORDER_TYPE_MARKET, quantity=200, price=0, client_order_id="first"))
    await asyncio.sleep(0)  # the arrival fill is made: Rs 40,000 of the Rs 50,000 held
    broker.recount_funds()  # the OMS's recount task, in the gap

    with pytest.raises(BrokerRejected, match="RMS:Margin Exceeds"):  # Rs 20,000 more, with Rs 10,000 left
        await broker.place_order(order(quantity=100, price=1_000_00, client_order_id="second"))


async def test_a_fill_the_oms_has_booked_holds_its_margin_once(start_oms):
    oms = await start_oms(settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2,
                                               paper_capital=50_000))
    await oms.bus.publish(Topic.TICKS, tick(1_000_00, bid=999_00, ask=1_000_00))
    await oms.bus.drain()
    await oms.bus.publish(Topic.ORDERS, accepted(order(kind=t.ORDER_TYPE_MARKET, quantity=200, price=0,
                                                       client_order_id="first")))
    await oms.until_status("first", t.ORDER_STATUS_TRADED)

    funds = await oms.broker.funds()

    assert funds.margin_used_paise == 40_000_00  # the booked position alone, not it and the broker's fill
