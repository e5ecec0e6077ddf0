"""RiskModule under concurrency: what a kill switch, a limit change or a release does to work already in flight.

A real Bus and RiskModule. Back-pressure comes from a real bounded subscriber queue the test drains by hand; the
OMS's CancelOrder is a stand-in only where the test must hold a cancel open (a broker call in flight).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.orders import manual_order
from shared import rpc
from shared.bus import Bus, Subscription, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput, NeoPulseError, RiskRejected, TradingHalted
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.risk.factories import DAY, fill, order


async def _no_consumer(msg: Any) -> None:
    raise AssertionError("this consumer is not running in this test; the test drains its queue by hand")


async def _list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
    return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())


async def _started(bus: Bus, clock: ManualClock, **settings: Any) -> RiskModule:
    bus.handle(rpc.LIST_INSTRUMENTS, _list_instruments)
    module = RiskModule(bus, load(RiskSettings, {}, **settings), clock)
    await module.start()
    return module


def submit(cid: str, **fields: Any) -> risk_pb2.SubmitOrderRequest:
    return risk_pb2.SubmitOrderRequest(order=order(client_order_id=cid, **fields))


def kill(engaged: bool, cancel: bool = False) -> risk_pb2.SetKillSwitchRequest:
    return risk_pb2.SetKillSwitchRequest(engaged=engaged, reason="review", cancel_open_orders=cancel)


async def _take(sub: Subscription, n: int) -> list[Any]:
    return [await sub.queue.get() for _ in range(n)]


async def _behind_a_full_orders_queue(clock: ManualClock) -> tuple[Bus, RiskModule, Subscription,
                                                                    asyncio.Task[Any], asyncio.Task[Any]]:
    """"first" fills ORDERS, "second" is decided and waits for room, "third" waits behind it to be published."""
    bus = Bus()
    slow = bus.subscribe(Topic.ORDERS, "slow", _no_consumer, maxsize=1)
    module = await _started(bus, clock)
    await bus.call(rpc.SUBMIT_ORDER, submit("first"))
    second = asyncio.create_task(bus.call(rpc.SUBMIT_ORDER, submit("second", quantity=5)))
    await eventually(lambda: "second" in module.engine.open_orders)
    third = asyncio.create_task(bus.call(rpc.SUBMIT_ORDER, submit("third", quantity=5)))
    for _ in range(3):  # let "third" run up to the publish it waits for (no event marks that point)
        await asyncio.sleep(0)
    return bus, module, slow, second, third


async def test_an_order_not_yet_published_when_the_kill_switch_engages_goes_out_as_a_halt_rejection(clock):
    bus, module, slow, second, third = await _behind_a_full_orders_queue(clock)

    await bus.call(rpc.SET_KILL_SWITCH, kill(True))
    got = await asyncio.wait_for(_take(slow, 3), 5)
    results = await asyncio.gather(second, third, return_exceptions=True)

    assert [(d.order.client_order_id, d.accepted, d.reason_code) for d in got] == [
        ("first", True, ""), ("second", True, ""), ("third", False, "TRADING_HALTED")]
    assert isinstance(results[1], TradingHalted) and "third" not in module.engine.open_orders


async def test_an_order_not_yet_published_when_limits_are_lowered_is_checked_against_the_new_limits(clock):
    bus, module, slow, second, third = await _behind_a_full_orders_queue(clock)
    limits = module.engine.limits.to_proto()
    limits.max_order_quantity = 3

    await bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits))
    got = await asyncio.wait_for(_take(slow, 3), 5)
    results = await asyncio.gather(second, third, return_exceptions=True)

    assert [(d.order.client_order_id, d.reason_code) for d in got] == [
        ("first", ""), ("second", ""), ("third", "MAX_ORDER_QUANTITY")]
    assert isinstance(results[1], RiskRejected)


async def test_state_notifications_keep_the_order_of_the_state_changes_when_their_queue_is_full(clock):
    """The operator's last word must be the real state: HALTED, not an older ACTIVE arriving after it."""
    bus = Bus()
    notes = bus.subscribe(Topic.NOTIFICATIONS, "slow", _no_consumer, maxsize=1)
    module = await _started(bus, clock)
    await bus.call(rpc.SET_KILL_SWITCH, kill(True))  # fills the queue
    release = asyncio.create_task(bus.call(rpc.SET_KILL_SWITCH, kill(False)))
    await eventually(lambda: module.engine.state == risk_pb2.TRADING_STATE_ACTIVE)  # notifying, waits for room
    got = [notes.queue.get_nowait()]  # room for one: the release's notification is woken but has not run yet
    drainer = asyncio.create_task(_take(notes, 2))

    await bus.call(rpc.SET_KILL_SWITCH, kill(True))  # engaged again from this task while the release still waits
    got += await asyncio.wait_for(drainer, 5)
    await release

    assert [n.fields["state"] for n in got] == ["HALTED", "ACTIVE", "HALTED"]
    assert module.engine.state == risk_pb2.TRADING_STATE_HALTED


