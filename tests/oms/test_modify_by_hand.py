"""Who changed an order: the OMS counts the changes it sends (changes_sent) and marks an order changed by hand (a
trader's ModifyOrder, or terms the broker reports that NeoPulse never sent: CHANGED_AT_BROKER). A strategy's change
of an order changed by hand is refused. Both survive in the ledger (memory and PostgreSQL) and a restart of the OMS.

On one Bus with the real RiskModule, OmsModule and VirtualBroker (see test_modify.py, whose world this borrows).
"""

from __future__ import annotations

import json

import pytest

from services.notifier import replies
from services.oms.broker import BrokerAck, BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.ledger_pg import PgLedger
from services.oms.modifying import terms_audit
from services.oms.states import ReasonCode
from services.oms.virtual_broker import VirtualBroker
from shared import rpc
from shared.clock import ManualClock
from shared.contracts import oms_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, InvalidInput, NotFound, OrderStateError, RiskRejected
from tests.helpers import eventually as until
from tests.oms.conftest import NoOrderFeed
from tests.oms.helpers import T0, order
from tests.oms.test_modify import PX, LostAnswers, resting_buy, terms
from tests.oms.test_modify import make_world as make_world  # the fixture: risk + OMS + VirtualBroker on one Bus

STRATEGY = "FUZZ"  # the strategy_tag of the world's orders (tests.risk.test_fuzz_square_off.World.submit)


async def change(w, order_id: str, strategy: str = "", quantity: int = 0, price: int = 0) -> t.OrderUpdate:
    reply = await w.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(
        order_id=order_id, quantity=quantity, price_paise=price, strategy_tag=strategy))
    await w.settle()
    return reply.order


def marks(u: t.OrderUpdate) -> tuple[int, bool]:
    return u.changes_sent, u.changed_by_hand


