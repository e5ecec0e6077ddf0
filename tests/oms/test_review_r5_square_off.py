"""The operator's SquareOff (/squareoff, `ctl squareoff`) cancels a position's working orders, waits for them to
end, then closes the whole net at market, as risk's own square-off does: a resting stop used to count as closing
the position, so nothing was sent ("Nothing to square off") and risk would have refused the order REDUCE_ONLY."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.oms import service
from services.oms.broker import BrokerAck
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, OrderStateError
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until
from tests.oms.conftest import accepted
from tests.oms.helpers import order
from tests.risk.factories import DAY, RELIANCE

PX = 1290_00


@dataclass
class World:
    """Real risk, OMS and VirtualBroker on one bus at 11:00 IST, RELIANCE-EQ trading at Rs 1,290."""

    bus: Bus
    clock: ManualClock
    oms: OmsModule
    risk: RiskModule

    async def tick(self) -> None:
        self.clock.advance(1)
        await self.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
            token=RELIANCE, exchange_segment="nse_cm", ts_ns=self.clock.now_ns(), ltp_paise=PX, bid_paise=PX - 5,
            ask_paise=PX + 5)]))

    async def submit(self, client_order_id: str, side: int, kind: int, price: int = 0, trigger: int = 0) -> None:
        """100 RELIANCE-EQ MIS through risk (accepted: the OMS places it)."""
        await self.risk.submit_order(risk_pb2.SubmitOrderRequest(order=t.OrderRequest(
            client_order_id=client_order_id, token=RELIANCE, exchange_segment="nse_cm", quantity=100, side=side,
            order_type=kind, price_paise=price, trigger_price_paise=trigger, product=t.PRODUCT_MIS,
            validity=t.VALIDITY_DAY)))
        await until(lambda: client_order_id in self.risk.engine.open_orders
                    or self.oms.engine.lookup(client_order_id) is not None)

    async def long_100_with_its_stop(self) -> None:
        """Long 100 MIS (filled), its protective SELL stop resting at Rs 1,240, far below the market."""
        await self.submit("entry", t.SIDE_BUY, t.ORDER_TYPE_MARKET)
        await self.ticks_until(lambda: self.risk.engine.positions.net_quantity(RELIANCE) == 100)
        await self.submit("stop", t.SIDE_SELL, t.ORDER_TYPE_STOP_MARKET, trigger=1240_00)
        await until(lambda: self.status("stop") == t.ORDER_STATUS_TRIGGER_PENDING)

    async def ticks_until(self, done) -> None:
        for _ in range(200):
            if done():
                return
            await self.tick()
            await asyncio.sleep(0.01)
        raise AssertionError("not done within 200 ticks")

    def status(self, client_order_id: str) -> int:
        u = self.oms.engine.lookup(client_order_id)
        return u.status if u is not None else t.ORDER_STATUS_UNSPECIFIED


@pytest.fixture
async def world() -> AsyncIterator[World]:
    bus, clock = Bus(), ManualClock(ist_ns(DAY, 11, 0))

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments(["RELIANCE-EQ"]))

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    oms = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2,
                                     paper_capital=10**9), VirtualBroker(None, ChargeModel.default(), clock),
                    MemoryLedger(), clock)
    risk = RiskModule(bus, load(RiskSettings, {}, loss_check_interval_ms=0, timer_interval_ms=1), clock)
    tasks = [asyncio.create_task(bus.run())]
    try:
        await oms.start()
        tasks.append(asyncio.create_task(oms.run()))
        await risk.start()
        w = World(bus, clock, oms, risk)
        await w.tick()
        await until(lambda: RELIANCE in risk.engine.last_prices)
        yield w
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_square_off_cancels_a_resting_stop_and_closes_the_whole_position(world):
    await world.long_100_with_its_stop()

    reply = await world.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert [o.request.quantity for o in reply.orders] == [100]
    assert world.status("stop") == t.ORDER_STATUS_CANCELLED
    await world.ticks_until(lambda: world.oms.engine.positions.net_quantity(RELIANCE) == 0)


async def test_square_off_cancels_a_resting_entry_on_the_other_side_too(world):
    """An entry left resting would open the position again once it is closed."""
    await world.long_100_with_its_stop()
    await world.submit("add", t.SIDE_BUY, t.ORDER_TYPE_LIMIT, price=1250_00)
    await until(lambda: world.status("add") == t.ORDER_STATUS_OPEN)

    await world.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest(symbol="RELIANCE-EQ"))

    assert world.status("add") == t.ORDER_STATUS_CANCELLED


async def test_square_off_asked_twice_at_once_closes_the_position_once(world):
    await world.long_100_with_its_stop()

    replies = await asyncio.gather(*(world.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest()) for _ in range(2)))

    assert sorted(len(r.orders) for r in replies) == [0, 1]
    assert sum(o.request.quantity for r in replies for o in r.orders) == 100


async def long_100_with_exit(oms, exit_quantity: int) -> None:
    """100 RELIANCE-EQ held (the fixture's risk stand-in), a SELL limit for `exit_quantity` resting at
    Rs 200, far above the market."""
    await oms.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=order().token, exchange_segment="nse_cm", ts_ns=oms.clock.now_ns(), ltp_paise=100_00,
        bid_paise=99_95, ask_paise=100_05)]))
    await until(lambda: oms.broker._last)
    await oms.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=order(
        kind=t.ORDER_TYPE_MARKET, price=0, quantity=100, client_order_id="entry")))
    await until(lambda: oms.module.engine.positions.net_quantity(order().token) == 100)
    await oms.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=order(
        side=t.SIDE_SELL, price=200_00, quantity=exit_quantity, client_order_id="exit")))


async def test_a_resting_exit_for_part_of_the_position_is_cancelled_and_the_whole_net_sent(start_oms):
    oms = await start_oms()
    await long_100_with_exit(oms, exit_quantity=60)

    reply = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest(symbol="RELIANCE-EQ"))

    assert [(o.request.side, o.request.quantity) for o in reply.orders] == [(t.SIDE_SELL, 100)]
    assert oms.module.engine.lookup("exit").status == t.ORDER_STATUS_CANCELLED


class RefusesCancel(VirtualBroker):
    async def cancel_order(self, exchange_order_id):
        raise BrokerRejected("order is being filled")


async def test_a_position_whose_exit_the_broker_will_not_cancel_is_named_as_not_squared_off(start_oms):
    oms = await start_oms(broker=RefusesCancel(None, ChargeModel.default(), ManualClock(0)))
    await long_100_with_exit(oms, exit_quantity=100)

    with pytest.raises(OrderStateError) as info:
        await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert "NOT squared off: RELIANCE-EQ MIS (cancel of order exit refused: order is being filled)" in str(info.value)
    assert [u for u in oms.updates if u.request.strategy_tag == "SQUAREOFF"] == []


class NeverFinishesCancel(VirtualBroker):
    """A live-broker-like cancel acknowledged as CANCEL_PENDING, whose final state never comes."""

    async def cancel_order(self, exchange_order_id):
        return BrokerAck(exchange_order_id, t.ORDER_STATUS_CANCEL_PENDING)


async def test_a_cancel_not_confirmed_in_time_names_the_position_and_sends_nothing_for_it(start_oms, monkeypatch):
    """A market order beside a cancel still pending could, if the resting exit fills, close more than is held."""
    monkeypatch.setattr(service, "SQUARE_OFF_WAIT_S", 0.3)
    oms = await start_oms(broker=NeverFinishesCancel(None, ChargeModel.default(), ManualClock(0)))
    await long_100_with_exit(oms, exit_quantity=100)

    with pytest.raises(OrderStateError) as info:
        await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert "order exit still CANCEL_PENDING: cancel not confirmed within 0.3 s" in str(info.value)
    assert [u for u in oms.updates if u.request.strategy_tag == "SQUAREOFF"] == []


async def test_a_square_off_refused_reduce_only_while_risk_catches_up_is_asked_again(start_oms):
    """Risk learns of the cancels from ORDER_UPDATES, after the OMS's book (in split mode, over a stream): until it
    has applied them it counts the cancelled exit as closing and refuses the market order REDUCE_ONLY."""
    oms = await start_oms(risk=False)
    refusals: list[risk_pb2.SubmitOrderResponse] = []

    async def lagging_risk(request):
        if refusals:
            return refusals.pop()
        decision = accepted(request.order)
        await oms.bus.publish(Topic.ORDERS, decision)
        return risk_pb2.SubmitOrderResponse(decision=decision)

    oms.bus.handle(rpc.SUBMIT_ORDER, lagging_risk)
    await long_100_with_exit(oms, exit_quantity=100)
    refusals.append(risk_pb2.SubmitOrderResponse(decision=t.RiskDecision(
        accepted=False, reason_code="REDUCE_ONLY", reason="SQUAREOFF orders are reduce-only")))

    reply = await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert [o.request.quantity for o in reply.orders] == [100]


class RefusesSquareOffs(VirtualBroker):
    """The broker's RMS refuses the square-off's market order (a freeze, a circuit limit, an RMS rule)."""

    async def place_order(self, req):
        if req.strategy_tag == "SQUAREOFF":
            raise BrokerRejected("RMS:Rule: Order rejected by exchange")
        return await super().place_order(req)


async def test_a_square_off_the_broker_refuses_names_the_position_as_not_squared_off(start_oms):
    oms = await start_oms(broker=RefusesSquareOffs(None, ChargeModel.default(), ManualClock(0)))
    await long_100_with_exit(oms, exit_quantity=100)

    with pytest.raises(OrderStateError, match=r"NOT squared off: RELIANCE-EQ MIS .*refused: .*RMS:Rule"):
        await oms.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())


async def test_a_square_off_under_the_kill_switch_waits_out_risks_lag_on_the_cancels_as_it_does_when_active(world):
    """Risk sees the cancel of the position's stop a little after the OMS (a loaded monolith, split mode's stream):
    the market order is refused REDUCE_ONLY and asked again. Under the kill switch, HALTED's refusal came first and
    the square-off gave up: \"NOT squared off\", when a trader squares off most."""
    from shared.contracts import risk_pb2

    await world.long_100_with_its_stop()
    await world.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="trader"))
    engine, loop = world.risk.engine, asyncio.get_running_loop()
    real = engine.on_order_update
    engine.on_order_update = lambda u: loop.call_later(0.15, real, u)  # risk's view of order updates 150 ms late

    reply = await world.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest())

    assert [o.request.quantity for o in reply.orders] == [100]
