"""Broker events into the order book: each fill applied once, stale and illegal events refused, never raised."""

import time

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.engine import OrderEngine
from services.oms.ledger import MemoryLedger
from services.oms.reconcile import rebuild_positions
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, order


async def open_order(oms) -> t.OrderUpdate:
    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00, quantity=50)))
    return await oms.until_status("c-1", t.ORDER_STATUS_OPEN)


def event(opened, status, filled, avg=100_00):
    return BrokerOrderEvent(exchange_order_id=opened.exchange_order_id, client_order_id="c-1", status=status,
                            filled_quantity=filled, average_price_paise=avg)


async def test_the_same_cumulative_fill_reported_twice_is_applied_once(start_oms):
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine

    await engine.on_event(event(opened, t.ORDER_STATUS_PARTIALLY_FILLED, 20))
    await engine.on_event(event(opened, t.ORDER_STATUS_PARTIALLY_FILLED, 20))
    await oms.bus.drain()

    fills = [u.last_fill_quantity for u in oms.of("c-1") if u.last_fill_quantity]
    assert fills == [20]
    assert engine.positions.net_quantity(order().token) == 20


async def test_a_stale_event_with_fewer_fills_is_ignored(start_oms):
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine
    await engine.on_event(event(opened, t.ORDER_STATUS_PARTIALLY_FILLED, 30))

    await engine.on_event(event(opened, t.ORDER_STATUS_OPEN, 0))

    assert engine.lookup("c-1").status == t.ORDER_STATUS_PARTIALLY_FILLED
    assert engine.lookup("c-1").filled_quantity == 30


async def test_the_fill_price_delta_is_derived_from_cumulative_averages(start_oms):
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine
    await engine.on_event(event(opened, t.ORDER_STATUS_PARTIALLY_FILLED, 20, avg=100_00))

    await engine.on_event(event(opened, t.ORDER_STATUS_TRADED, 50, avg=(20 * 100_00 + 30 * 101_00) // 50))

    last = engine.lookup("c-1")
    assert (last.status, last.last_fill_quantity, last.last_fill_price_paise) == (t.ORDER_STATUS_TRADED, 30, 101_00)


async def test_a_fill_reported_without_a_price_waits_for_a_row_that_has_one(start_oms):
    """Kotak's early order states leave avgPrc empty: a fill applied at price 0 would book a phantom gain or loss
    as large as the order's value. It is not applied (nor the order's status moved) until a row has the price."""
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine

    await engine.on_event(event(opened, t.ORDER_STATUS_TRADED, 50, avg=0))

    assert (engine.lookup("c-1").status, engine.lookup("c-1").filled_quantity) == (t.ORDER_STATUS_OPEN, 0)
    assert engine.positions.net_quantity(order().token) == 0 and engine.unpriced_fills == 1

    await engine.on_event(event(opened, t.ORDER_STATUS_TRADED, 50, avg=100_00))

    last = engine.lookup("c-1")
    assert (last.status, last.last_fill_quantity, last.last_fill_price_paise) == (t.ORDER_STATUS_TRADED, 50, 100_00)


async def test_an_illegal_broker_transition_is_counted_and_the_order_kept(start_oms):
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine
    await engine.on_event(event(opened, t.ORDER_STATUS_PARTIALLY_FILLED, 20))

    await engine.on_event(event(opened, t.ORDER_STATUS_REJECTED, 20))

    assert engine.illegal_transitions == 1
    assert engine.lookup("c-1").status == t.ORDER_STATUS_PARTIALLY_FILLED


async def test_events_for_orders_outside_the_book_are_ignored(start_oms):
    oms = await start_oms()

    await oms.module.engine.on_event(BrokerOrderEvent("X-1", "someone-else", t.ORDER_STATUS_TRADED, 5, 100))

    assert oms.updates == []


async def test_memory_ledger_lists_newest_first_with_filters():
    ledger = MemoryLedger()
    for i, tag in enumerate(["A", "B", "A"]):
        req = order(client_order_id=f"c-{i}")
        req.strategy_tag = tag
        await ledger.insert_new(t.OrderUpdate(internal_id=f"i-{i}", client_order_id=f"c-{i}", request=req), {})
    cancelled = await ledger.get("i-2")
    cancelled.status, cancelled.sequence = t.ORDER_STATUS_CANCELLED, 9
    await ledger.record(cancelled, {"why": "test"})

    assert [o.internal_id for o in await ledger.list_orders()] == ["i-2", "i-1", "i-0"]
    assert [o.internal_id for o in await ledger.list_orders(open_only=True)] == ["i-1", "i-0"]
    assert [o.internal_id for o in await ledger.list_orders(strategy_tag="A", limit=1)] == ["i-2"]
    assert (await ledger.get("c-2")).status == t.ORDER_STATUS_CANCELLED
    assert await ledger.insert_new(t.OrderUpdate(internal_id="i-9", client_order_id="c-1"), {}) is not None
    assert await ledger.max_sequence() == 9


class LostInsertReply(MemoryLedger):
    """insert_new commits, then the connection drops before the reply arrives."""

    async def insert_new(self, order, audit):
        await super().insert_new(order, audit)
        raise ConnectionResetError("connection lost after COMMIT")


class RefusesInsert(MemoryLedger):
    """The database is down: insert_new writes nothing."""

    async def insert_new(self, order, audit):
        raise ConnectionRefusedError("database unavailable")


async def test_an_order_whose_ledger_insert_committed_but_lost_its_reply_is_placed_once(start_oms):
    oms = await start_oms(ledger=LostInsertReply())

    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00)))

    opened = await oms.until_status("c-1", t.ORDER_STATUS_OPEN)
    assert oms.statuses("c-1")[0] == t.ORDER_STATUS_PENDING_NEW
    assert len(oms.broker.book) == 1 and opened.exchange_order_id


