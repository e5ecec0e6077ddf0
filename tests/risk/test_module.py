"""RiskModule end to end on a real Bus: signals in, decisions on ORDERS, requests, notifications, square-off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.risk.orders import order_from_signal, signal_client_order_id, square_off_orders
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, ops_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput, NeoPulseError, NotFound, RiskRejected, TradingHalted
from shared.marketdata import nse_instruments
from shared.positions import PositionState
from tests.helpers import eventually as wait_for
from tests.risk.factories import DAY, RELIANCE, fill, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


@dataclass
class Running:
    bus: Bus
    module: RiskModule
    clock: ManualClock
    orders: list[trading_pb2.RiskDecision] = field(default_factory=list)
    notes: list[ops_pb2.Notification] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


@pytest.fixture
async def risk(clock: ManualClock) -> AsyncIterator[Running]:
    bus = Bus()

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    settings = load(RiskSettings, {}, loss_check_interval_ms=0, timer_interval_ms=2,
                    daily_loss_reducing=1000, daily_loss_halt=2000, cancel_retry_backoff_ms=5,
                    cancel_retry_window_ms=300)
    running = Running(bus, RiskModule(bus, settings, clock), clock)

    async def on_order(decision: trading_pb2.RiskDecision) -> None:
        running.orders.append(decision)

    async def on_note(note: ops_pb2.Notification) -> None:
        running.notes.append(note)

    async def cancel(request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        running.cancels.append(request.order_id)
        if request.order_id == "refused":
            raise NotFound("order refused is unknown")
        if request.order_id.startswith("unacked") and running.cancels.count(request.order_id) <= 2:
            raise NeoPulseError(f"order {request.order_id} is SUBMITTED and cannot be cancelled yet; "
                                "retry in a moment")
        running.cancelled.append(request.order_id)
        return oms_pb2.CancelOrderResponse()

    bus.subscribe(Topic.ORDERS, "test", on_order)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    bus.handle(rpc.CANCEL_ORDER, cancel)
    await running.module.start()
    tasks = [asyncio.create_task(bus.run()), asyncio.create_task(running.module.run())]
    yield running
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def signal(**fields: Any) -> trading_pb2.Signal:
    base: dict[str, Any] = dict(
        signal_id="momentum-2885-1", strategy="MOMENTUM_RSI", token=RELIANCE, exchange_segment="nse_cm",
        symbol="RELIANCE-EQ", side=BUY, quantity=5, order_type=trading_pb2.ORDER_TYPE_LIMIT,
        limit_price_paise=1290_00, product=trading_pb2.PRODUCT_MIS, tick_recv_ns=123)
    base.update(fields)
    return trading_pb2.Signal(**base)


async def test_a_signal_becomes_an_accepted_decision_on_orders(risk):
    await risk.bus.publish(Topic.SIGNALS, signal())
    await wait_for(lambda: risk.orders)

    [decision] = risk.orders
    assert decision.accepted and decision.sequence > 0 and decision.strategy == "MOMENTUM_RSI"
    got = decision.order
    assert (got.client_order_id, got.strategy_tag, got.signal_id, got.tick_recv_ns, got.quantity, got.price_paise) \
        == (signal_client_order_id("momentum-2885-1"), "MOMENTUM_RSI", "momentum-2885-1", 123, 5, 1290_00)


def test_an_order_says_why_it_was_placed_a_signals_reason_cut_to_the_limit_and_a_square_offs():
    assert order_from_signal(signal(reason="stop loss 1%: tick ₹98.90")).reason == "stop loss 1%: tick ₹98.90"
    assert order_from_signal(signal(reason="x" * 300)).reason == "x" * 256  # never refused for its length
    position = PositionState(token=RELIANCE, product=trading_pb2.PRODUCT_MIS, net_quantity=10)
    (order,) = square_off_orders(position, None, 10, 100, DAY)
    assert order.reason == "intraday square-off"


async def test_a_signal_off_the_tick_size_becomes_a_rejection_on_orders(risk):
    await risk.bus.publish(Topic.SIGNALS, signal(limit_price_paise=1290_02))
    await wait_for(lambda: risk.orders)

    assert (risk.orders[0].accepted, risk.orders[0].reason_code) == (False, "TICK_SIZE")


async def test_a_replayed_signal_is_not_accepted_twice(risk):
    await risk.bus.publish(Topic.SIGNALS, signal())
    await risk.bus.publish(Topic.SIGNALS, signal())
    await wait_for(lambda: len(risk.orders) == 2)

    assert [(d.accepted, d.reason_code) for d in risk.orders] == [(True, ""), (False, "DUPLICATE_ORDER")]


async def test_a_burst_of_signals_is_decided_in_order_and_one_that_fails_loses_none_of_the_others(risk, monkeypatch):
    from services.risk import module as risk_module

    decide = risk.module.engine.decide_signal

    def failing(s: trading_pb2.Signal) -> trading_pb2.RiskDecision:
        if s.signal_id == "bug":
            raise RuntimeError("a bug in a check")
        return decide(s)

    monkeypatch.setattr(risk.module.engine, "decide_signal", failing)
    errors = risk_module.SIGNAL_ERRORS._value.get()
    for sid, price in (("first", 1290_00), ("bug", 1290_00), ("second", 1290_02), ("third", 1289_00)):
        await risk.bus.publish(Topic.SIGNALS, signal(signal_id=sid, limit_price_paise=price))  # queued together
    await wait_for(lambda: len(risk.orders) == 3)
    await asyncio.sleep(0.01)

    assert [(d.signal_id, d.accepted, d.reason_code) for d in risk.orders] == [
        ("first", True, ""), ("second", False, "TICK_SIZE"), ("third", True, "")]
    assert [d.sequence for d in risk.orders] == sorted(d.sequence for d in risk.orders)
    assert risk_module.SIGNAL_ERRORS._value.get() == errors + 1


@pytest.mark.parametrize(("change", "bad_field"), [
    ({"quantity": 0}, "order.quantity"),
    ({"side": trading_pb2.SIDE_UNSPECIFIED}, "order.side"),
    ({"order_type": trading_pb2.ORDER_TYPE_UNSPECIFIED}, "order.order_type"),
    ({"price_paise": 0}, "order.price_paise"),
    ({"token": 424242}, "order.token"),
])
async def test_a_malformed_manual_order_is_invalid_input_naming_the_field(risk, change, bad_field):
    with pytest.raises(InvalidInput) as err:
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(**change)))

    assert err.value.field == bad_field


async def test_an_accepted_manual_order_is_returned_and_published(risk):
    reply = await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="m1")))
    await wait_for(lambda: risk.orders)

    assert reply.decision.accepted and risk.orders[0].order.client_order_id == "m1"


async def test_a_denied_manual_order_raises_risk_rejected_and_publishes_the_rejection(risk):
    with pytest.raises(RiskRejected) as err:
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(quantity=5000)))
    await wait_for(lambda: risk.orders)

    assert err.value.reason_code == "MAX_ORDER_QUANTITY"
    assert (risk.orders[0].accepted, risk.orders[0].reason) == (False, "quantity 5000 exceeds max_order_quantity 1000")


async def test_a_manual_order_while_halted_raises_trading_halted(risk):
    await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="test"))

    with pytest.raises(TradingHalted):
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order()))


async def test_the_kill_switch_halts_notifies_and_cancels_every_open_order_despite_a_failure(risk):
    for cid in ("a", "refused", "b"):
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id=cid)))

    reply = await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(
        engaged=True, reason="runaway", cancel_open_orders=True))
    await wait_for(lambda: risk.notes)

    assert reply.state == risk_pb2.TRADING_STATE_HALTED
    assert risk.cancels[:3] == ["a", "refused", "b"]
    assert (risk.notes[0].kind, risk.notes[0].text) == (ops_pb2.NOTIFICATION_KIND_KILL_SWITCH,
                                                        "kill switch engaged: runaway")


async def test_a_kill_switch_cancel_refused_until_the_broker_acknowledges_is_retried_until_it_succeeds(risk):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="unacked-1")))

    await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(
        engaged=True, reason="runaway", cancel_open_orders=True))
    await wait_for(lambda: risk.cancelled)

    assert (risk.cancels, risk.cancelled) == (["unacked-1"] * 3, ["unacked-1"])


async def test_an_order_the_kill_switch_cannot_cancel_is_a_critical_notification(risk):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="refused")))

    await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(
        engaged=True, reason="runaway", cancel_open_orders=True))
    await wait_for(lambda: len(risk.notes) == 2)

    note = risk.notes[1]
    assert (note.kind, note.severity, note.fields["order_ids"]) == (
        ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, ops_pb2.SEVERITY_CRITICAL, "refused")
    assert risk.cancels.count("refused") > 1


async def test_a_stop_during_the_kill_switchs_cancel_retries_still_names_the_orders_left_working(risk):
    risk.module.settings = risk.module.settings.model_copy(update={"cancel_retry_window_ms": 60_000})
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="refused")))
    await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(
        engaged=True, reason="runaway", cancel_open_orders=True))
    await wait_for(lambda: risk.cancels.count("refused") > 1)  # retrying, well inside its window

    runner = next(t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "RiskModule.run")
    runner.cancel()  # the process stops: run()'s task group, and the retries in it, are cancelled
    await asyncio.gather(runner, return_exceptions=True)
    await wait_for(lambda: len(risk.notes) == 2)

    note = risk.notes[1]
    assert (note.kind, note.severity, note.fields["order_ids"]) == (
        ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, ops_pb2.SEVERITY_CRITICAL, "refused")
    assert "stopped" in note.text


async def test_releasing_the_kill_switch_reports_active(risk):
    await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True))

    reply = await risk.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=False))

    assert reply.state == risk_pb2.TRADING_STATE_ACTIVE


async def test_a_falling_price_publishes_a_risk_breach_notification(risk):
    await risk.bus.publish(Topic.ORDER_UPDATES, fill(BUY, 100, 1290_00))
    await wait_for(lambda: risk.module.engine.positions.net_quantity(RELIANCE) == 100)

    risk.bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[
        market_pb2.Tick(token=RELIANCE, ltp_paise=1289_00), market_pb2.Tick(token=RELIANCE, ltp_paise=1278_00)]))
    await wait_for(lambda: risk.notes)

    assert (risk.notes[0].kind, risk.notes[0].severity, risk.notes[0].fields["state"]) == (
        ops_pb2.NOTIFICATION_KIND_RISK_BREACH, ops_pb2.SEVERITY_WARNING, "REDUCING")


async def test_risk_state_reports_positions_open_orders_and_pnl(risk):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="open-1")))
    await risk.bus.publish(Topic.ORDER_UPDATES, fill(BUY, 10, 1290_00))
    await wait_for(lambda: risk.module.engine.positions.net_quantity(RELIANCE) == 10)

    state = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())

    assert (state.state, state.open_orders, [p.net_quantity for p in state.positions]) == (
        risk_pb2.TRADING_STATE_ACTIVE, 1, [10])


async def test_a_terminal_order_update_closes_the_open_order(risk):
    await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(client_order_id="x")))

    await risk.bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(
        client_order_id="x", status=trading_pb2.ORDER_STATUS_REJECTED))
    await wait_for(lambda: not risk.module.engine.open_orders)

    assert (await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())).open_orders == 0


async def test_invalid_limits_are_refused_whole_and_nothing_changes(risk):
    before = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    proposed = risk_pb2.RiskLimits()
    proposed.CopyFrom(before.limits)
    proposed.max_order_quantity = 10
    proposed.max_open_orders = -1

    with pytest.raises(InvalidInput) as err:
        await risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=proposed))

    after = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    assert err.value.field == "limits.max_open_orders" and after.limits == before.limits


@pytest.mark.parametrize("at", ["15:30", "15:45", "09:00"])
async def test_a_square_off_time_outside_market_hours_is_refused_and_nothing_changes(risk, at):
    """At 15:45 risk would refuse its own square-off orders (the market closed): no MIS position squared off."""
    before = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    proposed = risk_pb2.RiskLimits()
    proposed.CopyFrom(before.limits)
    proposed.square_off_time_ist = at

    with pytest.raises(InvalidInput, match="outside nse_cm's market hours 09:15-15:30") as err:
        await risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=proposed))

    after = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    assert err.value.field == "limits.square_off_time_ist" and after.limits == before.limits


async def test_valid_limits_apply_to_the_next_order(risk):
    state = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    state.limits.max_order_quantity = 3
    await risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=state.limits))

    with pytest.raises(RiskRejected, match="quantity 5 exceeds max_order_quantity 3"):
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(quantity=5)))


async def test_value_caps_set_through_the_contract_are_reported_and_enforced(risk):
    state = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    state.limits.max_position_value_paise = 10_000_00
    state.limits.max_gross_exposure_paise = 50_000_00
    await risk.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=state.limits))

    after = await risk.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())
    with pytest.raises(RiskRejected, match=r"over max_position_value ₹10,000\.00"):
        await risk.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order(quantity=10)))
    assert (after.limits.max_position_value_paise, after.limits.max_gross_exposure_paise) == (10_000_00, 50_000_00)


async def test_run_squares_off_mis_positions_at_1515_ist(risk):
    await risk.bus.publish(Topic.ORDER_UPDATES, fill(BUY, 10, 1290_00))
    await wait_for(lambda: risk.module.engine.positions.net_quantity(RELIANCE) == 10)

    risk.clock.set(ist_ns(DAY, 15, 15))
    await wait_for(lambda: risk.orders)

    [decision] = risk.orders
    assert decision.accepted
    assert (decision.order.strategy_tag, decision.order.side, decision.order.quantity,
            decision.order.client_order_id) == ("SQUAREOFF", SELL, 10,
                                                f"SQ-20260121-2885-1-0-{risk.module.engine.run_tag}")


async def test_at_square_off_time_a_resting_exit_is_cancelled_then_the_position_closed_at_market(risk):
    await risk.bus.publish(Topic.ORDER_UPDATES, fill(BUY, 10, 1290_00))
    exit_order = order(client_order_id="take-profit", side=trading_pb2.SIDE_SELL, price_paise=1350_00)
    await risk.bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(
        client_order_id="take-profit", status=trading_pb2.ORDER_STATUS_OPEN, request=exit_order))
    await wait_for(lambda: "take-profit" in risk.module.engine.open_orders)

    risk.clock.set(ist_ns(DAY, 15, 15))
    await wait_for(lambda: risk.cancelled == ["take-profit"])
    assert risk.orders == []  # not while the exit may still fill
    await risk.bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(
        client_order_id="take-profit", status=trading_pb2.ORDER_STATUS_CANCELLED, request=exit_order))
    await wait_for(lambda: not risk.module.engine.open_orders)
    risk.clock.advance(1)
    await wait_for(lambda: risk.orders)

    [decision] = risk.orders
    assert (decision.accepted, decision.order.strategy_tag, decision.order.quantity) == (True, "SQUAREOFF", 10)


async def test_open_orders_the_oms_already_holds_count_after_a_restart(clock):
    bus = Bus()

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_orders(request: oms_pb2.ListOrdersRequest) -> oms_pb2.ListOrdersResponse:
        held = trading_pb2.OrderUpdate(client_order_id="before-restart", status=trading_pb2.ORDER_STATUS_OPEN,
                                       request=order(client_order_id="before-restart"))
        return oms_pb2.ListOrdersResponse(orders=[held])

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_ORDERS, list_orders)
    await RiskModule(bus, load(RiskSettings, {}), clock).start()

    state = await bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())

    assert state.open_orders == 1


async def test_a_replayed_signal_of_an_order_the_oms_finished_before_a_restart_is_a_duplicate(clock):
    """Accepted again it would be ignored by the OMS (same client_order_id) and counted open here for good."""
    bus = Bus()
    replayed = trading_pb2.Signal(signal_id="MOMENTUM_RSI-2885-1-BUY", strategy="MOMENTUM_RSI", token=RELIANCE,
                                  exchange_segment="nse_cm", symbol="RELIANCE-EQ", side=BUY, quantity=1,
                                  order_type=trading_pb2.ORDER_TYPE_LIMIT, limit_price_paise=1290_00)
    done = trading_pb2.OrderUpdate(client_order_id=order_from_signal(replayed).client_order_id,
                                   status=trading_pb2.ORDER_STATUS_TRADED, request=order_from_signal(replayed))

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_orders(request: oms_pb2.ListOrdersRequest) -> oms_pb2.ListOrdersResponse:
        return oms_pb2.ListOrdersResponse(orders=[] if request.open_only else [done])

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_ORDERS, list_orders)
    module = RiskModule(bus, load(RiskSettings, {}), clock)
    await module.start()

    decision = module.engine.decide_signal(replayed)

    assert (decision.accepted, decision.reason_code, len(module.engine.open_orders)) == (False, "DUPLICATE_ORDER", 0)


def oms_snapshot_of_ten_bought(bus: Bus, while_reading_orders: trading_pb2.OrderUpdate | None = None
                               ) -> tuple[trading_pb2.OrderUpdate, trading_pb2.OrderUpdate]:
    """An OMS stand-in whose snapshots (as of sequence 10) hold 10 RELIANCE bought; returns that fill and the next
    one (5 more, sequence 11). With `while_reading_orders`, it publishes that update during its second read."""
    before = fill(BUY, 10, 1290_00, client_order_id="c-before")
    before.sequence = 10
    after = fill(BUY, 5, 1291_00, client_order_id="c-after")
    after.sequence = 11
    snapshot = trading_pb2.Position(token=RELIANCE, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
                                    product=trading_pb2.PRODUCT_MIS, net_quantity=10, average_price_paise=1290_00,
                                    buy_quantity=10, last_price_paise=1290_00)

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_positions(request: oms_pb2.ListPositionsRequest) -> oms_pb2.ListPositionsResponse:
        return oms_pb2.ListPositionsResponse(positions=[snapshot], as_of_sequence=10)

    async def list_orders(request: oms_pb2.ListOrdersRequest) -> oms_pb2.ListOrdersResponse:
        if while_reading_orders is not None and not request.open_only:
            await bus.publish(Topic.ORDER_UPDATES, while_reading_orders)
            await asyncio.sleep(0.01)
        return oms_pb2.ListOrdersResponse(orders=[] if request.open_only else [before])

    for method, handler in ((rpc.LIST_INSTRUMENTS, list_instruments), (rpc.LIST_POSITIONS, list_positions),
                            (rpc.LIST_ORDERS, list_orders)):
        bus.handle(method, handler)
    return before, after


async def test_fills_the_oms_snapshot_already_holds_are_not_counted_again_when_their_updates_arrive(clock):
    """Split mode: risk's streams are opened before its start() reads the OMS's positions and orders, and the
    updates that came meanwhile are delivered after it; the fills in them must count once."""
    bus = Bus()
    before, after = oms_snapshot_of_ten_bought(bus)
    module = RiskModule(bus, load(RiskSettings, {}), clock)
    await module.start()

    for update in (before, after):  # what the gated bridge delivers once start() is done
        module.engine.on_order_update(update)

    assert module.engine.positions.net_quantity(RELIANCE) == 15
    assert module.engine.open_orders == {}


async def test_an_update_the_oms_publishes_while_risk_reads_its_snapshots_is_not_lost(clock):
    """Monolith: the OMS runs while risk starts, and its ListOrders may wait on the ledger; a fill published
    between risk's snapshots and its subscription would never reach risk (its position short for the day)."""
    bus = Bus()
    meanwhile = fill(BUY, 5, 1291_00, client_order_id="c-meanwhile")
    meanwhile.sequence = 11
    oms_snapshot_of_ten_bought(bus, while_reading_orders=meanwhile)
    module = RiskModule(bus, load(RiskSettings, {}), clock)
    async with asyncio.TaskGroup() as tg:
        running = tg.create_task(bus.run())
        await asyncio.sleep(0)
        await module.start()
        await bus.drain()
        running.cancel()

    assert module.engine.positions.net_quantity(RELIANCE) == 15
    assert module.engine.open_orders == {}


async def test_a_restarted_risk_module_counts_the_oms_positions_against_its_limits(clock):
    bus = Bus()
    held = trading_pb2.Position(token=RELIANCE, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
                                product=trading_pb2.PRODUCT_MIS, net_quantity=4_990,
                                average_price_paise=129_000, last_price_paise=129_000)

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def list_positions(request: oms_pb2.ListPositionsRequest) -> oms_pb2.ListPositionsResponse:
        return oms_pb2.ListPositionsResponse(positions=[held])

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_POSITIONS, list_positions)
    module = RiskModule(bus, load(RiskSettings, {}), clock)
    await module.start()

    decision = module.engine.decide(order(client_order_id="after-restart", quantity=20))

    assert decision.reason_code == "MAX_POSITION_QUANTITY"
