"""The bus: fan-out, lossy market topics, back-pressure on the order path, handler errors, a stopped bus."""

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from shared.bus import Bus, Priority, Topic
from shared.contracts import market_pb2, ops_pb2, trading_pb2
from shared.errors import NotFound
from tests.helpers import eventually as wait_for


def recorder(into: list[str]):
    """label -> a handler that appends `label` to `into` for each message (which consumer ran when)."""
    def record(label: str):
        async def handler(msg):
            into.append(label)
        return handler
    return record


@pytest.fixture
async def bus():
    bus = Bus(default_maxsize=4)
    task = asyncio.create_task(bus.run())
    yield bus
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_every_subscriber_gets_every_order_update_in_order(bus):
    seen_a, seen_b = [], []

    async def a(msg):
        seen_a.append(msg.sequence)

    async def b(msg):
        seen_b.append(msg.sequence)

    bus.subscribe(Topic.ORDER_UPDATES, "a", a)
    bus.subscribe(Topic.ORDER_UPDATES, "b", b)
    for i in range(50):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=i))
    await wait_for(lambda: len(seen_a) == 50 and len(seen_b) == 50)
    assert seen_a == list(range(50)) and seen_b == list(range(50))


async def test_a_full_tick_queue_drops_the_oldest_batch_and_counts_it():
    bus = Bus(default_maxsize=2)
    sub = bus.subscribe(Topic.TICKS, "slow", lambda m: asyncio.sleep(0))  # not running: nothing consumed
    for i in range(5):
        bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(token=i)]))
    assert sub.dropped == 3
    assert [sub.queue.get_nowait().ticks[0].token for _ in range(2)] == [3, 4]


async def test_a_full_order_path_queue_makes_the_publisher_wait_instead_of_dropping():
    bus = Bus(default_maxsize=1)
    sub = bus.subscribe(Topic.SIGNALS, "stalled", lambda m: asyncio.sleep(0))
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="1"))
    blocked = asyncio.create_task(bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="2")))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert sub.queue.get_nowait().signal_id == "1"
    await asyncio.wait_for(blocked, 1)
    assert sub.queue.get_nowait().signal_id == "2" and sub.dropped == 0


async def test_publish_nowait_refuses_an_order_path_topic():
    with pytest.raises(ValueError, match="never drops"):
        Bus().publish_nowait(Topic.ORDERS, trading_pb2.RiskDecision())


async def test_a_failing_handler_is_counted_and_the_next_message_still_handled(bus):
    handled = []

    async def flaky(msg):
        if msg.signal_id == "bad":
            raise RuntimeError("boom")
        handled.append(msg.signal_id)

    sub = bus.subscribe(Topic.SIGNALS, "flaky", flaky)
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="bad"))
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="good"))
    await wait_for(lambda: handled == ["good"])
    assert sub.errors == 1


async def test_stream_yields_what_is_queued_as_one_batch(bus):
    stream = bus.stream(Topic.ORDER_UPDATES, "grpc", max_batch=10, maxsize=100)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    for i in range(3):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=i))
    batch = await asyncio.wait_for(first, 1)
    rest = [] if len(batch) == 3 else await asyncio.wait_for(stream.__anext__(), 1)
    assert [u.sequence for u in batch + rest] == [0, 1, 2]
    await stream.aclose()
    assert all(s.name != "grpc" for s in bus.subscriptions())


async def test_a_batch_subscriber_takes_what_is_queued_as_one_list_up_to_its_limit():
    bus = Bus(default_maxsize=100)
    calls: list[list[int]] = []

    async def burst(decisions):
        calls.append([d.sequence for d in decisions])

    sub = bus.subscribe(Topic.ORDERS, "oms", burst, max_batch=4)
    for i in range(6):  # queued before the consumer runs: one burst
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(sequence=i))
    task = asyncio.create_task(bus.run())
    try:
        assert await bus.drain(within_s=1)  # every message of a list is counted done
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(sequence=6))
        assert await bus.drain(within_s=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls == [[0, 1, 2, 3], [4, 5], [6]]
    assert sub.handled == 7


async def test_calling_a_request_nobody_serves_is_not_found():
    with pytest.raises(NotFound, match="PauseStrategy"):
        await Bus().call("/neopulse.v1.StrategyService/PauseStrategy", None)


async def test_queued_order_path_messages_are_handled_before_the_next_tick_batch(bus):
    order = []

    async def on_ticks(batch):
        order.append("ticks")

    async def on_signal(signal):
        order.append("signal")

    bus.subscribe(Topic.TICKS, "market", on_ticks)
    bus.subscribe(Topic.SIGNALS, "risk", on_signal)
    await asyncio.sleep(0)
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch())
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="s"))
    assert await bus.drain()
    assert order == ["signal", "ticks"]


async def test_queued_signals_and_decisions_go_before_order_updates_and_ticks(bus):
    order = []
    record = recorder(order)

    bus.subscribe(Topic.TICKS, "market", record("ticks"))
    bus.subscribe(Topic.ORDER_UPDATES, "strategy", record("update"))
    bus.subscribe(Topic.SIGNALS, "risk", record("signal"))
    await asyncio.sleep(0)
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch())
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=1))
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="s"))
    assert await bus.drain()
    assert order == ["signal", "update", "ticks"]


