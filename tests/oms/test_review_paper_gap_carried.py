"""Paper positions carried from an earlier day across a restart: the paper broker's positions read through to the
real account, so a restarted paper OMS rebuilds its CNC and NRML positions from the ledger's earlier fills. Delivery
shares bought on an earlier day stay sellable (the paper RMS's holdings check counts them), and the book holds them
at the average price of the fills that built them."""

from __future__ import annotations

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import Ledger, MemoryLedger
from services.oms.ledger_pg import PgLedger
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import NS, ManualClock
from shared.contracts import trading_pb2 as t
from tests.helpers import eventually as until
from tests.oms.conftest import Oms, accepted
from tests.oms.helpers import T0, TOKEN, order, tick

DAY = 86_400 * NS
SETTINGS = OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2, paper_capital=500_000)


@pytest.fixture(params=["memory", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    if request.param == "memory":
        return MemoryLedger()
    return PgLedger(request.getfixturevalue("db_pool"))


async def traded(oms: Oms, side: int, quantity: int, product: int, tag: str, ltp: int, ts_ns: int) -> None:
    await oms.bus.publish(Topic.TICKS, tick(ltp, bid=ltp, ask=ltp, ts_ns=ts_ns))
    await oms.bus.drain()
    request = order(side, kind=t.ORDER_TYPE_MARKET, quantity=quantity, price=0, client_order_id=tag)
    request.product = product
    await oms.bus.publish(Topic.ORDERS, accepted(request))
    await oms.until_status(tag, t.ORDER_STATUS_TRADED)


async def next_day(start_oms, before: Oms) -> Oms:
    """The paper OMS stopped, and started again on the same ledger the next day."""
    await before.module.stop()  # lets go of a PostgreSQL ledger's lease
    ledger, clock = before.ledger, ManualClock(T0 + DAY + 1)
    return await start_oms(ledger=ledger, settings=SETTINGS, clock=clock,
                           broker=VirtualBroker(None, ChargeModel.default(), clock))


async def test_delivery_shares_bought_on_an_earlier_day_can_be_sold_after_a_paper_restart(start_oms, ledger):
    oms = await start_oms(ledger=ledger, settings=SETTINGS)
    await traded(oms, t.SIDE_BUY, 10, t.PRODUCT_CNC, "buy", 1_000_00, T0)
    again = await next_day(start_oms, oms)
    await again.bus.publish(Topic.TICKS, tick(1_010_00, bid=1_010_00, ask=1_010_00, ts_ns=T0 + DAY))
    await again.bus.drain()
    sell = order(t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, quantity=10, price=0, client_order_id="sell")
    sell.product = t.PRODUCT_CNC

    await again.bus.publish(Topic.ORDERS, accepted(sell))

    await until(lambda: any(s in again.statuses("sell") for s in (t.ORDER_STATUS_REJECTED, t.ORDER_STATUS_TRADED)))
    assert [u.reason for u in again.of("sell") if u.status == t.ORDER_STATUS_REJECTED] == []


async def test_a_paper_restart_carries_the_net_of_earlier_cnc_and_nrml_fills_at_their_average_price(start_oms):
    ledger = MemoryLedger()
    oms = await start_oms(ledger=ledger, settings=SETTINGS)
    await traded(oms, t.SIDE_BUY, 10, t.PRODUCT_CNC, "cnc-1", 1_000_00, T0)
    await traded(oms, t.SIDE_BUY, 10, t.PRODUCT_CNC, "cnc-2", 1_100_00, T0)
    await traded(oms, t.SIDE_SELL, 5, t.PRODUCT_CNC, "cnc-3", 1_200_00, T0)
    await traded(oms, t.SIDE_SELL, 4, t.PRODUCT_NRML, "nrml", 1_200_00, T0)
    await traded(oms, t.SIDE_BUY, 7, t.PRODUCT_MIS, "mis", 1_200_00, T0)  # squared off by the broker: not carried

    again = await next_day(start_oms, oms)

    held = {key: (p.net_quantity, p.average_price_paise) for key, p in again.module.engine.positions.positions.items()}
    assert held == {(TOKEN, t.PRODUCT_CNC): (15, 1_050_00), (TOKEN, t.PRODUCT_NRML): (-4, 1_200_00)}
