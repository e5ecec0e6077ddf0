"""The price factor in PostgreSQL: instrument_master keeps each contract's, order_ledger each order's, so that the
positions rebuilt from the ledger after a restart are valued by it. Embedded PostgreSQL."""

from __future__ import annotations

import uuid

from services.ingestion.instrument_store import load_instruments, upsert_instruments
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.engine import OrderEngine
from services.oms.ledger_pg import PgLedger
from services.oms.reconcile import rebuild_positions
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Bus
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.price_factor import factor_of
from tests.db.helpers import new_order, transition

CRUDE = 451669


def crude_order(client_order_id: str, factor: market_pb2.PriceFactor) -> t.OrderUpdate:
    order = new_order(str(uuid.uuid4()), client_order_id, token=CRUDE, quantity=2, price=6000_00)
    order.request.exchange_segment, order.request.symbol = "mcx_fo", "CRUDEOIL26OCTFUT"
    order.request.price_factor.CopyFrom(factor)
    return order


async def test_instrument_master_keeps_each_contracts_price_factor_exactly(db_pool):
    crude = market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26OCTFUT", exchange_segment="mcx_fo",
                                  tick_size_paise=100, lot_size=1,
                                  price_factor=market_pb2.PriceFactor(numerator=200, denominator=3))
    reliance = market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=5,
                                     lot_size=1)

    await upsert_instruments(db_pool, [crude, reliance])

    got = {i.symbol: i for i in await load_instruments(db_pool)}
    assert (got["CRUDEOIL26OCTFUT"].price_factor.numerator, got["CRUDEOIL26OCTFUT"].price_factor.denominator) == (
        200, 3)
    assert not got["RELIANCE-EQ"].HasField("price_factor")


async def test_the_ledger_keeps_the_price_factor_risk_stamped_on_an_order(db_pool):
    ledger = PgLedger(db_pool)
    order = crude_order("sig-crude", market_pb2.PriceFactor(numerator=100))
    await ledger.insert_new(order, {})

    found = await ledger.get("sig-crude")

    assert found is not None and factor_of(found.request.price_factor) == 100


async def test_positions_rebuilt_from_the_ledger_after_a_restart_are_valued_by_the_factor(db_pool):
    """Bought 2 lots at Rs 6,000 before the restart; at Rs 6,005 the open P&L is 2 x Rs 5 x 100 = Rs 1,000."""
    ledger = PgLedger(db_pool)
    order = crude_order("sig-rebuilt", market_pb2.PriceFactor(numerator=100))
    await ledger.insert_new(order, {})
    await ledger.record(transition(order, t.ORDER_STATUS_TRADED, 2, fill=(2, 6000_00, 0), filled=(2, 6000_00)), {})
    clock = ManualClock(order.ts_ns + 2_000_000)
    engine = OrderEngine(Bus(), OmsSettings(), VirtualBroker(None, ChargeModel.default(), clock), ledger, clock)

    await rebuild_positions(engine)
    engine.positions.mark(CRUDE, 6005_00)

    assert engine.positions.unrealised_pnl_paise() == 2 * 5_00 * 100
