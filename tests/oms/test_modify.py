"""ModifyOrder end to end on one Bus: the real RiskModule checks the change, the real OmsModule writes MODIFY_PENDING
ahead, the VirtualBroker takes it, and the ledger (in memory and in PostgreSQL) keeps the order's new terms. Also the
broker's own reports of an order's terms: a change made outside NeoPulse, and a row read before ours.

Only ListInstruments is a stand-in (the instrument master of four NSE shares).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from services.oms.broker import BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.engine import OrderStateError
from services.oms.ledger import MemoryLedger
from services.oms.ledger_pg import PgLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import InvalidInput, RetryableError, RiskRejected, TradingHalted
from shared.marketdata import nse_instruments
from shared.order_terms import changed_terms
from tests.helpers import eventually as until
from tests.helpers import stop_worlds
from tests.risk.factories import DAY
from tests.risk.test_fuzz_square_off import World

RELIANCE = 2885
PX = 1290_00
LIMIT, MARKET, STOP_LIMIT = t.ORDER_TYPE_LIMIT, t.ORDER_TYPE_MARKET, t.ORDER_TYPE_STOP_LIMIT


class LostAnswers(VirtualBroker):
    """A broker that takes a change and whose answer is lost on the way back (a timeout after it acted)."""

    async def modify_order(self, exchange_order_id, **terms):
        await super().modify_order(exchange_order_id, **terms)
        raise TimeoutError("read timed out")


class SlowAnswers(VirtualBroker):
    """A broker that takes a while to answer a change (a slow REST round trip)."""

    async def modify_order(self, exchange_order_id, **terms):
        await asyncio.sleep(0.2)
        return await super().modify_order(exchange_order_id, **terms)


@pytest.fixture(params=["memory", "postgres"])
async def make_world(request, db_pool) -> AsyncIterator:
    tasks: list[asyncio.Task] = []
    modules: list[OmsModule] = []

    async def make(broker_class: type[VirtualBroker] = VirtualBroker) -> World:
        bus, clock = Bus(), ManualClock(ist_ns(DAY, 11, 0))
        instruments = nse_instruments(["RELIANCE-EQ", "SBIN-EQ"])

        async def list_instruments(_: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=instruments)

        bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        broker = broker_class(None, ChargeModel.default(), clock)
        ledger = MemoryLedger() if request.param == "memory" else PgLedger(db_pool)
        oms = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2), broker,
                        ledger, clock)
        risk = RiskModule(bus, load(RiskSettings, {}, loss_check_interval_ms=0, max_order_quantity=200,
                                    max_position_quantity=150, max_orders_per_second=10_000), clock)
        w = World(bus, clock, oms, broker, ledger, risk, {i.token: PX for i in instruments})

        async def collect(update: t.OrderUpdate) -> None:
            w.updates.append(update)

        bus.subscribe(Topic.ORDER_UPDATES, "test", collect)
        tasks.append(asyncio.create_task(bus.run()))
        await oms.start()
        modules.append(oms)
        tasks.append(asyncio.create_task(oms.run()))
        await risk.start()
        await w.tick(RELIANCE)
        return w

    yield make
    await stop_worlds(tasks, modules)


async def resting_buy(w: World, quantity: int = 10, price: int = PX - 10_00,
                      kind: int = LIMIT, trigger: int = 0) -> t.OrderUpdate:
    await w.submit(token=RELIANCE, side=t.SIDE_BUY, quantity=quantity, order_type=kind, price_paise=price,
                   trigger_price_paise=trigger, product=t.PRODUCT_MIS)
    return w.oms.engine.lookup(f"fz-{w.n}")


async def modify(w: World, order_id: str, quantity: int = 0, price: int = 0, trigger: int = 0) -> t.OrderUpdate:
    reply = await w.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(
        order_id=order_id, quantity=quantity, price_paise=price, trigger_price_paise=trigger))
    await w.settle()
    return reply.order


def terms(request: t.OrderRequest) -> tuple[int, int, int]:
    return request.quantity, request.price_paise, request.trigger_price_paise


def at_broker(w: World, order: t.OrderUpdate) -> t.OrderRequest:
    return w.broker.book[order.exchange_order_id].request


async def test_a_change_carries_the_new_terms_in_the_reply_the_book_the_ledger_the_broker_and_risk(make_world):
    w = await make_world()
    placed = await resting_buy(w)

    changed = await modify(w, placed.client_order_id, quantity=20, price=PX - 5_00)

    assert changed.status == t.ORDER_STATUS_OPEN
    assert terms(changed.request) == (20, PX - 5_00, 0)
    after = [(u.status, terms(u.request)) for u in w.updates if u.sequence > placed.sequence]
    assert after == [(t.ORDER_STATUS_MODIFY_PENDING, (20, PX - 5_00, 0)), (t.ORDER_STATUS_OPEN, (20, PX - 5_00, 0))]
    assert terms(at_broker(w, placed)) == (20, PX - 5_00, 0)
    stored = await w.ledger.get(placed.internal_id)
    assert (stored.status, terms(stored.request), stored.sequence) == (t.ORDER_STATUS_OPEN, (20, PX - 5_00, 0),
                                                                       changed.sequence)
    assert w.risk.engine.open_orders[placed.client_order_id].quantity == 20


async def test_a_changed_limit_fills_at_its_new_price_once_and_books_the_new_quantity(make_world):
    w = await make_world()
    placed = await resting_buy(w, quantity=10)
    await modify(w, placed.internal_id, quantity=30, price=PX + 5_00)  # crosses: fills on the next candle
    w.clock.advance(61)
    await w.candle(RELIANCE, random.Random(1))

    await until(lambda: w.oms.engine.lookup(placed.internal_id).status == t.ORDER_STATUS_TRADED)
    await w.settle()  # the book has it at once; the test's subscriber once the bus has handed it over
    final = w.oms.engine.lookup(placed.internal_id)
    assert final.filled_quantity == 30
    assert sum(u.last_fill_quantity for u in w.updates if u.internal_id == placed.internal_id) == 30
    assert w.oms.engine.positions.net_quantity(RELIANCE) == 30
    assert w.oms.engine.overfills == 0


async def test_a_change_risk_refuses_is_never_sent_and_the_order_keeps_its_terms(make_world):
    w = await make_world()
    placed = await resting_buy(w)

    with pytest.raises(RiskRejected) as info:
        await modify(w, placed.client_order_id, quantity=250)  # max_order_quantity is 200

    assert info.value.reason_code == "MAX_ORDER_QUANTITY"
    assert [u for u in w.updates if u.sequence > placed.sequence] == []
    assert terms(at_broker(w, placed)) == (10, PX - 10_00, 0)
    assert w.risk.engine.open_orders[placed.client_order_id].quantity == 10


async def test_risk_counts_the_rest_of_a_changed_order_once_against_the_position_limit(make_world):
    """max_position_quantity 150: a working buy of 100 may grow to 150, not past it. Counted with its old 100 as well,
    150 would be refused."""
    w = await make_world()
    placed = await resting_buy(w, quantity=100)

    await modify(w, placed.client_order_id, quantity=150)
    with pytest.raises(RiskRejected) as info:
        await modify(w, placed.client_order_id, quantity=160)

    assert info.value.reason_code == "MAX_POSITION_QUANTITY"
    assert terms(at_broker(w, placed))[0] == 150


async def test_while_halted_a_working_order_may_be_cancelled_not_changed(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    await w.risk.set_kill_switch(risk_pb2.SetKillSwitchRequest(engaged=True, reason="test"))

    with pytest.raises(TradingHalted, match="cancelled, not changed"):
        await modify(w, placed.client_order_id, price=PX - 9_00)

    assert terms(at_broker(w, placed)) == (10, PX - 10_00, 0)
    await w.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=placed.client_order_id))
    await w.settle()
    assert w.oms.engine.lookup(placed.internal_id).status == t.ORDER_STATUS_CANCELLED


@pytest.mark.parametrize(("change", "field"), [
    ({}, "quantity"),
    ({"quantity": -5}, "quantity"),
    ({"trigger": PX}, "trigger_price_paise"),  # a LIMIT order has no trigger
])
async def test_a_change_that_cannot_be_names_its_field_and_sends_nothing(make_world, change, field):
    w = await make_world()
    placed = await resting_buy(w)

    with pytest.raises(InvalidInput) as info:
        await modify(w, placed.client_order_id, **change)

    assert info.value.field == field
    assert [u for u in w.updates if u.sequence > placed.sequence] == []


def test_a_market_orders_price_cannot_be_changed():
    market = t.OrderRequest(quantity=5, order_type=MARKET)

    with pytest.raises(InvalidInput) as info:
        changed_terms(market, 0, (0, 800_00, 0))

    assert info.value.field == "price_paise"
    assert changed_terms(market, 0, (8, 0, 0)) == (8, 0, 0)


def test_the_new_quantity_is_the_total_and_must_stay_above_what_filled():
    order = t.OrderRequest(quantity=10, order_type=LIMIT, price_paise=100_00)

    with pytest.raises(InvalidInput, match="above the 6 units already filled"):
        changed_terms(order, 6, (6, 0, 0))

    assert changed_terms(order, 6, (7, 0, 0)) == (7, 100_00, 0)


async def test_the_same_terms_again_send_nothing_twice(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    changed = await modify(w, placed.client_order_id, price=PX - 5_00)
    accepted_ns = w.broker.book[placed.exchange_order_id].accepted_ns
    w.clock.advance(1)

    again = await modify(w, placed.client_order_id, price=PX - 5_00)

    assert again.sequence == changed.sequence
    assert w.broker.book[placed.exchange_order_id].accepted_ns == accepted_ns  # the broker saw no second change


async def test_an_order_that_ended_cannot_be_changed(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    await w.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=placed.client_order_id))
    await w.settle()

    with pytest.raises(OrderStateError, match="already CANCELLED"):
        await modify(w, placed.client_order_id, price=PX - 5_00)


async def test_a_change_the_broker_refuses_leaves_the_old_terms_everywhere(make_world):
    """The order filled at the broker while the OMS had not heard yet: the VirtualBroker refuses the change."""
    w = await make_world()
    placed = await resting_buy(w)
    vo = w.broker.book[placed.exchange_order_id]
    vo.status = t.ORDER_STATUS_CANCELLED  # closed there; its event is not out yet

    with pytest.raises(Exception, match="already CANCELLED"):
        await modify(w, placed.client_order_id, quantity=20, price=PX - 5_00)

    now = w.oms.engine.lookup(placed.internal_id)
    assert (now.status, terms(now.request)) == (t.ORDER_STATUS_OPEN, (10, PX - 10_00, 0))
    assert "change refused" in now.reason
    stored = await w.ledger.get(placed.internal_id)
    assert terms(stored.request) == (10, PX - 10_00, 0)
    assert w.risk.engine.open_orders[placed.client_order_id].quantity == 10  # counted back at its old terms


async def test_a_change_whose_answer_is_lost_is_read_back_from_the_broker(make_world):
    w = await make_world(LostAnswers)
    placed = await resting_buy(w)

    with pytest.raises(RetryableError, match="no answer"):
        await modify(w, placed.client_order_id, quantity=20)

    now = w.oms.engine.lookup(placed.internal_id)
    assert (now.status, terms(now.request)) == (t.ORDER_STATUS_OPEN, (20, PX - 10_00, 0))
    assert terms((await w.ledger.get(placed.internal_id)).request) == (20, PX - 10_00, 0)


async def test_a_change_made_outside_neopulse_is_taken_from_the_broker_and_its_fills_are_booked(make_world):
    """Changed in the broker's own app: its order feed reports the new terms; the book takes them (a same-state
    update), and a fill beyond the old quantity is booked, not refused as more than the order's quantity."""
    w = await make_world()
    placed = await resting_buy(w, quantity=10)

    await w.broker.modify_order(placed.exchange_order_id, quantity=40, price_paise=PX - 5_00)
    await until(lambda: w.oms.engine.lookup(placed.internal_id).request.quantity == 40)

    news = w.oms.engine.lookup(placed.internal_id)
    assert (news.previous_status, news.status) == (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_OPEN)
    assert terms(news.request) == (40, PX - 5_00, 0)
    assert terms((await w.ledger.get(placed.internal_id)).request) == (40, PX - 5_00, 0)
    assert w.risk.engine.open_orders[placed.client_order_id].quantity == 40
    w.clock.advance(61)
    await w.candle(RELIANCE, random.Random(1))
    await until(lambda: w.oms.engine.lookup(placed.internal_id).filled_quantity == 40)
    assert w.oms.engine.overfills == 0