async def test_an_order_the_ledger_could_not_write_is_never_sent_and_reported_rejected(start_oms):
    """Write-ahead: no order reaches the broker before it is in the ledger. Without an update, risk would count
    it open for good and its strategy would wait on it."""
    oms = await start_oms(ledger=RefusesInsert())

    await oms.bus.publish(Topic.ORDERS, accepted(order(price=100_00)))

    rejected = await oms.until_status("c-1", t.ORDER_STATUS_REJECTED)
    assert rejected.reason_code == "NOT_SENT" and "ledger" in rejected.reason
    assert oms.broker.book == {}
    assert oms.module.engine.lookup("c-1").status == t.ORDER_STATUS_REJECTED


async def test_a_row_with_more_filled_than_ordered_is_refused_not_booked(start_oms):
    """A broker row (or a mis-parse of one) claiming 60 filled on a 50 order: booking it would put a position the
    account does not hold into risk's limits and P&L. It is refused and counted; the position check reports any
    real difference."""
    oms = await start_oms()
    opened = await open_order(oms)
    engine = oms.module.engine

    await engine.on_event(event(opened, t.ORDER_STATUS_TRADED, 60))

    assert (engine.lookup("c-1").status, engine.lookup("c-1").filled_quantity) == (t.ORDER_STATUS_OPEN, 0)
    assert engine.positions.net_quantity(order().token) == 0 and engine.overfills == 1


async def test_the_memory_ledgers_last_decision_sequence_is_the_highest_written_ahead():
    ledger = MemoryLedger()
    assert await ledger.last_decision_sequence() == 0
    for i, sequence in enumerate((19, 15)):
        decision = accepted(order(client_order_id=f"c-{i}"))
        decision.sequence = sequence
        await ledger.insert_new(t.OrderUpdate(internal_id=f"i-{i}", client_order_id=f"c-{i}"), {"decision": decision})
    await ledger.insert_new(t.OrderUpdate(internal_id="i-9", client_order_id="c-9"), {})

    assert await ledger.last_decision_sequence() == 19


def aged(client_order_id: str, age_s: float) -> t.RiskDecision:
    decision = accepted(order(client_order_id=client_order_id, kind=t.ORDER_TYPE_MARKET, price=0))
    decision.order.tick_recv_ns = time.time_ns() - int(age_s * 1e9)
    return decision


