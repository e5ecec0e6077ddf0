"""The OMS end to end on a real Bus with MemoryLedger + VirtualBroker: lifecycle, idempotency, recovery."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from services.oms.reconcile import NOT_FOUND
from services.oms.virtual_broker import VirtualBroker
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import market_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import RetryableError
from tests.helpers import eventually as until
from tests.oms.conftest import NoOrderFeed, accepted, running_on_new_day_book
from tests.oms.helpers import MINUTE, T0, candle, order

S = t  # statuses read better as S.ORDER_STATUS_...


async def test_accepted_decision_goes_pending_new_submitted_open_then_traded_after_a_candle(start_oms):
    oms = await start_oms()
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", S.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(101_00, 102_00, 99_00, 100_00)]))
    traded = await oms.until_status("c-1", S.ORDER_STATUS_TRADED)

    assert oms.statuses("c-1") == [S.ORDER_STATUS_PENDING_NEW, S.ORDER_STATUS_SUBMITTED, S.ORDER_STATUS_OPEN,
                                   S.ORDER_STATUS_TRADED]
    assert (traded.filled_quantity, traded.last_fill_quantity, traded.last_fill_price_paise) == (10, 10, 100_00)
    assert traded.last_fill_charges_paise == ChargeModel.default().for_fill(traded.request, 10, 100_00).total
    assert traded.exchange_order_id.startswith("VB-")
    assert (await oms.ledger.get("c-1")).status == S.ORDER_STATUS_TRADED


async def test_a_burst_of_decisions_is_placed_before_any_acknowledgement_is_booked(start_oms):
    """Tick-to-order latency: with an in-process broker the SUBMITTED and OPEN of the first order (ledger writes
    and fan-outs) wait until the burst's later orders have gone out; its broker events still come after them."""
    oms = await start_oms()
    placed: list[tuple[str, list[str]]] = []  # each order as it went out, and the ledger's statuses then
    place = oms.broker.place_order

    async def noting(request):
        rows = await oms.ledger.list_orders()
        placed.append((request.client_order_id, sorted(S.OrderStatus.Name(r.status) for r in rows)))
        return await place(request)

    oms.broker.place_order = noting  # type: ignore[method-assign]
    for n in (1, 2, 3):
        await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10, client_order_id=f"c-{n}")))
    assert await oms.bus.drain()

    seen = [(u.client_order_id, u.status) for u in oms.updates if u.status != S.ORDER_STATUS_PENDING_NEW]
    # The burst was written ahead together, then placed in order; nothing was booked in between.
    assert placed == [(f"c-{n}", ["ORDER_STATUS_PENDING_NEW"] * 3) for n in (1, 2, 3)]
    assert seen == [("c-1", S.ORDER_STATUS_SUBMITTED), ("c-1", S.ORDER_STATUS_OPEN), ("c-2", S.ORDER_STATUS_SUBMITTED),
                    ("c-2", S.ORDER_STATUS_OPEN), ("c-3", S.ORDER_STATUS_SUBMITTED), ("c-3", S.ORDER_STATUS_OPEN)]


async def test_rejected_decisions_are_ignored(start_oms):
    oms = await start_oms()

    await oms.bus.publish(Topic.ORDERS, t.RiskDecision(accepted=False, reason_code="X", order=order()))
    await oms.bus.drain()

    assert oms.updates == []
    assert await oms.ledger.list_orders() == []


async def test_each_update_carries_the_fill_delta_and_sequences_increase(start_oms):
    oms = await start_oms()
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=50)))
    await oms.until_status("c-1", S.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00, 20)]))
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[
        candle(98_00, 99_00, 97_00, 98_50, start_ns=T0 + 2 * MINUTE)]))
    await oms.until_status("c-1", S.ORDER_STATUS_TRADED)

    fills = [(u.last_fill_quantity, u.last_fill_price_paise, u.filled_quantity) for u in oms.of("c-1")
             if u.last_fill_quantity]
    assert fills == [(20, 100_00, 20), (30, 100_00, 50)]  # a resting limit fills at its limit
    sequences = [u.sequence for u in oms.updates]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


