"""Server streams: resume from the replay ring, request filters, and slow order-path clients cut off."""

import asyncio
import time

import grpc
import pytest

from shared import rpc
from shared.bus import Topic
from shared.client import NeoPulseClient
from shared.contracts import strategy_pb2, strategy_pb2_grpc, trading_pb2
from shared.errors import InvalidInput, MessagesLost
from shared.grpc.hub import TopicHub
from tests.grpc.conftest import wait_for


async def first_n(stream, n: int) -> list:
    items = []
    async for item in stream:
        items.append(item)
        if len(items) == n:
            break
    return items


async def test_order_updates_resume_after_a_sequence_from_the_replay_ring(bus, addr):
    for seq in (1, 2, 3):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq))
    await bus.drain()

    async with NeoPulseClient(addr) as client:
        updates = await asyncio.wait_for(first_n(client.stream_order_updates(after_sequence=1), 2), 5)

    assert [u.sequence for u in updates] == [2, 3]


async def test_signal_stream_sends_only_the_requested_strategies(bus, server, addr):
    hub = server.hubs[rpc.method("StrategyService", "StreamSignals")]
    async with NeoPulseClient(addr) as client:
        call = strategy_pb2_grpc.StrategyServiceStub(client.channel).StreamSignals(
            strategy_pb2.StreamSignalsRequest(strategies=["orb"]))
        await wait_for(lambda: hub.listener_count == 1)
        await bus.publish(Topic.SIGNALS, trading_pb2.Signal(strategy="momentum_rsi", sequence=1))
        await bus.publish(Topic.SIGNALS, trading_pb2.Signal(strategy="orb", sequence=2))
        batch = await asyncio.wait_for(call.read(), 5)
        call.cancel()

    assert [(s.strategy, s.sequence) for s in batch.signals] == [("orb", 2)]


async def first_decisions(bus, server, addr, request, *published: trading_pb2.RiskDecision) -> list:
    """The decisions of the first batch a StreamDecisions(`request`) sends once `published` are on the bus."""
    from shared.contracts import risk_pb2_grpc

    hub = server.hubs[rpc.method("RiskService", "StreamDecisions")]
    async with NeoPulseClient(addr) as client:
        call = risk_pb2_grpc.RiskServiceStub(client.channel).StreamDecisions(request)
        await wait_for(lambda: hub.listener_count == 1)
        for decision in published:
            await bus.publish(Topic.ORDERS, decision)
        batch = await asyncio.wait_for(call.read(), 5)
        call.cancel()
    return list(batch.decisions)


async def test_decision_stream_with_rejections_only_skips_accepted_orders(bus, server, addr):
    from shared.contracts import risk_pb2

    decisions = await first_decisions(
        bus, server, addr, risk_pb2.StreamDecisionsRequest(rejections_only=True),
        trading_pb2.RiskDecision(accepted=True, sequence=1),
        trading_pb2.RiskDecision(accepted=False, reason_code="MAX_QTY", sequence=2))

    assert [d.reason_code for d in decisions] == ["MAX_QTY"]


async def test_decision_stream_with_accepted_only_skips_rejections(bus, server, addr):
    from shared.contracts import risk_pb2

    decisions = await first_decisions(
        bus, server, addr, risk_pb2.StreamDecisionsRequest(accepted_only=True),
        trading_pb2.RiskDecision(accepted=False, reason_code="MAX_QTY", sequence=1),
        trading_pb2.RiskDecision(accepted=True, sequence=2))

    assert [(d.accepted, d.sequence) for d in decisions] == [(True, 2)]


async def test_a_decision_stream_asking_for_accepted_and_rejections_only_is_invalid_input(bus, server, addr):
    from shared.contracts import risk_pb2, risk_pb2_grpc

    async with NeoPulseClient(addr) as client:
        call = risk_pb2_grpc.RiskServiceStub(client.channel).StreamDecisions(
            risk_pb2.StreamDecisionsRequest(accepted_only=True, rejections_only=True))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), 5)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "accepted_only" in (err.value.details() or "")


async def test_an_accepted_only_stream_resumes_when_only_rejections_left_the_ring(bus):
    """The OMS resumes after the last accepted decision in its ledger: rejections pushed out of the ring since
    are nothing it would have got, so no DATA_LOSS; an accepted one pushed out is."""
    from shared.contracts import risk_pb2

    hub = TopicHub(bus, Topic.ORDERS, replay_size=2)
    for seq, accepted in ((1, True), (2, False), (3, False), (4, True), (5, False)):
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(accepted=accepted, sequence=seq))
    await bus.drain()
    accepted_only = risk_pb2.StreamDecisionsRequest(accepted_only=True)

    replay, _ = hub.attach(1, hub.evicted_for(accepted_only))  # 2 and 3 are gone: rejections
    with pytest.raises(MessagesLost):
        hub.attach(-1, hub.evicted_for(accepted_only))  # everything it holds: 1 is gone

    assert [d.sequence for d in replay] == [4, 5]  # the stream's filter then drops 5


