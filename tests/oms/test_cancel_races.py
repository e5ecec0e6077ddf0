"""Cancels racing fills: a fill the broker made before the cancel is never lost, a repeated cancel is harmless."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.ledger import MemoryLedger
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock, day_of, ist_ns
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, RetryableError
from tests.oms.conftest import NoOrderFeed, accepted
from tests.oms.helpers import MINUTE, T0, candle, order


async def open_limit_buy(oms, quantity: int = 10) -> t.OrderUpdate:
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=quantity)))
    return await oms.until_status("c-1", t.ORDER_STATUS_OPEN)


def row(opened: t.OrderUpdate, status: int, filled: int = 0) -> BrokerOrderEvent:
    """The broker's view of the opened order: `status`, `filled` cumulative at ₹99."""
    return BrokerOrderEvent(opened.exchange_order_id, "c-1", status, filled_quantity=filled,
                            average_price_paise=99_00 if filled else 0)


def late_fills() -> float:
    return REGISTRY.get_sample_value("neopulse_oms_late_fills_total") or 0.0


async def test_a_cancel_acknowledged_before_the_queued_partial_fill_keeps_the_fill(start_oms):
    oms = await start_oms()
    await open_limit_buy(oms)
    engine = oms.module.engine

    await oms.broker.process_candle(candle(99_00, 99_50, 98_00, 99_00, volume=4, start_ns=T0 + MINUTE))
    final = await engine.cancel("c-1")  # the fill event is still queued for the OMS
    await oms.until_status("c-1", t.ORDER_STATUS_CANCELLED)
    await oms.bus.drain()

    assert (final.status, final.filled_quantity) == (t.ORDER_STATUS_CANCELLED, 4)
    assert oms.of("c-1")[-1].filled_quantity == 4
    assert engine.positions.net_quantity(order().token) == 4


async def test_a_fill_reported_after_the_order_was_cancelled_is_applied_and_counted(start_oms):
    oms = await start_oms()
    opened = await open_limit_buy(oms)
    engine = oms.module.engine
    await engine.cancel("c-1")
    before = late_fills()

    await engine.on_event(row(opened, t.ORDER_STATUS_CANCELLED, filled=3))

    assert late_fills() == before + 1
    assert (engine.lookup("c-1").status, engine.lookup("c-1").filled_quantity) == (t.ORDER_STATUS_CANCELLED, 3)
    assert engine.positions.net_quantity(order().token) == 3


async def test_a_traded_event_without_its_fills_is_completed_by_the_row_that_has_them(start_oms):
    """A "complete" row can come without fldQty (the old order feed did): the fills that follow count."""
    oms = await start_oms()
    opened = await open_limit_buy(oms)
    engine = oms.module.engine

    await engine.on_event(row(opened, t.ORDER_STATUS_TRADED))
    await engine.on_event(row(opened, t.ORDER_STATUS_TRADED, filled=10))

    assert (engine.lookup("c-1").status, engine.lookup("c-1").filled_quantity) == (t.ORDER_STATUS_TRADED, 10)
    assert engine.positions.net_quantity(order().token) == 10


async def test_a_stale_row_with_fewer_fills_never_takes_fills_back(start_oms):
    oms = await start_oms()
    opened = await open_limit_buy(oms)
    engine = oms.module.engine
    await engine.on_event(row(opened, t.ORDER_STATUS_CANCELLED, filled=6))

    await engine.on_event(row(opened, t.ORDER_STATUS_CANCELLED, filled=2))

    assert engine.lookup("c-1").filled_quantity == 6
    assert engine.positions.net_quantity(order().token) == 6


class CancelTimesOutOnce(VirtualBroker):
    calls = 0

    async def cancel_order(self, exchange_order_id: str):
        self.calls += 1
        if self.calls == 1:
            raise RetryableError("cancel timed out")
        return await super().cancel_order(exchange_order_id)


async def test_a_cancel_that_got_no_answer_is_sent_again_when_asked_again(start_oms):
    broker = CancelTimesOutOnce(None, ChargeModel.default(), ManualClock(0))
    oms = await start_oms(broker=broker)
    await open_limit_buy(oms)
    engine = oms.module.engine

    with pytest.raises(RetryableError, match="no answer"):
        await engine.cancel("c-1")
    assert engine.lookup("c-1").status == t.ORDER_STATUS_CANCEL_PENDING
    final = await engine.cancel("c-1")

    assert (broker.calls, final.status) == (2, t.ORDER_STATUS_CANCELLED)