async def test_the_same_decision_twice_makes_one_order(start_oms):
    oms = await start_oms()
    decision = accepted(order(price=100_00))

    await oms.bus.publish(Topic.ORDERS, decision)
    await oms.bus.publish(Topic.ORDERS, decision)
    await oms.bus.drain()

    assert len(await oms.ledger.list_orders()) == 1
    assert len(oms.broker.book) == 1
    assert oms.statuses("c-1") == [S.ORDER_STATUS_PENDING_NEW, S.ORDER_STATUS_SUBMITTED, S.ORDER_STATUS_OPEN]


async def test_a_decision_already_in_the_ledger_before_a_restart_is_not_placed_again(start_oms):
    ledger = MemoryLedger()
    await ledger.insert_new(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=order(),
                                          status=S.ORDER_STATUS_PENDING_NEW), {})
    await ledger.record(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=order(),
                                      status=S.ORDER_STATUS_REJECTED, reason="earlier"), {})
    oms = await start_oms(ledger=ledger)

    await oms.bus.publish(Topic.ORDERS, accepted(order()))
    await oms.bus.drain()

    assert oms.broker.book == {}
    assert oms.updates == []


async def test_a_pending_new_order_the_broker_does_not_hold_is_given_up_at_start_up_and_not_resent(start_oms):
    ledger = MemoryLedger()  # the crash came after the ledger insert; the broker never got the order
    await ledger.insert_new(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=order(),
                                          status=S.ORDER_STATUS_PENDING_NEW, sequence=5), {})

    oms = await start_oms(ledger=ledger)
    await until(lambda: oms.updates)

    row = await ledger.get("c-1")
    assert row.status == S.ORDER_STATUS_REJECTED
    assert (row.reason, row.reason_code) == (NOT_FOUND.format("c-1"), "OUTCOME_UNKNOWN")  # adopted if it turns up
    assert oms.broker.book == {}
    assert oms.module.reconciled["rejected"] == 1


async def test_open_virtual_orders_are_restored_after_a_restart_and_fill(start_oms):
    ledger = MemoryLedger()
    req = order(price=100_00)
    await ledger.insert_new(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=req,
                                          status=S.ORDER_STATUS_PENDING_NEW), {})
    for status in (S.ORDER_STATUS_SUBMITTED, S.ORDER_STATUS_OPEN):
        await ledger.record(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=req, status=status,
                                          exchange_order_id="VB-1"), {})
    oms = await start_oms(ledger=ledger)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))

    traded = await oms.until_status("c-1", S.ORDER_STATUS_TRADED)
    assert traded.exchange_order_id == "VB-1"
    assert oms.module.reconciled["matched"] == 1
    assert oms.statuses("c-1") == [S.ORDER_STATUS_TRADED]  # the restored book agreed: nothing to re-publish


async def test_sequences_continue_above_the_ledgers_highest(start_oms):
    ledger = MemoryLedger()
    high = 10**18
    await ledger.insert_new(t.OrderUpdate(internal_id="i-0", client_order_id="old", request=order(),
                                          status=S.ORDER_STATUS_PENDING_NEW, sequence=high), {})
    oms = await start_oms(ledger=ledger)

    await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id="new")))
    await oms.until_status("new", S.ORDER_STATUS_OPEN)

    assert min(u.sequence for u in oms.of("new")) > high


class TimeoutAfterBooking(VirtualBroker):
    """A timeout where the broker did accept: the order is booked, the caller sees RetryableError."""

    placed = 0

    async def place_order(self, order):
        self.placed += 1
        await super().place_order(order)
        raise RetryableError("broker timed out")


class TimeoutBeforeBooking(VirtualBroker):
    """A timeout where the order never reached the broker."""

    lookups = 0

    async def place_order(self, order):
        raise RetryableError("broker timed out")

    async def find_by_tag(self, client_order_id):
        self.lookups += 1
        return await super().find_by_tag(client_order_id)


async def test_an_unknown_outcome_placement_is_found_by_tag_and_adopted_not_placed_twice(start_oms):
    broker = TimeoutAfterBooking(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await start_oms(broker=broker)

    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00)))
    opened = await oms.until_status("c-1", S.ORDER_STATUS_OPEN)

    assert broker.placed == 1
    assert len(broker.book) == 1
    assert opened.exchange_order_id == next(iter(broker.book))
    assert S.ORDER_STATUS_REJECTED not in oms.statuses("c-1")


