"""A target a trader changed by hand (/modify) blocks the strategy's exit, not its stop: the stop is still watched,
once reached it is due (shown in /strategies), said once for the engine to notify, and goes at the market as soon
as the trader's order ends."""

from shared.contracts import trading_pb2
from tests.strategy.test_price_levels import LIMIT, MARKET, SBIN, SELL, Desk


def held_with_a_target_changed_by_hand() -> Desk:
    """Long 10 at 100.00 (stop 99.00, target 102.00); the resting target moved by hand to 103.00."""
    desk = Desk(stop_loss_pct=1, target_pct=2)
    desk.hold()
    (target,) = desk.ticks(102_05)
    desk.sequence += 1
    desk.engine.on_order_update(trading_pb2.OrderUpdate(
        internal_id="i-t", client_order_id="t", status=trading_pb2.ORDER_STATUS_OPEN, sequence=desk.sequence,
        changed_by_hand=True, request=trading_pb2.OrderRequest(
            client_order_id="t", signal_id=target.signal_id, token=SBIN, side=SELL, quantity=10, order_type=LIMIT,
            price_paise=103_00, strategy_tag="mom", product=trading_pb2.PRODUCT_MIS)))
    return desk


def test_a_stop_reached_behind_a_target_changed_by_hand_is_shown_due():
    desk = held_with_a_target_changed_by_hand()

    desk.ticks(100_00, 98_50)

    (position,) = desk.engine.info(desk.strategy).positions
    assert position.stop_reached


def test_a_stop_reached_behind_a_target_changed_by_hand_is_said_once():
    desk = held_with_a_target_changed_by_hand()
    desk.ticks(98_50)
    said = desk.engine.blocked_stops[:]  # what the module tells the trader, and then empties
    desk.engine.blocked_stops.clear()
    desk.ticks(98_00, 95_00)

    assert (said, desk.engine.blocked_stops) == ([("mom", SBIN, (
        "stop loss 1%: tick ₹98.50, 1.50% under the entry ₹100.00; the order t changed by hand blocks the exit of "
        "+10: cancel it (the strategy then exits at the market) or exit by hand"))], [])


def test_a_stop_due_behind_a_target_changed_by_hand_exits_at_the_market_once_that_order_is_cancelled():
    desk = held_with_a_target_changed_by_hand()
    desk.ticks(98_50)
    desk.update("t", SELL, trading_pb2.ORDER_STATUS_CANCELLED, limit=103_00)

    out = desk.ticks(99_50)  # back over the stop: it was reached, it goes

    assert [(s.side, s.quantity, s.order_type) for s in out] == [(SELL, 10, MARKET)]



async def test_the_module_tells_the_trader_of_a_blocked_stop_as_a_critical_notice():
    import asyncio

    from shared.bus import Topic
    from shared.contracts import ops_pb2
    from tests.strategy.test_module import Harness, ticks

    h = Harness()
    told: list[ops_pb2.Notification] = []

    async def on_note(note: ops_pb2.Notification) -> None:
        told.append(note)

    h.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    bus = asyncio.create_task(h.bus.run())
    try:
        await h.module.start()
        h.module.engine.blocked_stops.append(("mom", SBIN, "stop loss 1%: the order t changed by hand blocks it"))

        await h.feed(ticks([800_00]), candles_expected=1)

        assert [(n.severity, n.title, n.text) for n in told] == [(
            ops_pb2.SEVERITY_CRITICAL, "Stop reached, exit blocked",
            "mom: SBIN-EQ: stop loss 1%: the order t changed by hand blocks it")]
    finally:
        bus.cancel()
        await asyncio.gather(bus, return_exceptions=True)