async def test_each_change_the_strategy_sends_is_counted_in_every_later_update_and_the_ledger(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    assert marks(placed) == (0, False)

    await change(w, placed.client_order_id, STRATEGY, price=PX - 9_00)
    second = await change(w, placed.client_order_id, STRATEGY, price=PX - 8_00)

    assert marks(second) == (2, False)
    after = [(u.status, marks(u)) for u in w.updates if u.sequence > placed.sequence]
    assert after == [(t.ORDER_STATUS_MODIFY_PENDING, (1, False)), (t.ORDER_STATUS_OPEN, (1, False)),
                     (t.ORDER_STATUS_MODIFY_PENDING, (2, False)), (t.ORDER_STATUS_OPEN, (2, False))]
    assert marks(await w.ledger.get(placed.internal_id)) == (2, False)
    seen = (await w.ledger.changed_terms([placed.internal_id]))[placed.internal_id]  # what a restart takes back
    assert seen >= {(10, PX - 9_00, 0), (10, PX - 8_00, 0)}  # in memory: the last change's; PostgreSQL: each's


class RefusesChanges(VirtualBroker):
    """A broker that refuses every change (the order filled there meanwhile, or a rule of the exchange)."""

    async def modify_order(self, exchange_order_id: str, **terms: int) -> BrokerAck:
        raise BrokerRejected("order already traded")


async def test_a_change_the_broker_refuses_counts_and_one_risk_refuses_does_not(make_world):
    w = await make_world(RefusesChanges)
    placed = await resting_buy(w)

    with pytest.raises(RiskRejected):
        await change(w, placed.client_order_id, STRATEGY, quantity=500)  # above max_order_quantity: never sent
    assert marks(w.oms.engine.lookup(placed.internal_id)) == (0, False)

    with pytest.raises(BrokerRejected, match="already traded"):
        await change(w, placed.client_order_id, STRATEGY, price=PX - 9_00)
    now = w.oms.engine.lookup(placed.internal_id)
    assert (now.status, terms(now.request), marks(now)) == (t.ORDER_STATUS_OPEN, (10, PX - 10_00, 0), (1, False))
    assert marks(await w.ledger.get(placed.internal_id)) == (1, False)


async def test_a_traders_change_marks_the_order_and_the_strategy_may_not_change_it_after(make_world):
    w = await make_world()
    placed = await resting_buy(w)

    by_hand = await change(w, placed.client_order_id, price=PX - 7_00)  # no strategy_tag: Telegram, grpcurl
    assert (by_hand.status, marks(by_hand)) == (t.ORDER_STATUS_OPEN, (1, True))

    with pytest.raises(OrderStateError, match="changed by hand"):
        await change(w, placed.client_order_id, STRATEGY, price=PX - 6_00)
    now = w.oms.engine.lookup(placed.internal_id)
    assert (terms(now.request), marks(now)) == ((10, PX - 7_00, 0), (1, True))
    assert terms(w.broker.book[placed.exchange_order_id].request) == (10, PX - 7_00, 0)
    assert marks(await w.ledger.get(placed.internal_id)) == (1, True)
    again = await change(w, placed.client_order_id, price=PX - 6_00)  # the trader may, as often as they like
    assert marks(again) == (2, True)


async def test_a_strategy_may_not_change_another_strategys_order(make_world):
    w = await make_world()
    placed = await resting_buy(w)

    with pytest.raises(InvalidInput, match=r"strategy_tag: .*FUZZ's, not OTHER's"):
        await change(w, placed.client_order_id, "OTHER", price=PX - 9_00)
    assert marks(w.oms.engine.lookup(placed.internal_id)) == (0, False)


async def test_terms_changed_in_the_brokers_app_mark_the_order_changed_at_the_broker(make_world):
    w = await make_world()
    placed = await resting_buy(w)

    await w.broker.modify_order(placed.exchange_order_id, quantity=20, price_paise=PX - 5_00)  # Kotak's app
    await until(lambda: w.oms.engine.lookup(placed.internal_id).request.quantity == 20)
    await w.settle()  # the book has it at once; the test's subscriber once the bus has handed it over

    news = [u for u in w.updates if terms(u.request) == (20, PX - 5_00, 0)]
    assert [(u.reason_code, marks(u)) for u in news] == [(ReasonCode.CHANGED_AT_BROKER, (0, True))]
    with pytest.raises(OrderStateError, match="changed by hand"):
        await change(w, placed.client_order_id, STRATEGY, price=PX - 6_00)
    stored = await w.ledger.get(placed.internal_id)
    assert (stored.reason_code, marks(stored)) == (ReasonCode.CHANGED_AT_BROKER, (0, True))


async def test_the_broker_showing_the_terms_before_our_unanswered_change_is_not_a_change_by_hand(make_world):
    """Our change got no answer and did not hold: the broker's row shows the old terms. The book takes them back; no
    one changed the order by hand, so its strategy may go on changing it."""
    w = await make_world(LostAnswers)
    placed = await resting_buy(w)
    with pytest.raises(Exception, match="no answer"):
        await change(w, placed.client_order_id, STRATEGY, quantity=20)
    assert terms(w.oms.engine.lookup(placed.internal_id).request) == (20, PX - 10_00, 0)

    held_old = BrokerOrderEvent(placed.exchange_order_id, placed.client_order_id, t.ORDER_STATUS_OPEN, quantity=10,
                                price_paise=PX - 10_00)
    w.oms.engine._replaced_terms.pop(placed.internal_id, None)  # long after the change: the broker's word wins
    await w.oms.engine.on_event(held_old)

    now = w.oms.engine.lookup(placed.internal_id)
    assert (terms(now.request), now.reason_code, marks(now)) == ((10, PX - 10_00, 0), "", (1, False))


async def test_a_restarted_oms_goes_on_from_the_count_and_the_mark_in_its_postgresql_ledger(start_oms, db_pool):
    ledger = PgLedger(db_pool)
    u = t.OrderUpdate(internal_id="00000000-0000-4000-8000-0000000000c1", client_order_id="c-1",
                      request=order(price=100_00, quantity=10), status=t.ORDER_STATUS_PENDING_NEW, ts_ns=T0, sequence=1)
    await ledger.insert_new(u, {})
    for sequence, status, changes, by_hand in ((2, t.ORDER_STATUS_OPEN, 0, False),
                                               (3, t.ORDER_STATUS_MODIFY_PENDING, 1, False),
                                               (4, t.ORDER_STATUS_OPEN, 1, False),
                                               (5, t.ORDER_STATUS_MODIFY_PENDING, 2, True),
                                               (6, t.ORDER_STATUS_OPEN, 2, True)):
        u.previous_status, u.status, u.sequence, u.exchange_order_id = u.status, status, sequence, "VB-1"
        u.changes_sent, u.changed_by_hand = changes, by_hand
        await ledger.record(u, {})
    listed = await ledger.list_orders(strategy_tag="TEST")  # what a restarted strategy reads (ListOrders)
    assert [marks(o) for o in listed] == [(2, True)]

    oms = await start_oms(broker=NoOrderFeed(None, ChargeModel.default(), ManualClock(T0 + 1)), ledger=ledger)

    assert marks(oms.module.engine.lookup("c-1")) == (2, True)
    with pytest.raises(OrderStateError, match="changed by hand"):
        await oms.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id="c-1", price_paise=101_00,
                                                                        strategy_tag="TEST"))