async def test_an_unknown_outcome_placement_never_found_is_rejected_after_the_configured_lookups(start_oms):
    from services.oms.config import OmsSettings

    broker = TimeoutBeforeBooking(None, ChargeModel.default(), ManualClock(T0 + 1))
    settings = OmsSettings(lookup_backoff_s=0, poll_interval_s=0, unknown_outcome_lookups=3)
    oms = await start_oms(broker=broker, settings=settings)

    await oms.bus.publish(Topic.ORDERS, accepted(order()))
    rejected = await oms.until_status("c-1", S.ORDER_STATUS_REJECTED)

    assert broker.lookups == 3
    assert "not found at the broker after 3 lookups" in rejected.reason
    assert broker.book == {}


class CountsBookReads(VirtualBroker):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.book_reads = 0

    async def order_book(self):
        self.book_reads += 1
        return await super().order_book()


async def test_the_paper_brokers_book_is_not_polled_its_events_cannot_go_missing(start_oms):
    from services.oms.config import OmsSettings

    broker = CountsBookReads(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await start_oms(broker=broker, settings=OmsSettings(poll_interval_s=0.01, lookup_backoff_s=0))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", S.ORDER_STATUS_OPEN)
    read_at_start = broker.book_reads

    await asyncio.sleep(0.1)  # ten poll intervals with an order working

    assert broker.book_reads == read_at_start
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.until_status("c-1", S.ORDER_STATUS_TRADED)  # its fills come as events


async def test_fills_reach_the_oms_by_polling_when_the_broker_has_no_order_feed(start_oms):
    from services.oms.config import OmsSettings

    broker = NoOrderFeed(None, ChargeModel.default(), ManualClock(T0 + 1))
    oms = await start_oms(broker=broker, settings=OmsSettings(poll_interval_s=0.01, lookup_backoff_s=0))
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await oms.until_status("c-1", S.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    traded = await oms.until_status("c-1", S.ORDER_STATUS_TRADED)

    assert (traded.last_fill_quantity, traded.last_fill_price_paise) == (10, 100_00)


class SlowLedger(MemoryLedger):
    """A ledger whose start-up read takes a database round trip or two."""

    async def open_orders(self):
        await asyncio.sleep(0.05)
        return await super().open_orders()


async def test_a_decision_accepted_while_the_oms_is_starting_is_placed_once_it_has_started():
    """Risk runs already (monolith) or the bridge is connected (split): a decision can come during start()."""
    bus, clock = Bus(), ManualClock(T0 + 1)
    ledger = SlowLedger()
    module = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0),
                       VirtualBroker(None, ChargeModel.default(), clock), ledger, clock)
    runner = asyncio.create_task(bus.run())
    try:
        starting = asyncio.create_task(module.start())
        await asyncio.sleep(0.01)  # start() is reading the ledger
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-early")))
        await starting
        await bus.drain()

        placed = await ledger.get("c-early")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert placed is not None and placed.status == S.ORDER_STATUS_OPEN


class BookUnreadableAtFirst(VirtualBroker):
    """The order book fails at start-up (a network blip), then answers."""

    failures = 2

    async def order_book(self):
        if self.failures:
            self.failures -= 1
            raise RetryableError("order book timed out")
        return await super().order_book()


async def test_orders_restored_while_the_book_could_not_be_read_are_settled_once_it_can_and_only_they():
    ledger = MemoryLedger()
    await ledger.insert_new(t.OrderUpdate(internal_id="i-gone", client_order_id="c-gone", request=order(),
                                          status=S.ORDER_STATUS_PENDING_NEW, sequence=1), {})
    await ledger.record(t.OrderUpdate(internal_id="i-gone", client_order_id="c-gone", request=order(),
                                      status=S.ORDER_STATUS_OPEN, exchange_order_id="EX-1", sequence=2), {})
    await ledger.insert_new(t.OrderUpdate(internal_id="i-unsent", client_order_id="c-unsent", request=order(),
                                          status=S.ORDER_STATUS_PENDING_NEW, sequence=3), {})
    bus, clock = Bus(), ManualClock(T0 + 1)
    module = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0),
                       BookUnreadableAtFirst(None, ChargeModel.default(), clock), ledger, clock)
    module.settle_retry_s = (0.01, 0.02)
    tasks = [asyncio.create_task(bus.run())]
    try:
        await module.start()
        unsettled = module.reconciled["unsettled"]
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-new", price=10_000_00)))
        await bus.drain()
        tasks.append(asyncio.create_task(module.run()))
        await until(lambda: module.reconciled["unsettled"] == 0)
        gone, unsent, new = [await ledger.get(c) for c in ("c-gone", "c-unsent", "c-new")]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert unsettled == 2
    assert (gone.status, gone.reason_code) == (S.ORDER_STATUS_CANCELLED, "NOT_IN_BROKER_BOOK")
    assert (unsent.status, unsent.reason_code) == (S.ORDER_STATUS_REJECTED, "OUTCOME_UNKNOWN")  # maybe sent
    assert new.status == S.ORDER_STATUS_OPEN  # placed after the restart: not a leftover to settle


