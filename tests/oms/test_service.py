"""OrderService requests over the bus, with a risk stand-in that publishes accepted decisions on ORDERS."""

import asyncio

import pytest

from services.oms.engine import OrderStateError
from services.oms.ledger import MemoryLedger
from shared import rpc
from shared.bus import Topic
from shared.clock import NS
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, InvalidInput, NotFound, RiskRejected
from tests.helpers import eventually as until
from tests.oms.conftest import risk_stand_in
from tests.oms.helpers import MINUTE, T0, candle, order, tick


async def place(oms, req) -> t.OrderUpdate:
    reply = await oms.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=req))
    return reply.order


async def test_place_order_goes_through_risk_and_returns_the_order_from_the_book(start_oms):
    oms = await start_oms()

    update = await place(oms, order(price=100_00))

    assert update.status == t.ORDER_STATUS_OPEN
    assert update.client_order_id == "c-1"
    assert update.exchange_order_id.startswith("VB-")


async def test_place_order_fills_defaults_for_a_manual_order(start_oms):
    oms = await start_oms()
    req = order(price=100_00, client_order_id="")
    req.ClearField("product")
    req.ClearField("strategy_tag")

    update = await place(oms, req)

    assert update.client_order_id.startswith("manual-")
    assert update.request.product == t.PRODUCT_MIS
    assert update.request.strategy_tag == "MANUAL"


def tagged(tag: str) -> t.OrderRequest:
    req = order()
    req.strategy_tag = tag
    return req


@pytest.mark.parametrize(("field", "req"), [
    ("order.quantity", order(quantity=0)),
    ("order.token", order(token=0)),
    ("order.side", order(side=t.SIDE_UNSPECIFIED)),
    ("order.order_type", order(kind=t.ORDER_TYPE_UNSPECIFIED)),
    ("order.price_paise", order(kind=t.ORDER_TYPE_LIMIT, price=0)),
    ("order.trigger_price_paise", order(kind=t.ORDER_TYPE_STOP_MARKET, price=0, trigger=0)),
    # PostgreSQL text holds no NUL: the write-ahead failed, and the order's rejection blamed the database.
    ("order.client_order_id", order(client_order_id="c\x00-1")),
    ("order.strategy_tag", tagged("TE\x00ST")),
])
async def test_place_order_names_the_invalid_field(start_oms, field, req):
    oms = await start_oms()

    with pytest.raises(InvalidInput) as info:
        await place(oms, req)

    assert info.value.field == field


async def test_place_order_refused_by_risk_raises_risk_rejected_with_its_code(start_oms):
    oms = await start_oms(risk=False)
    risk_stand_in(oms.bus, reject_code="MAX_ORDER_QUANTITY")

    with pytest.raises(RiskRejected) as info:
        await place(oms, order())

    assert info.value.reason_code == "MAX_ORDER_QUANTITY"
    assert oms.broker.book == {}


async def test_cancel_order_cancels_an_open_order(start_oms):
    oms = await start_oms()
    placed = await place(oms, order(price=100_00))

    reply = await oms.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=placed.internal_id))

    await oms.bus.drain()
    assert reply.order.status == t.ORDER_STATUS_CANCELLED
    assert oms.statuses("c-1")[-2:] == [t.ORDER_STATUS_CANCEL_PENDING, t.ORDER_STATUS_CANCELLED]
    assert oms.broker.book[placed.exchange_order_id].status == t.ORDER_STATUS_CANCELLED


async def test_cancel_order_of_an_unknown_id_is_not_found(start_oms):
    oms = await start_oms()

    with pytest.raises(NotFound):
        await oms.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id="nope"))


async def test_cancel_order_of_a_traded_order_is_a_failed_precondition(start_oms):
    oms = await start_oms()
    await oms.bus.publish(Topic.TICKS, tick(ltp=100_00, bid=99_95, ask=100_05))
    await until(lambda: oms.broker._last)
    await place(oms, order(kind=t.ORDER_TYPE_MARKET, price=0))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)

    with pytest.raises(OrderStateError) as info:
        await oms.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id="c-1"))

    assert info.value.status == BrokerRejected.status
    assert "already TRADED" in str(info.value)