async def test_the_kill_switch_cancels_every_open_order_even_when_its_caller_gives_up(clock):
    """In the monolith a request handler runs in the caller's task: a caller's timeout (Telegram's 10 s) used to cut
    the cancel round halfway, leaving most orders working with the switch engaged."""
    bus, cancelled = Bus(), []

    async def slow_cancel(request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        await asyncio.sleep(0.02)  # a broker round trip
        cancelled.append(request.order_id)
        return oms_pb2.CancelOrderResponse()

    bus.handle(rpc.CANCEL_ORDER, slow_cancel)
    module = await _started(bus, clock)
    for cid in ("a", "b", "c", "d", "e"):
        await bus.call(rpc.SUBMIT_ORDER, submit(cid))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.03):
            await bus.call(rpc.SET_KILL_SWITCH, kill(True, cancel=True))

    assert module.engine.state == risk_pb2.TRADING_STATE_HALTED
    await eventually(lambda: sorted(cancelled) == ["a", "b", "c", "d", "e"])
    assert await bus.drain()


def test_a_manual_orders_symbol_and_segment_must_be_its_tokens(clock):
    module = RiskModule(Bus(), load(RiskSettings, {}), clock)
    module.instruments.add(next(i for i in nse_instruments() if i.symbol == "RELIANCE-EQ"))
    reliance = module.instruments.by_symbol("RELIANCE-EQ")

    for field, value in (("symbol", "NIFTY26JANFUT"), ("exchange_segment", "mcx_fo")):
        with pytest.raises(InvalidInput, match=field) as err:
            manual_order(order(token=reliance.token, **{field: value}), module.instruments, module.sequencer)
        assert "RELIANCE-EQ" in str(err.value)

    out = manual_order(order(token=reliance.token, symbol="reliance-eq", exchange_segment=""), module.instruments,
                       module.sequencer)
    assert (out.symbol, out.exchange_segment) == ("RELIANCE-EQ", "nse_cm")


class SlowOms:
    """CancelOrder as the OMS answers it: refused while an order is not at the broker yet ("unacked"), then a
    broker call that takes until the test lets it finish."""

    def __init__(self, bus: Bus) -> None:
        self.acked: set[str] = set()
        self.cancelled: list[str] = []
        self.in_flight: list[str] = []
        self.finish = asyncio.Event()
        bus.handle(rpc.CANCEL_ORDER, self.cancel)

    async def cancel(self, request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        if request.order_id not in self.acked:
            raise NeoPulseError(f"order {request.order_id} is SUBMITTED and cannot be cancelled yet; retry")
        self.in_flight.append(request.order_id)
        await self.finish.wait()
        self.cancelled.append(request.order_id)
        return oms_pb2.CancelOrderResponse()


@pytest.fixture
async def running(clock: ManualClock) -> AsyncIterator[tuple[Bus, RiskModule, SlowOms]]:
    bus = Bus()
    oms = SlowOms(bus)
    module = await _started(bus, clock, cancel_retry_backoff_ms=5, cancel_retry_window_ms=3000)
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(module.run())]
    yield bus, module, oms
    oms.finish.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_cancel_retries_stop_at_once_when_the_kill_switch_is_released_mid_round(running):
    bus, module, oms = running
    for cid in ("a", "b"):
        await bus.call(rpc.SUBMIT_ORDER, submit(cid))
    await bus.call(rpc.SET_KILL_SWITCH, kill(True, cancel=True))  # both refused: not at the broker yet
    oms.acked |= {"a", "b"}
    await eventually(lambda: oms.in_flight == ["a"])  # a retry round is cancelling "a"

    await bus.call(rpc.SET_KILL_SWITCH, kill(False))
    oms.finish.set()
    await eventually(lambda: "a" in oms.cancelled)
    await asyncio.sleep(0.05)  # a round still running would ask for "b" right after "a" (no event marks its end)

    assert oms.in_flight == ["a"]  # "b" was left working, as the release asked
    assert "b" in module.engine.open_orders