class ChangeNotHeld(NoOrderFeed):
    """After the restart the broker's book shows c-1 with its terms before our last change: the change did not hold
    (refused by the exchange while NeoPulse was down)."""

    async def order_book(self) -> list[BrokerOrderEvent]:
        return [BrokerOrderEvent("VB-1", "c-1", t.ORDER_STATUS_OPEN, quantity=10, price_paise=100_00)]


async def test_after_a_restart_the_terms_before_a_change_of_ours_that_did_not_hold_are_not_a_change_by_hand(
        start_oms, db_pool):
    ledger = PgLedger(db_pool)
    u = t.OrderUpdate(internal_id="00000000-0000-4000-8000-0000000000c2", client_order_id="c-1",
                      request=order(price=100_00, quantity=10), status=t.ORDER_STATUS_PENDING_NEW, ts_ns=T0, sequence=1)
    await ledger.insert_new(u, {})
    u.previous_status, u.status, u.sequence, u.exchange_order_id = u.status, t.ORDER_STATUS_OPEN, 2, "VB-1"
    await ledger.record(u, {})
    u.previous_status, u.status, u.sequence, u.changes_sent = u.status, t.ORDER_STATUS_MODIFY_PENDING, 3, 1
    u.request.price_paise = 101_00
    await ledger.record(u, {"modify_request": {"from": terms_audit((10, 100_00, 0)), "to": terms_audit((10, 101_00, 0)),
                                               "by": "TEST"}})

    oms = await start_oms(broker=ChangeNotHeld(None, ChargeModel.default(), ManualClock(T0 + 1)), ledger=ledger)

    now = oms.module.engine.lookup("c-1")
    assert (now.status, terms(now.request), now.reason_code, marks(now)) == (
        t.ORDER_STATUS_OPEN, (10, 100_00, 0), "", (1, False))
    assert await ledger.changed_terms(["00000000-0000-4000-8000-0000000000c2"]) == {
        "00000000-0000-4000-8000-0000000000c2": {(10, 100_00, 0), (10, 101_00, 0)}}


async def test_an_orders_history_shows_each_transition_and_who_changed_it(make_world):
    """GetOrderHistory: every transition the ledger recorded (in memory and in PostgreSQL), oldest first, each with
    its audit; /history and `ctl history` show who or what moved each."""
    w = await make_world()
    placed = await resting_buy(w)
    await change(w, placed.client_order_id, STRATEGY, price=PX - 9_00)
    await change(w, placed.client_order_id, price=PX - 8_00)

    reply = await w.bus.call(rpc.GET_ORDER_HISTORY, oms_pb2.GetOrderHistoryRequest(order_id=placed.client_order_id))

    entries = list(reply.entries)
    assert [(e.update.status, marks(e.update)) for e in entries] == [
        (t.ORDER_STATUS_PENDING_NEW, (0, False)), (t.ORDER_STATUS_SUBMITTED, (0, False)),
        (t.ORDER_STATUS_OPEN, (0, False)),
        (t.ORDER_STATUS_MODIFY_PENDING, (1, False)), (t.ORDER_STATUS_OPEN, (1, False)),
        (t.ORDER_STATUS_MODIFY_PENDING, (2, True)), (t.ORDER_STATUS_OPEN, (2, True))]
    assert [json.loads(e.audit_json).get("modify_request", {}).get("by") for e in entries] == [
        None, None, None, STRATEGY, None, "hand", None]
    assert "decision" in json.loads(entries[0].audit_json)  # the write-ahead keeps risk's decision
    shown = replies.history_html(entries).splitlines()
    assert shown[0] == f"History of <code>{placed.client_order_id}</code>: BUY <b>RELIANCE-EQ</b> [{STRATEGY}]"
    assert [line.rsplit(" · ", 1)[-1] for line in shown if "MODIFY_PENDING" in line] == [
        f"change by {STRATEGY}", "change by hand"]


async def test_the_history_of_an_unknown_order_is_not_found_and_of_none_invalid(make_world):
    w = await make_world()

    with pytest.raises(NotFound, match="no order 'nope'"):
        await w.bus.call(rpc.GET_ORDER_HISTORY, oms_pb2.GetOrderHistoryRequest(order_id="nope"))
    with pytest.raises(InvalidInput, match="order_id"):
        await w.bus.call(rpc.GET_ORDER_HISTORY, oms_pb2.GetOrderHistoryRequest())