async def test_get_and_list_orders_read_the_ledger(start_oms):
    oms = await start_oms()
    await place(oms, order(client_order_id="a"))
    await place(oms, order(client_order_id="b"))

    got = await oms.bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="a"))
    listed = await oms.bus.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(open_only=True))

    assert got.order.client_order_id == "a"
    assert [o.client_order_id for o in listed.orders] == ["b", "a"]
    with pytest.raises(NotFound):
        await oms.bus.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="zzz"))


async def test_list_positions_shows_fills_marked_to_the_last_tick(start_oms):
    oms = await start_oms()
    await place(oms, order(price=100_00, quantity=10))
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await oms.bus.publish(Topic.TICKS, tick(ltp=101_00))
    await oms.bus.drain()

    reply = await oms.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())

    (pos,) = reply.positions
    assert (pos.net_quantity, pos.average_price_paise, pos.last_price_paise) == (10, 100_00, 101_00)
    assert reply.unrealised_pnl_paise == 10 * (101_00 - 100_00)
    assert reply.charges_paise > 0
    assert reply.as_of_sequence == oms.of("c-1")[-1].sequence  # the fill's update is in these positions


async def test_list_positions_on_a_later_day_is_that_days_pnl_with_held_quantity_carried_at_the_last_price(
        start_oms):
    """An OMS that runs across midnight: yesterday's realised P&L and charges are not today's (risk restarted
    today counts ListPositions against today's loss limit), and a quantity held overnight is valued from
    yesterday's last price, as the broker's day P&L is."""
    oms = await start_oms()
    await place(oms, order(price=99_00, quantity=10))  # a resting limit fills at its limit: bought at 99
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await place(oms, order(side=t.SIDE_SELL, price=100_00, quantity=4, client_order_id="c-2"))
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[
        candle(100_00, 101_00, 100_00, 101_00, start_ns=T0 + 2 * MINUTE)]))
    await oms.until_status("c-2", t.ORDER_STATUS_TRADED)
    await oms.bus.publish(Topic.TICKS, tick(ltp=101_00))
    await oms.bus.drain()
    yesterday = await oms.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
    assert yesterday.realised_pnl_paise == 4 * (100_00 - 99_00) and yesterday.charges_paise > 0

    oms.clock.set(T0 + 12 * 3600 * NS)  # the next IST morning
    today = await oms.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())

    (pos,) = today.positions
    assert (today.realised_pnl_paise, today.unrealised_pnl_paise, today.charges_paise) == (0, 0, 0)
    assert (pos.net_quantity, pos.average_price_paise, pos.realised_pnl_paise) == (6, 101_00, 0)
    await oms.bus.publish(Topic.TICKS, tick(ltp=102_00, ts_ns=T0 + 12 * 3600 * NS))
    await oms.bus.drain()
    later = await oms.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
    assert later.unrealised_pnl_paise == 6 * (102_00 - 101_00)


async def test_square_off_sends_a_closing_market_order_tagged_squareoff(start_oms):
    oms = await start_oms()
    await place(oms, order(price=100_00, quantity=10))
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await oms.bus.publish(Topic.TICKS, tick(ltp=101_00, bid=100_95, ask=101_05))
    await until(lambda: oms.broker._last)

    reply = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest(symbol="reliance-eq"))

    (sq,) = reply.orders
    assert sq.request.strategy_tag == "SQUAREOFF"
    assert (sq.request.side, sq.request.quantity, sq.request.order_type) == (t.SIDE_SELL, 10, t.ORDER_TYPE_MARKET)
    await oms.until_status(sq.client_order_id, t.ORDER_STATUS_TRADED)
    await until(lambda: oms.module.engine.positions.net_quantity(order().token) == 0)