async def test_cancel_retries_of_a_released_kill_switch_do_not_resume_when_it_is_engaged_again(running):
    bus, module, oms = running
    await bus.call(rpc.SUBMIT_ORDER, submit("a"))
    await bus.call(rpc.SET_KILL_SWITCH, kill(True, cancel=True))  # refused: the retries start
    await bus.call(rpc.SET_KILL_SWITCH, kill(False))
    await bus.call(rpc.SET_KILL_SWITCH, kill(True, cancel=False))  # halt only: working orders are kept
    oms.acked.add("a")
    oms.finish.set()

    await asyncio.sleep(0.1)  # several retry intervals (5 ms doubling): a retry still running would cancel "a"

    assert oms.in_flight == [] and "a" in module.engine.open_orders



async def test_the_kill_switch_leaves_a_working_square_off_order_to_close_its_position(clock):
    """HALTED admits square-off orders because closing lowers the risk; cancelling one would leave the intraday
    position open past square-off time until the next attempt (square_off_retry_s later)."""
    bus, cancels, decisions = Bus(), [], []

    async def cancel(request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        cancels.append(request.order_id)
        return oms_pb2.CancelOrderResponse()

    async def on_order(decision: trading_pb2.RiskDecision) -> None:
        decisions.append(decision)

    bus.handle(rpc.CANCEL_ORDER, cancel)
    bus.subscribe(Topic.ORDERS, "test", on_order)
    module = await _started(bus, clock, timer_interval_ms=2)
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(module.run())]
    try:
        module.engine.on_order_update(fill(trading_pb2.SIDE_BUY, 10, 1290_00))
        clock.set(ist_ns(DAY, 15, 15))
        await eventually(lambda: decisions)
        [square_off] = decisions

        await bus.call(rpc.SET_KILL_SWITCH, kill(True, cancel=True))
        await bus.drain()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert square_off.accepted and square_off.order.strategy_tag == "SQUAREOFF"
    assert cancels == [] and square_off.order.client_order_id in module.engine.open_orders


async def test_a_manual_order_decided_before_its_caller_gives_up_is_still_published(clock):
    """A gRPC deadline cancels SubmitOrder while its decision waits for room on ORDERS: dropped there, the order
    would count as open here all day (open-order and position limits) and never reach the OMS."""
    bus = Bus()
    slow = bus.subscribe(Topic.ORDERS, "slow", _no_consumer, maxsize=1)
    module = await _started(bus, clock)
    await bus.call(rpc.SUBMIT_ORDER, submit("first"))
    caller = asyncio.create_task(bus.call(rpc.SUBMIT_ORDER, submit("second")))
    await eventually(lambda: "second" in module.engine.open_orders)

    caller.cancel()
    got = await asyncio.wait_for(_take(slow, 2), 5)

    assert [d.order.client_order_id for d in got] == ["first", "second"]
    assert caller.cancelled()


async def test_a_daily_loss_halt_cancels_the_resting_entries_through_the_oms(clock):
    bus, cancels = Bus(), []

    async def cancel(request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        cancels.append(request.order_id)
        return oms_pb2.CancelOrderResponse()

    bus.handle(rpc.CANCEL_ORDER, cancel)
    module = await _started(bus, clock, timer_interval_ms=2, daily_loss_reducing=1_000, daily_loss_halt=2_000)
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(module.run())]
    try:
        module.engine.on_order_update(fill(trading_pb2.SIDE_BUY, 100, 1290_00))
        await bus.call(rpc.SUBMIT_ORDER, submit("entry", quantity=10, price_paise=1240_00))
        await bus.call(rpc.SUBMIT_ORDER, submit("exit", side=trading_pb2.SIDE_SELL, quantity=100, price_paise=1300_00))
        await asyncio.sleep(0.02)
        assert cancels == []

        module.engine.last_prices[2885] = 1265_00  # -₹2,500 at the next mark (the timer's)
        await eventually(lambda: module.engine.state == risk_pb2.TRADING_STATE_HALTED)

        # The MIS position is squared off at once: its resting exit goes too, for a market order.
        await eventually(lambda: sorted(cancels) == ["entry", "exit"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
