"""After a restart, on PostgreSQL: what the OMS and the paper broker take back from the ledger, and what the fills
after it then book."""

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger_pg import PgLedger
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import NoOrderFeed
from tests.oms.helpers import T0, candle, order

CHARGES = ChargeModel.default()


async def part_filled_before_the_restart(ledger: PgLedger, request: t.OrderRequest, charges: int) -> None:
    """c-1 in the ledger as the paper broker's VB-1: 4 of 10 filled at Rs 100 paying `charges`, the rest working."""
    u = t.OrderUpdate(internal_id="00000000-0000-4000-8000-000000000001", client_order_id="c-1", request=request,
                      status=t.ORDER_STATUS_PENDING_NEW, ts_ns=T0, sequence=1)
    await ledger.insert_new(u, {})
    for sequence, status in ((2, t.ORDER_STATUS_SUBMITTED), (3, t.ORDER_STATUS_OPEN)):
        u.previous_status, u.status, u.sequence, u.exchange_order_id = u.status, status, sequence, "VB-1"
        await ledger.record(u, {})
    u.previous_status, u.status, u.sequence = u.status, t.ORDER_STATUS_PARTIALLY_FILLED, 4
    u.filled_quantity, u.average_price_paise = 4, 100_00
    u.last_fill_quantity, u.last_fill_price_paise, u.last_fill_charges_paise = 4, 100_00, charges
    await ledger.record(u, {})


async def test_a_fill_read_from_the_paper_brokers_book_after_a_restart_books_its_own_charges(start_oms, db_pool):
    ledger, request = PgLedger(db_pool), order(price=100_00, quantity=10)
    before = CHARGES.for_fill(request, 4, 100_00)
    await part_filled_before_the_restart(ledger, request, before.total)
    broker = NoOrderFeed(None, CHARGES, ManualClock(T0 + 1))  # the OMS reads its book (polls) to learn of fills
    oms = await start_oms(broker=broker, ledger=ledger,
                          settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0.01, place_order_wait_s=2))

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    traded = await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    rest = CHARGES.for_fill(request, 6, 100_00, before.brokerage)  # the flat cap counts the brokerage paid before
    assert (traded.last_fill_quantity, traded.last_fill_price_paise) == (6, 100_00)
    assert traded.last_fill_charges_paise == rest.total
    assert oms.module.engine.positions.charges_paise() == before.total + rest.total


async def test_a_paper_order_whose_cancel_was_under_way_at_the_restart_stays_cancelled_not_revived(start_oms):
    """The paper broker takes a cancel at once and its book goes with the process: an order the ledger left
    CANCEL_PENDING is gone. Restored as OPEN, it was matched, set working again, and a later candle filled it."""
    from services.oms.ledger import MemoryLedger

    ledger, request = MemoryLedger(), order(price=100_00, quantity=10)
    u = t.OrderUpdate(internal_id="00000000-0000-4000-8000-000000000001", client_order_id="c-1", request=request,
                      status=t.ORDER_STATUS_PENDING_NEW, ts_ns=T0, sequence=1)
    await ledger.insert_new(u, {})
    for sequence, status in ((2, t.ORDER_STATUS_SUBMITTED), (3, t.ORDER_STATUS_OPEN),
                             (4, t.ORDER_STATUS_CANCEL_PENDING)):
        u.previous_status, u.status, u.sequence, u.exchange_order_id = u.status, status, sequence, "VB-1"
        await ledger.record(u, {})

    oms = await start_oms(ledger=ledger)
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.bus.drain()

    final = await ledger.get("c-1")
    assert (final.status, final.filled_quantity) == (t.ORDER_STATUS_CANCELLED, 0)