class SlowToAnswerForOneOrder(VirtualBroker):
    """A remote-like broker (each placement its own task) whose answer for c-slow times out although it booked
    the order, and whose order book does not show it while the OMS looks it up."""

    in_process = False

    async def place_order(self, order: t.OrderRequest):
        ack = await super().place_order(order)
        if order.client_order_id == "c-slow":
            raise RetryableError("place timed out")
        return ack

    async def find_by_tag(self, client_order_id: str):
        return None


async def test_fills_of_other_orders_are_not_held_up_while_one_placement_is_being_resolved(start_oms):
    """Resolving an unknown placement holds that order's lock for seconds (lookups with back-off); its broker
    events wait for it, the other orders' fills do not."""
    broker = SlowToAnswerForOneOrder(None, ChargeModel.default(), ManualClock(0))
    oms = await start_oms(broker=broker, settings=OmsSettings(lookup_backoff_s=0.5, unknown_outcome_lookups=3,
                                                              poll_interval_s=0))
    await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-slow", price=100_00)))
    await oms.until_status("c-slow", S.ORDER_STATUS_SUBMITTED)  # booked at the broker, its answer lost
    await oms.bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-fast", price=100_00)))
    await oms.until_status("c-fast", S.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(
        candles=[candle(99_00, 99_50, 98_00, 99_00, start_ns=T0 + MINUTE)]))
    await until(lambda: S.ORDER_STATUS_TRADED in oms.statuses("c-fast"), 0.8)  # c-slow's fill came first

    assert oms.statuses("c-slow")[-1] == S.ORDER_STATUS_SUBMITTED  # still being looked up (1.5 s of back-off)
    await until(lambda: S.ORDER_STATUS_TRADED in oms.statuses("c-slow"), 10)  # then adopted with its fill


async def test_a_restart_keeps_the_charges_of_todays_fills_in_the_positions(start_oms):
    ledger = MemoryLedger()
    first = await start_oms(ledger=ledger)
    await first.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10)))
    await first.until_status("c-1", S.ORDER_STATUS_OPEN)
    await first.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await first.until_status("c-1", S.ORDER_STATUS_TRADED)
    paid = first.module.engine.positions.charges_paise()

    restarted = await start_oms(ledger=ledger)

    assert paid > 0 and restarted.module.engine.positions.charges_paise() == paid


async def test_a_day_order_still_open_when_the_next_trading_day_starts_is_settled_as_expired():
    async with running_on_new_day_book(MemoryLedger()) as (bus, clock, module, _):
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-yesterday", price=90_00)))
        await until(lambda: module.engine.lookup("c-yesterday") is not None
                    and module.engine.lookup("c-yesterday").status == S.ORDER_STATUS_OPEN)
        clock.advance(24 * 3600)  # the next day, before anything trades
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-today", price=90_00)))

        await until(lambda: module.engine.lookup("c-yesterday").status == S.ORDER_STATUS_CANCELLED)
        expired, today = module.engine.lookup("c-yesterday"), module.engine.lookup("c-today")

    assert (expired.reason_code, "expired" in expired.reason) == ("NOT_IN_BROKER_BOOK", True)
    assert today.status == S.ORDER_STATUS_OPEN