async def long_10_with_freeze(oms, lot: int, freeze: int) -> None:
    """10 RELIANCE-EQ held (filled, a tick marking it), the instrument's lot size and freeze quantity listed."""

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=[market_pb2.Instrument(
            token=order().token, symbol="RELIANCE-EQ", lot_size=lot, freeze_quantity=freeze)])

    oms.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    await long_10(oms)


async def long_10(oms) -> None:
    """10 RELIANCE-EQ held (filled, a tick marking it)."""
    await place(oms, order(price=100_00, quantity=10))
    await oms.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[candle(99_00, 99_50, 98_00, 99_00)]))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await oms.bus.publish(Topic.TICKS, tick(ltp=101_00, bid=100_95, ask=101_05))
    await until(lambda: oms.broker._last)


async def test_square_off_above_the_freeze_quantity_goes_in_parts_of_whole_lots(start_oms):
    """Risk refuses an order over the exchange's freeze quantity: a NIFTY futures position of 2,400 (freeze 1,800)
    could not be squared off from ctl or Telegram, exactly when it was needed."""
    oms = await start_oms()
    await long_10_with_freeze(oms, lot=2, freeze=5)

    reply = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert [o.request.quantity for o in reply.orders] == [4, 4, 2]  # 5 is not a whole number of lots of 2
    assert {o.request.strategy_tag for o in reply.orders} == {"SQUAREOFF"}
    assert len({o.client_order_id for o in reply.orders}) == 3


async def test_a_square_off_the_caller_gives_up_on_is_carried_through(start_oms):
    """Telegram's 10 s or a gRPC deadline cancelled the handler (the caller's task, in the monolith) halfway: the
    orders not yet sent never were, and their positions stayed open."""
    oms = await start_oms()
    await long_10_with_freeze(oms, lot=1, freeze=4)
    placing = oms.broker.place_order

    async def like_a_live_broker(request):
        await asyncio.sleep(0.2)  # a round trip to Kotak
        return await placing(request)

    oms.broker.place_order = like_a_live_broker

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest()), 0.1)

    await until(lambda: oms.module.engine.positions.net_quantity(order().token) == 0, within=5)


async def test_place_order_accepted_by_risk_but_never_in_the_book_is_an_unknown_outcome_naming_the_order(start_oms):
    from services.oms.config import OmsSettings
    from shared.contracts import risk_pb2
    from shared.errors import OutcomeUnknown

    oms = await start_oms(risk=False, settings=OmsSettings(place_order_wait_s=0.05, poll_interval_s=0))

    async def accept_without_publishing(request):
        return risk_pb2.SubmitOrderResponse(decision=t.RiskDecision(accepted=True, order=request.order))

    oms.bus.handle(rpc.SUBMIT_ORDER, accept_without_publishing)

    with pytest.raises(OutcomeUnknown) as info:  # it may still be placed: its decision is on its way
        await place(oms, order())

    assert "GetOrder c-1" in str(info.value) and info.value.client_order_id == "c-1"


async def test_a_cancel_the_broker_refuses_puts_the_order_back_and_reports_why(start_oms):
    from services.oms.charges import ChargeModel
    from services.oms.virtual_broker import VirtualBroker
    from shared.clock import ManualClock

    class RefusesCancel(VirtualBroker):
        async def cancel_order(self, exchange_order_id):
            raise BrokerRejected("order is being filled")

    oms = await start_oms(broker=RefusesCancel(None, ChargeModel.default(), ManualClock(0)))
    placed = await place(oms, order(price=100_00))

    with pytest.raises(BrokerRejected):
        await oms.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=placed.client_order_id))

    now = oms.module.engine.lookup("c-1")
    assert now.status == t.ORDER_STATUS_OPEN
    assert now.reason == "cancel refused: order is being filled"