async def test_a_cancel_refused_for_an_order_the_broker_filled_brings_its_fill_into_the_book(start_oms):
    broker = NoOrderFeed(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await start_oms(broker=broker)
    await open_limit_buy(oms)
    engine = oms.module.engine
    await broker.process_candle(candle(99_00, 99_50, 98_00, 99_00))  # TRADED there; no event reaches the OMS

    with pytest.raises(BrokerRejected, match="already TRADED"):
        await engine.cancel("c-1")

    assert (engine.lookup("c-1").status, engine.lookup("c-1").filled_quantity) == (t.ORDER_STATUS_TRADED, 10)
    assert (await oms.ledger.get("c-1")).status == t.ORDER_STATUS_TRADED
    assert engine.positions.net_quantity(order().token) == 10


class FilledMeanwhile(VirtualBroker):
    """The order filled at the broker before the cancel reached it: the cancel is refused, its book says TRADED."""

    async def cancel_order(self, exchange_order_id):
        raise BrokerRejected("order is already complete")

    async def find_by_tag(self, client_order_id):
        return BrokerOrderEvent(self._by_tag[client_order_id].id, client_order_id, t.ORDER_STATUS_TRADED, 10, 100_00,
                                charges_paise=500, quantity=10, price_paise=100_00)


class SlowFillReply(MemoryLedger):
    """The first fill's write commits, then its reply is slow (a loaded database)."""

    slow = True

    def __init__(self) -> None:
        super().__init__()
        self.committed = asyncio.Event()

    async def record(self, update, audit):
        await super().record(update, audit)
        if update.last_fill_quantity and self.slow:
            self.slow = False
            self.committed.set()
            await asyncio.sleep(0.3)


async def test_a_cancel_whose_caller_gives_up_mid_write_records_the_fill_it_found_once(start_oms):
    """/cancel (Telegram gives up after 10 s) or a gRPC deadline stops waiting while the refused cancel's read-back
    writes the fill it found, committed, its reply not back: cut off there, the book never took it, and the broker's
    TRADED row wrote the same fill again (20 units of a 10-unit order in the ledger, its charges twice)."""
    ledger = SlowFillReply()
    oms = await start_oms(broker=FilledMeanwhile(None, ChargeModel.default(), ManualClock(T0 + 1)), ledger=ledger)
    engine = oms.module.engine
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    opened = await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    caller = asyncio.create_task(engine.cancel("c-1"))
    await ledger.committed.wait()  # the fill's write has committed, its reply not back
    caller.cancel()  # the caller's timeout
    await asyncio.gather(caller, return_exceptions=True)
    await oms.broker._events.put(row(opened, t.ORDER_STATUS_TRADED, filled=10))  # the broker's feed: its TRADED row
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)  # without the cancel's fill in the book: the row's, again

    fills = [e.last_fill_quantity for e in ledger.events if e.internal_id == opened.internal_id]
    assert sum(fills) == 10


async def test_a_write_cut_off_by_its_callers_cancellation_is_settled_before_the_orders_next(start_oms):
    """Whatever task writes (a caller's, not only a cancel's own): the write may have committed. Kept as unknown,
    the order's next write reads the row first and moves the book on to it, rather than writing the fill again."""
    ledger = SlowFillReply()
    oms = await start_oms(ledger=ledger)
    engine = oms.module.engine
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    opened = await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    writer = asyncio.create_task(engine.transition(opened.internal_id, t.ORDER_STATUS_TRADED, audit={},
                                                   filled=(10, 100_00), fill=(10, 100_00, 500)))
    await ledger.committed.wait()
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await oms.broker._events.put(row(opened, t.ORDER_STATUS_TRADED, filled=10))  # the broker's TRADED row
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    assert sum(e.last_fill_quantity for e in ledger.events if e.internal_id == opened.internal_id) == 10


class RefusesCancel(VirtualBroker):
    async def cancel_order(self, exchange_order_id):
        raise BrokerRejected("order has a modification pending")


async def test_a_refused_cancel_of_an_order_whose_change_is_unanswered_goes_back_to_modify_pending(start_oms):
    """A change made in Kotak's app (its MODIFY_PENDING row), then a cancel the broker refuses: the order is back
    where it was, not left showing CANCEL_PENDING while it works at the broker."""
    oms = await start_oms(broker=RefusesCancel(None, ChargeModel.default(), ManualClock(T0 + 1)))
    opened = await open_limit_buy(oms)
    engine = oms.module.engine
    await engine.on_event(row(opened, t.ORDER_STATUS_MODIFY_PENDING))

    with pytest.raises(BrokerRejected):
        await engine.cancel("c-1")

    assert engine.lookup("c-1").status == t.ORDER_STATUS_MODIFY_PENDING
    assert [u.status for u in oms.ledger.events][-2:] == [t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_MODIFY_PENDING]


class CancelTakesEffectButTimesOut(NoOrderFeed):
    """Kotak-like: the first cancel reaches the exchange but its answer is lost; a second is refused (cancelled)."""

    calls = 0

    async def cancel_order(self, exchange_order_id: str):
        self.calls += 1
        ack = await super().cancel_order(exchange_order_id)
        if self.calls == 1:
            raise RetryableError("cancel timed out")
        return ack


async def test_our_cancel_retried_after_no_answer_is_not_taken_for_one_made_outside_neopulse(start_oms):
    """The kill switch's cancel got no answer, its retry was refused as the order was cancelled already: every sign
    of our cancel was cleared, and the trader was told the order was cancelled outside NeoPulse."""
    oms = await start_oms(broker=CancelTakesEffectButTimesOut(None, ChargeModel.default(), ManualClock(T0 + 1)))
    await open_limit_buy(oms)

    with pytest.raises(RetryableError):
        await oms.module.engine.cancel("c-1")
    with pytest.raises(BrokerRejected):
        await oms.module.engine.cancel("c-1")

    final = oms.module.engine.lookup("c-1")
    assert (final.status, final.reason_code) == (t.ORDER_STATUS_CANCELLED, "")


@pytest.mark.parametrize(("hour", "code"), [(11, "CANCELLED_AT_BROKER"), (21, "")])
async def test_a_cancel_nobody_here_asked_for_is_outside_neopulse_unless_the_market_has_closed(start_oms, hour, code):
    """Kotak's app or RMS cancelling a working order in the session is told; an unfilled DAY order the exchange
    cancels after its close is its expiry, not news."""
    oms = await start_oms()
    opened = await open_limit_buy(oms)
    oms.clock.set(ist_ns(day_of(opened.ts_ns), hour, 0))

    await oms.module.engine.on_event(row(opened, t.ORDER_STATUS_CANCELLED))

    assert oms.module.engine.lookup("c-1").reason_code == code