async def test_a_row_read_before_our_change_does_not_take_the_order_back_to_its_old_terms(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    await modify(w, placed.client_order_id, price=PX - 5_00)
    stale = BrokerOrderEvent(placed.exchange_order_id, placed.client_order_id, t.ORDER_STATUS_OPEN, quantity=10,
                             price_paise=PX - 10_00)

    await w.oms.engine.on_event(stale)  # an order-book poll's snapshot taken just before the change

    assert terms(w.oms.engine.lookup(placed.internal_id).request) == (10, PX - 5_00, 0)
    w.oms.engine._replaced_terms[placed.internal_id] = ((10, PX - 10_00, 0), time.monotonic() - 1)  # long after
    await w.oms.engine.on_event(stale)
    assert terms(w.oms.engine.lookup(placed.internal_id).request) == (10, PX - 10_00, 0)  # the broker's word wins


async def test_a_stop_limits_trigger_and_price_change_together(make_world):
    w = await make_world()
    placed = await resting_buy(w, kind=STOP_LIMIT, price=PX + 20_00, trigger=PX + 15_00)
    assert placed.status == t.ORDER_STATUS_TRIGGER_PENDING

    changed = await modify(w, placed.client_order_id, price=PX + 30_00, trigger=PX + 25_00)

    assert changed.status == t.ORDER_STATUS_TRIGGER_PENDING
    assert terms(at_broker(w, placed)) == (10, PX + 30_00, PX + 25_00)


async def test_a_market_tick_beyond_the_band_refuses_a_far_price(make_world):
    w = await make_world()
    placed = await resting_buy(w)
    band = w.risk.engine.limits.price_band_bps

    with pytest.raises(RiskRejected) as info:
        await modify(w, placed.client_order_id, price=PX * (10_000 - 2 * band) // 10_000 // 5 * 5)

    assert info.value.reason_code == "PRICE_BAND"


async def test_a_caller_that_stops_waiting_leaves_the_change_to_finish_and_be_recorded(make_world):
    """A deadline mid-call: the change is at the broker by then, so its answer is recorded all the same, and the
    order is not left MODIFY_PENDING."""
    w = await make_world(SlowAnswers)
    placed = await resting_buy(w)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(modify(w, placed.client_order_id, price=PX - 5_00), 0.05)

    await until(lambda: w.oms.engine.lookup(placed.internal_id).status == t.ORDER_STATUS_OPEN)
    now = w.oms.engine.lookup(placed.internal_id)
    assert terms(now.request) == terms(at_broker(w, placed)) == (10, PX - 5_00, 0)
    assert terms((await w.ledger.get(placed.internal_id)).request) == (10, PX - 5_00, 0)


async def test_a_change_that_makes_a_limit_marketable_trades_at_once_as_a_new_order_would(make_world):
    """Paper trading as the exchange does it: a buy raised to the ask fills on the change, at the ask, not at the
    next candle's close (the VirtualBroker used to leave it resting until a candle crossed it)."""
    w = await make_world()
    placed = await resting_buy(w)

    await modify(w, placed.client_order_id, price=PX + 10_00)  # the last tick asks PX + 5

    await until(lambda: w.oms.engine.lookup(placed.internal_id).status == t.ORDER_STATUS_TRADED)
    done = w.oms.engine.lookup(placed.internal_id)
    assert (done.filled_quantity, done.average_price_paise) == (10, PX + 5)
    assert w.oms.engine.positions.net_quantity(RELIANCE) == 10