async def test_a_stuck_order_update_stream_is_cut_off_instead_of_blocking_the_bus(bus):
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=100, listener_maxsize=2)
    _, listener = hub.attach()  # a client that never reads

    for seq in range(1, 6):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=seq))
    drained = await bus.drain(within_s=5)

    assert drained is True
    assert listener.overflowed is True and hub.listener_count == 0
    assert [u.sequence for u in hub.ring] == [1, 2, 3, 4, 5]


async def test_a_resume_point_the_ring_no_longer_holds_ends_the_stream_with_data_loss(bus, server, addr):
    """Carrying on from the oldest kept message would hide a gap in the order path."""
    hub = server.hubs[rpc.method("OrderService", "StreamOrderUpdates")]
    hub.ring, hub.ring_us = type(hub.ring)(maxlen=3), type(hub.ring_us)(maxlen=3)
    for seq in range(1, 8):
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq))
    await bus.drain()

    async with NeoPulseClient(addr) as client:
        with pytest.raises(MessagesLost, match="after sequence 2 are no longer kept"):
            await asyncio.wait_for(first_n(client.stream_order_updates(after_sequence=2), 1), 5)


async def test_a_resume_since_a_time_is_not_lost_for_what_left_the_ring_before_that_time(bus):
    """A bridge whose first try failed streams what was published since it first asked (StreamBridge): messages
    that left the ring before then were never its to get."""
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=3)
    for seq in range(1, 6):  # 1 and 2 leave the ring
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=seq))
    assert await bus.drain()
    await asyncio.sleep(0.002)
    since_us = time.time_ns() // 1000
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(sequence=6))
    assert await bus.drain()

    replay, _ = hub.attach(-1, since_us=since_us)

    assert [u.sequence for u in replay] == [6]
    with pytest.raises(MessagesLost):  # since a time before the oldest kept left the ring: maybe lost
        hub.attach(-1, since_us=since_us - 10_000_000)


async def test_an_order_path_streams_queue_is_half_the_ring_so_a_cut_off_stream_can_resume(bus):
    hub = TopicHub(bus, Topic.ORDER_UPDATES, replay_size=10_000)

    assert hub.listener_maxsize == 5_000


async def test_a_negative_resume_point_other_than_minus_one_is_invalid_input(bus, server, addr):
    async with NeoPulseClient(addr) as client:
        with pytest.raises(InvalidInput, match="after_sequence"):
            await asyncio.wait_for(first_n(client.stream_order_updates(after_sequence=-5), 1), 5)


async def test_a_stuck_order_path_stream_is_cut_off_at_once_and_never_delays_the_others(bus):
    """One client that stops reading (a dashboard, the notifier's stream under Telegram back-pressure) held every
    decision bound for the OMS's bridge for up to 5 s while the fan-out waited for room in its queue."""
    hub = TopicHub(bus, Topic.ORDERS, replay_size=4)  # a stream's queue holds 2
    _, stuck = hub.attach()  # never reads
    _, healthy = hub.attach()
    received: list[int] = []

    async def read() -> None:
        while True:
            received.append((await healthy.queue.get()).sequence)

    reader = asyncio.create_task(read())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for seq in range(1, 6):
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(sequence=seq))
        await bus.drain()
    took = loop.time() - started
    await wait_for(lambda: len(received) == 5, 1.0)
    reader.cancel()

    assert stuck.overflowed and hub.listener_count == 1
    assert received == [1, 2, 3, 4, 5] and took < 0.5


async def test_a_burst_bigger_than_a_streams_queue_does_not_cut_off_a_stream_that_reads(bus):
    """The bus hands a subscriber what it queued without a loop turn in between: the stream's reader must get one
    before its full queue is taken for a stuck client."""
    hub = TopicHub(bus, Topic.ORDERS, replay_size=4)  # a stream's queue holds 2
    _, listener = hub.attach()
    received: list[int] = []

    async def read() -> None:
        while True:
            received.append((await listener.queue.get()).sequence)

    reader = asyncio.create_task(read())
    for seq in range(1, 11):
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(sequence=seq))
    await wait_for(lambda: len(received) == 10, 2.0)
    reader.cancel()

    assert not listener.overflowed and received == list(range(1, 11))