async def test_a_signal_consumer_awaiting_io_does_not_hold_back_market_data(bus):
    io_done = asyncio.Event()
    ticks_handled = asyncio.Event()

    async def slow_risk(signal):
        await io_done.wait()  # e.g. a database write

    async def on_ticks(batch):
        ticks_handled.set()

    bus.subscribe(Topic.SIGNALS, "risk", slow_risk)
    bus.subscribe(Topic.TICKS, "market", on_ticks)
    await asyncio.sleep(0)
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="a"))
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="b"))  # queued behind the one in its handler
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch())

    await asyncio.wait_for(ticks_handled.wait(), 1)
    io_done.set()
    assert await bus.drain()


async def test_drain_waits_for_work_a_handler_handed_off(bus):
    release, done = asyncio.Event(), []

    async def hand_off(signal):
        async def place():
            await release.wait()
            done.append(signal.signal_id)
        bus.track(asyncio.create_task(place()))

    bus.subscribe(Topic.SIGNALS, "oms", hand_off)
    await asyncio.sleep(0)
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="s"))

    assert await bus.drain(within_s=0.05) is False
    release.set()
    assert await bus.drain()
    assert done == ["s"]


async def test_after_order_path_returns_once_queued_signals_and_decisions_are_handled(bus):
    handled = []

    async def risk(signal):
        handled.append("signal")
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(signal_id=signal.signal_id))

    async def oms(decision):
        handled.append("decision")

    bus.subscribe(Topic.SIGNALS, "risk", risk)
    bus.subscribe(Topic.ORDERS, "oms", oms)
    await asyncio.sleep(0)
    await bus.publish(Topic.SIGNALS, trading_pb2.Signal(signal_id="s"))

    await bus.after_order_path()

    assert handled == ["signal", "decision"]


async def test_a_signal_source_goes_before_the_bookkeeping_of_orders_already_sent(bus):
    """The strategy's ticks (where the next orders come from) and its own fills, in arrival order, before the
    other consumers of order updates (risk's, the notifier's) and before the other market data."""
    order = []
    record = recorder(order)

    bus.subscribe(Topic.TICKS, "oms", record("oms ticks"))
    bus.subscribe(Topic.ORDER_UPDATES, "risk", record("risk update"))
    bus.subscribe(Topic.ORDER_UPDATES, "strategy", record("strategy update"), priority=Priority.SIGNAL_SOURCE)
    bus.subscribe(Topic.TICKS, "strategy", record("strategy ticks"), priority=Priority.SIGNAL_SOURCE)
    await asyncio.sleep(0)
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=1))
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch())
    assert await bus.drain()
    assert order == ["strategy update", "strategy ticks", "risk update", "oms ticks"]


async def test_as_follow_up_waits_for_queued_signal_sources(bus):
    handled = []

    async def strategy(batch):
        handled.append("ticks")

    bus.subscribe(Topic.TICKS, "strategy", strategy, priority=Priority.SIGNAL_SOURCE)
    await asyncio.sleep(0)
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch())

    await bus.as_follow_up()

    assert handled == ["ticks"]


# -- a stopped bus ------------------------------------------------------------------------------------------
def undelivered(topic: Topic) -> float:
    return REGISTRY.get_sample_value("neopulse_bus_undelivered_messages_total", {"topic": topic.value}) or 0.0


def undelivered_logs(caplog) -> list[tuple[int, str, list[str]]]:
    return [(r.levelno, r.subscriber, r.messages) for r in caplog.records
            if r.getMessage() == "messages not delivered: the bus has stopped"]


async def stopped(bus: Bus) -> None:
    runner = asyncio.create_task(bus.run())
    await asyncio.sleep(0)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_a_notification_published_after_the_bus_stopped_is_counted_and_logged_not_lost_silently(caplog):
    bus, handled = Bus(), []

    async def notifier(note):
        handled.append(note)

    bus.subscribe(Topic.NOTIFICATIONS, "notifier", notifier)
    await stopped(bus)
    before = undelivered(Topic.NOTIFICATIONS)

    await bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title="Kill switch: 1 open order(s) NOT cancelled"))

    assert (handled, undelivered(Topic.NOTIFICATIONS) - before) == ([], 1)
    assert undelivered_logs(caplog) == [(logging.ERROR, "", ["Kill switch: 1 open order(s) NOT cancelled"])]


async def test_what_is_still_queued_for_a_handler_when_the_bus_stops_is_counted_and_logged(caplog):
    bus, release = Bus(), asyncio.Event()
    bus.subscribe(Topic.ORDER_UPDATES, "risk", lambda update: release.wait())  # busy with the first update
    runner = asyncio.create_task(bus.run())
    for i in (1, 2, 3):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=i))
    await wait_for(lambda: bus.subscriptions()[0].busy)
    before = undelivered(Topic.ORDER_UPDATES)

    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)

    assert undelivered(Topic.ORDER_UPDATES) - before == 2
    assert undelivered_logs(caplog) == [(logging.ERROR, "risk", ["OrderUpdate", "OrderUpdate"])]