async def test_a_second_cancel_of_a_cancel_pending_order_returns_it_unchanged(start_oms):
    from services.oms.broker import BrokerAck
    from services.oms.charges import ChargeModel
    from services.oms.virtual_broker import VirtualBroker
    from shared.clock import ManualClock

    class AcksCancelLater(VirtualBroker):
        """A live-broker-like cancel: acknowledged as CANCEL_PENDING, the final state comes as an event."""

        async def cancel_order(self, exchange_order_id):
            return BrokerAck(exchange_order_id, t.ORDER_STATUS_CANCEL_PENDING)

    oms = await start_oms(broker=AcksCancelLater(None, ChargeModel.default(), ManualClock(0)))
    placed = await place(oms, order(price=100_00))
    cancel = oms_pb2.CancelOrderRequest(order_id=placed.client_order_id)
    first = await oms.bus.call(rpc.CANCEL_ORDER, cancel)

    second = await oms.bus.call(rpc.CANCEL_ORDER, cancel)

    assert first.order.status == t.ORDER_STATUS_CANCEL_PENDING
    assert second.order == first.order


async def test_square_off_asked_twice_cancels_a_resting_exit_and_closes_the_position_once(start_oms):
    """A resting exit (a target far away) does not close the position now: the square-off cancels it and closes
    at the market; asked again, it finds the position closed and sends nothing."""
    oms = await start_oms()
    await oms.bus.publish(Topic.TICKS, tick(ltp=100_00, bid=99_95, ask=100_05))
    await until(lambda: oms.broker._last)
    await place(oms, order(kind=t.ORDER_TYPE_MARKET, price=0, quantity=100, client_order_id="entry"))
    await until(lambda: oms.module.engine.positions.net_quantity(order().token) == 100)
    await place(oms, order(side=t.SIDE_SELL, price=200_00, quantity=100, client_order_id="exit"))

    first = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())
    second = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert ([(u.request.side, u.request.quantity) for u in first.orders], list(second.orders)) == (
        [(t.SIDE_SELL, 100)], [])
    assert oms.module.engine.lookup("exit").status == t.ORDER_STATUS_CANCELLED


async def test_place_order_with_a_client_order_id_already_used_is_refused_as_a_duplicate(start_oms):
    oms = await start_oms()
    first = await place(oms, order(price=100_00))

    with pytest.raises(RiskRejected) as info:
        await place(oms, order(price=101_00))

    assert info.value.reason_code == "DUPLICATE_ORDER" and first.internal_id in str(info.value)
    assert len(oms.broker.book) == 1


async def test_a_client_order_id_used_days_ago_is_refused_before_risk_would_take_it_for_new(start_oms):
    """Risk remembers the ids of recent orders only: one reused days later was accepted there, ignored by the OMS
    as a duplicate, and counted by risk as an open order for good."""
    ledger = MemoryLedger()
    old = t.OrderUpdate(internal_id="old-internal", client_order_id="my-exit", status=t.ORDER_STATUS_PENDING_NEW,
                        request=order(client_order_id="my-exit"), ts_ns=T0 - 2 * 86_400 * NS)
    await ledger.insert_new(old, {})
    old.status = t.ORDER_STATUS_TRADED
    await ledger.record(old, {})
    oms = await start_oms(ledger=ledger)

    with pytest.raises(RiskRejected, match=r"old-internal \(TRADED\)") as info:
        await place(oms, order(client_order_id="my-exit"))

    assert info.value.reason_code == "DUPLICATE_ORDER" and oms.broker.book == {}


async def test_a_square_off_does_not_wait_on_a_slow_instrument_list(start_oms):
    """Split mode asks ingestion's process for the freeze quantities (a 10 s deadline): a hung one held every exit."""
    oms = await start_oms()
    await long_10(oms)

    async def hung(request):
        await asyncio.sleep(30)

    oms.bus.handle(rpc.LIST_INSTRUMENTS, hung)

    reply = await asyncio.wait_for(oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest()), 2)

    assert [o.request.quantity for o in reply.orders] == [10]