async def test_a_decision_from_a_tick_older_than_max_decision_age_is_recorded_not_sent_and_never_placed(start_oms):
    from services.oms.config import OmsSettings

    oms = await start_oms(settings=OmsSettings(max_decision_age_s=5, poll_interval_s=0, lookup_backoff_s=0))
    for decision in (aged("old", 30), aged("fresh", 0.01), accepted(order(client_order_id="manual"))):
        await oms.bus.publish(Topic.ORDERS, decision)  # queued together: one burst
    old = await oms.until_status("old", t.ORDER_STATUS_REJECTED)
    for tag in ("fresh", "manual"):  # no tick behind a manual order: no age
        await oms.until_status(tag, t.ORDER_STATUS_OPEN)

    assert oms.statuses("old") == [t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_REJECTED]
    assert old.reason_code == "NOT_SENT" and "max_decision_age_s 5 s" in old.reason and "30." in old.reason
    assert (await oms.ledger.get("old")).status == t.ORDER_STATUS_REJECTED
    assert await oms.broker.find_by_tag("old") is None


async def test_a_manual_order_risk_decided_longer_ago_than_max_decision_age_is_recorded_not_sent(start_oms):
    """No tick behind a manual order or a square-off: its age runs from risk's decision. In split mode a restarted
    OMS is handed again what risk decided while it was away, a manual order the trader was told was not sent (its
    write-ahead failed) among them: placed late, and twice if the trader placed it again meanwhile."""
    import time

    from services.oms.config import OmsSettings

    oms = await start_oms(settings=OmsSettings(max_decision_age_s=5, poll_interval_s=0, lookup_backoff_s=0))
    late, now = accepted(order(client_order_id="late")), accepted(order(client_order_id="now"))
    late.decided_wall_ns, now.decided_wall_ns = time.time_ns() - 60 * 10**9, time.time_ns()
    for decision in (late, now):
        await oms.bus.publish(Topic.ORDERS, decision)

    refused = await oms.until_status("late", t.ORDER_STATUS_REJECTED)
    await oms.until_status("now", t.ORDER_STATUS_OPEN)

    assert refused.reason_code == "NOT_SENT" and "risk decided it 60." in refused.reason
    assert await oms.broker.find_by_tag("late") is None


async def test_with_max_decision_age_zero_an_old_decision_is_placed(start_oms):
    from services.oms.config import OmsSettings

    oms = await start_oms(settings=OmsSettings(max_decision_age_s=0, poll_interval_s=0, lookup_backoff_s=0))
    await oms.bus.publish(Topic.ORDERS, aged("old", 3600))

    await oms.until_status("old", t.ORDER_STATUS_OPEN)


class ChargesOnTheContractNote(VirtualBroker):
    """Reports no charges per fill, as Kotak (they come on the contract note): the OMS estimates them."""

    reports_charges = False


async def test_after_a_restart_the_estimated_brokerage_of_a_part_filled_order_counts_what_its_fills_paid():
    ledger, clock = MemoryLedger(), ManualClock(T0 + 1)
    request = order(price=1000_00, quantity=1000)

    def engine() -> OrderEngine:
        return OrderEngine(Bus(), OmsSettings(), ChargesOnTheContractNote(None, ChargeModel.default(), clock), ledger,
                           clock)

    def filled(quantity: int) -> BrokerOrderEvent:
        status = t.ORDER_STATUS_TRADED if quantity == request.quantity else t.ORDER_STATUS_PARTIALLY_FILLED
        return BrokerOrderEvent("X-1", "c-1", status, filled_quantity=quantity, average_price_paise=1000_00)

    first = engine()
    placed = t.OrderUpdate(internal_id="i-1", client_order_id="c-1", status=t.ORDER_STATUS_PENDING_NEW,
                           request=request, ts_ns=T0)
    await ledger.insert_new(placed, {})
    first.remember(placed)
    await first.on_event(filled(500))  # Rs 5 lakh: 0.03% is Rs 150, so the flat Rs 20 brokerage is paid
    restarted = engine()
    await restarted.start_sequence()
    await rebuild_positions(restarted)
    for u in await ledger.open_orders():
        restarted.remember(u)

    await restarted.on_event(filled(1000))

    rest = ChargeModel.default().for_fill(request, 500, 1000_00, brokerage_so_far_paise=2000)
    assert rest.brokerage == 0
    assert restarted.lookup("c-1").last_fill_charges_paise == rest.total