async def test_orders_ended_on_an_earlier_day_leave_memory_but_not_the_ledger_nor_idempotency():
    """A long-running OMS kept every order it had seen, and its lock, for the life of the process."""
    ledger = MemoryLedger()
    async with running_on_new_day_book(ledger) as (bus, clock, module, _):
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-filled", price=100_00)))
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-working", price=90_00)))
        await until(lambda: module.engine.lookup("c-working") is not None
                    and module.engine.lookup("c-working").status == S.ORDER_STATUS_OPEN)
        await bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
        await until(lambda: module.engine.lookup("c-filled").status == S.ORDER_STATUS_TRADED)
        filled = module.engine.lookup("c-filled")
        recorded = [u for u in ledger.events if u.client_order_id == "c-filled"]

        assert REGISTRY.get_sample_value("neopulse_oms_orders_in_memory") == 2

        clock.advance(24 * 3600)
        await until(lambda: module.engine.lookup("c-filled") is None)
        assert REGISTRY.get_sample_value("neopulse_oms_orders_in_memory") == 1
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-filled", price=100_00)))  # replayed
        await bus.drain()

        assert module.engine.lookup("c-working").status == S.ORDER_STATUS_OPEN  # the broker's book still has it
        assert (await bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="c-filled"))).order == filled
        placed = [vo for vo in module.broker.book.values() if vo.request.client_order_id == "c-filled"]
        assert len(placed) == 1 and [u for u in ledger.events if u.client_order_id == "c-filled"] == recorded


class HoldsOrdersSentBeforeTheCrash(VirtualBroker):
    """The broker's book has an order the OMS sent before crashing, before it recorded SUBMITTED."""

    async def order_book(self):
        return [BrokerOrderEvent(exchange_order_id="EX-9", client_order_id="c-1", status=S.ORDER_STATUS_TRADED,
                                 filled_quantity=10, average_price_paise=100_00)]


async def test_a_pending_new_order_the_broker_holds_is_matched_at_start_up_with_its_submitted_recorded(start_oms):
    ledger = MemoryLedger()  # written ahead and sent; the crash came before SUBMITTED was recorded
    await ledger.insert_new(t.OrderUpdate(internal_id="i-1", client_order_id="c-1", request=order(quantity=10),
                                          status=S.ORDER_STATUS_PENDING_NEW, sequence=5), {})

    oms = await start_oms(broker=HoldsOrdersSentBeforeTheCrash(None, ChargeModel.default(), ManualClock(T0)),
                          ledger=ledger)
    await until(lambda: len(oms.updates) == 2)

    assert oms.module.reconciled["matched"] == 1
    assert [(u.status, u.filled_quantity) for u in ledger.events] == [
        (S.ORDER_STATUS_PENDING_NEW, 0), (S.ORDER_STATUS_SUBMITTED, 0), (S.ORDER_STATUS_TRADED, 10)]
    assert oms.module.engine.positions.net_quantity(order().token) == 10


class BurstReplyLost(MemoryLedger):
    """The burst's transaction commits, then the connection drops before its reply arrives."""

    async def insert_many(self, orders):
        await super().insert_many(orders)
        raise ConnectionError("connection reset")


class BurstRefused(MemoryLedger):
    """The burst's transaction fails and commits nothing; single inserts work."""

    async def insert_many(self, orders):
        raise ConnectionError("connection reset")


@pytest.mark.parametrize("ledger_type", [BurstReplyLost, BurstRefused])
async def test_a_burst_the_ledger_did_not_confirm_is_written_one_by_one_and_each_order_placed_once(
        start_oms, ledger_type):
    oms = await start_oms(ledger=ledger_type())
    placed: list[str] = []
    place = oms.broker.place_order

    async def noting(request):
        placed.append(request.client_order_id)
        return await place(request)

    oms.broker.place_order = noting  # type: ignore[method-assign]
    for n in (1, 2, 3):
        await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10, client_order_id=f"c-{n}")))
    assert await oms.bus.drain()

    assert placed == ["c-1", "c-2", "c-3"]
    assert [u.client_order_id for u in oms.updates if u.status == S.ORDER_STATUS_PENDING_NEW] == placed
    assert sorted(u.client_order_id for u in await oms.ledger.list_orders()) == placed


async def test_the_same_client_order_id_twice_in_a_burst_is_one_order(start_oms):
    oms = await start_oms()
    for _ in range(2):
        await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=10, client_order_id="c-1")))
    assert await oms.bus.drain()

    assert len(oms.broker.book) == 1
    assert [u.status for u in oms.updates] == [S.ORDER_STATUS_PENDING_NEW, S.ORDER_STATUS_SUBMITTED,
                                               S.ORDER_STATUS_OPEN]
