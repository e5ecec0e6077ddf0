"""A daily-loss HALT squares off every MIS position; a trader who answers its alert with /kill (the stricter button)
must not turn that square-off off. It did: the loss square-off ran only while HALTED without the kill switch, so a
square-off order the broker refused once (a circuit, an RMS rule) was never retried, the strategies' stops were
refused under the switch, and the losing MIS position ran to 15:15 with no protection."""

import asyncio
from collections.abc import AsyncIterator

import pytest

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
from shared.contracts import ingestion_pb2, market_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until
from tests.risk.factories import DAY, RELIANCE

PX = 1290_00


class RefusesFirstSquareOff(VirtualBroker):
    refused = 0

    async def place_order(self, req):
        if req.strategy_tag == "SQUAREOFF" and not self.refused:
            self.refused += 1
            raise BrokerRejected("RMS:Rule: price outside the circuit")
        return await super().place_order(req)


async def tick(bus, clock, px):
    clock.advance(1)
    await bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
        token=RELIANCE, exchange_segment="nse_cm", ts_ns=clock.now_ns(), ltp_paise=px, bid_paise=px - 5,
        ask_paise=px + 5)]))
    await asyncio.sleep(0.01)


@pytest.fixture
async def world() -> AsyncIterator[tuple]:
    bus, clock = Bus(), ManualClock(ist_ns(DAY, 11, 0))

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments(["RELIANCE-EQ"]))

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    broker = RefusesFirstSquareOff(None, ChargeModel.default(), clock)
    oms = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2,
                                     paper_capital=10**9), broker, MemoryLedger(), clock)
    risk = RiskModule(bus, load(RiskSettings, {}, loss_check_interval_ms=0, timer_interval_ms=1,
                                daily_loss_reducing=200, daily_loss_halt=500, square_off_retry_s=1), clock)
    tasks = [asyncio.create_task(bus.run())]
    try:
        await oms.start()
        tasks.append(asyncio.create_task(oms.run()))
        await risk.start()  # its timer is driven by hand (tick_timer)
        await tick(bus, clock, PX)
        await until(lambda: RELIANCE in risk.engine.last_prices)
        yield bus, clock, oms, risk, broker
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def loss_halted_with_a_refused_square_off(bus, clock, oms, risk, broker):
    await risk.submit_order(risk_pb2.SubmitOrderRequest(order=t.OrderRequest(
        client_order_id="entry", token=RELIANCE, exchange_segment="nse_cm", quantity=100, side=t.SIDE_BUY,
        order_type=t.ORDER_TYPE_MARKET, product=t.PRODUCT_MIS, validity=t.VALIDITY_DAY)))
    for _ in range(100):
        if risk.engine.positions.net_quantity(RELIANCE) == 100:
            break
        await tick(bus, clock, PX)
    await tick(bus, clock, 1280_00)  # Rs 1,000 down: past daily_loss_halt Rs 500
    assert risk.engine.state == risk_pb2.TRADING_STATE_HALTED
    await risk.tick_timer()  # the loss square-off: refused once by the broker, retried after square_off_retry_s
    await until(lambda: broker.refused == 1 and not risk.engine.open_orders)


async def advance_and_turn(bus, clock, risk, seconds=5):
    for _ in range(seconds * 2):
        clock.advance(0.5)
        await tick(bus, clock, 1280_00)
        await risk.tick_timer()
        await asyncio.sleep(0.02)


async def test_control_without_the_kill_switch_the_loss_square_off_is_retried(world):
    bus, clock, oms, risk, broker = world
    await loss_halted_with_a_refused_square_off(bus, clock, oms, risk, broker)
    await advance_and_turn(bus, clock, risk)
    assert oms.engine.positions.net_quantity(RELIANCE) == 0


async def test_engaging_the_kill_switch_during_a_loss_halt_does_not_stop_its_square_off(world):
    bus, clock, oms, risk, broker = world
    await loss_halted_with_a_refused_square_off(bus, clock, oms, risk, broker)
    await bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="HALTED on Telegram: stop "
                                                                                          "everything",
                                                                      cancel_open_orders=True))
    await advance_and_turn(bus, clock, risk)
    assert oms.engine.positions.net_quantity(RELIANCE) == 0  # the loss square-off went on under the switch
