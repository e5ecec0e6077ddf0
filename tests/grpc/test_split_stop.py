"""A split process stopping: what its module publishes while it stops reaches the streams still connected; a bridge
that reaches a restarted upstream which did not end its stream cleanly says messages may be lost, and a filtered
bridge is told of a loss only when something it would have got is gone."""

import asyncio

import pytest

from shared import rpc
from shared.bus import Bus, Topic
from shared.contracts import ops_pb2, risk_pb2, trading_pb2
from shared.errors import MessagesLost
from shared.grpc.bridge import Backoff, StreamBridge, install_unary_proxy, open_channel
from shared.grpc.config import GrpcSettings
from shared.grpc.hub import TopicHub
from shared.grpc.server import GrpcServer
from tests.grpc.bridge_rig import Proxy
from tests.grpc.conftest import wait_for

DECISIONS = rpc.method("RiskService", "StreamDecisions")


def decision(cid: str, seq: int) -> trading_pb2.RiskDecision:
    return trading_pb2.RiskDecision(accepted=True, sequence=seq, order=trading_pb2.OrderRequest(client_order_id=cid))


class SettlingModule:
    """Stands in for risk: a SubmitOrder in flight publishes its decision, and stopping publishes one more."""

    def __init__(self, bus: Bus) -> None:
        self.bus, self.deciding = bus, asyncio.Event()
        bus.handle(rpc.SUBMIT_ORDER, self.submit_order)

    async def submit_order(self, req):
        self.deciding.set()
        await asyncio.sleep(0.3)
        d = decision(req.order.client_order_id, 2)
        await self.bus.publish(Topic.ORDERS, d)
        return risk_pb2.SubmitOrderResponse(decision=d)

    async def stop(self) -> None:
        await self.bus.publish(Topic.ORDERS, decision("settled-at-stop", 3))


async def test_a_split_process_stopping_delivers_what_its_module_decides_while_stopping_to_connected_streams():
    from services.app.config import AppSettings
    from services.app.split import SplitProcess, SplitSettings

    risk_bus, oms_bus = Bus(), Bus()
    tasks = [asyncio.create_task(risk_bus.run()), asyncio.create_task(oms_bus.run())]
    module = SettlingModule(risk_bus)
    server = GrpcServer(risk_bus, ["RiskService"], GrpcSettings())
    process = SplitProcess("risk", AppSettings(), SplitSettings(), GrpcSettings(), {}, 0, bus=risk_bus)
    seen: list[str] = []

    async def collect(d):
        seen.append(d.order.client_order_id)

    oms_bus.subscribe(Topic.ORDERS, "oms", collect)
    port = await server.start()
    server.set_all_serving()
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    bridge = StreamBridge(oms_bus, channel, DECISIONS, backoff=Backoff(0.05, 0.2))
    tasks.append(asyncio.create_task(bridge.run()))
    try:
        await wait_for(lambda: server.hubs[DECISIONS].listener_count == 1)
        install_unary_proxy(oms_bus, channel, rpc.SUBMIT_ORDER)
        in_flight = asyncio.create_task(oms_bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(
            order=trading_pb2.OrderRequest(client_order_id="during-stop"))))
        await module.deciding.wait()

        await process._stop(server, module, [], [])  # what SIGTERM runs
        reply = await in_flight
        await wait_for(lambda: len(seen) == 2, 2.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()

    assert reply.decision.accepted
    assert seen == ["during-stop", "settled-at-stop"] and bridge.gaps == 0


async def test_a_bridge_reaching_a_restarted_upstream_that_did_not_end_its_stream_cleanly_reports_data_loss():
    """Cut off from risk (a network outage), the OMS's bridge misses a decision; risk restarts meanwhile, so the
    decision died with its ring: the new risk cannot say DATA_LOSS, the bridge must."""
    old_bus, new_bus, local = Bus(), Bus(), Bus()
    tasks = [asyncio.create_task(b.run()) for b in (old_bus, new_bus, local)]
    notes: list[ops_pb2.Notification] = []
    seen: list[int] = []

    async def collect(d):
        seen.append(d.sequence)

    async def note(n):
        notes.append(n)

    local.subscribe(Topic.ORDERS, "oms", collect)
    local.subscribe(Topic.NOTIFICATIONS, "notes", note)
    proxy = Proxy()
    await proxy.start()
    old = GrpcServer(old_bus, ["RiskService"], GrpcSettings())
    proxy.target_port = await old.start()
    old.set_all_serving()
    channel = open_channel(f"127.0.0.1:{proxy.port}", GrpcSettings())
    bridge = StreamBridge(local, channel, DECISIONS, backoff=Backoff(0.05, 0.1))
    tasks.append(asyncio.create_task(bridge.run()))
    try:
        await wait_for(lambda: old.hubs[DECISIONS].listener_count == 1)
        await old_bus.publish(Topic.ORDERS, decision("a", 1))
        await wait_for(lambda: seen == [1])
        proxy.refusing = True
        proxy.cut()
        await wait_for(lambda: old.hubs[DECISIONS].listener_count == 0)
        await old_bus.publish(Topic.ORDERS, decision("b", 2))  # never reaches the bridge
        await old.stop(0.2)
        new = GrpcServer(new_bus, ["RiskService"], GrpcSettings())
        proxy.target_port = await new.start()
        new.set_all_serving()
        proxy.refusing = False
        await wait_for(lambda: new.hubs[DECISIONS].listener_count == 1)
        await new_bus.publish(Topic.ORDERS, decision("c", 3))
        await wait_for(lambda: seen == [1, 3])
        await new.stop(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()
        await proxy.stop()

    assert bridge.gaps == 1
    assert [(n.severity, n.fields["after_sequence"], n.fields["cause"]) for n in notes] == [
        (ops_pb2.SEVERITY_CRITICAL, "1", "unrecorded")]


async def test_a_bridge_reaching_an_upstream_restarted_after_a_clean_stop_reports_nothing_lost():
    old_bus, new_bus, local = Bus(), Bus(), Bus()
    tasks = [asyncio.create_task(b.run()) for b in (old_bus, new_bus, local)]
    seen: list[int] = []

    async def collect(d):
        seen.append(d.sequence)

    local.subscribe(Topic.ORDERS, "oms", collect)
    old = GrpcServer(old_bus, ["RiskService"], GrpcSettings())
    port = await old.start()
    old.set_all_serving()
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    bridge = StreamBridge(local, channel, DECISIONS, backoff=Backoff(0.05, 0.1))
    tasks.append(asyncio.create_task(bridge.run()))
    try:
        await wait_for(lambda: old.hubs[DECISIONS].listener_count == 1)
        await old_bus.publish(Topic.ORDERS, decision("a", 1))
        await old.stop(1.0)
        new = GrpcServer(new_bus, ["RiskService"], GrpcSettings(), port=port)
        await new.start()
        new.set_all_serving()
        await wait_for(lambda: new.hubs[DECISIONS].listener_count == 1)
        await new_bus.publish(Topic.ORDERS, decision("c", 3))
        await wait_for(lambda: seen == [1, 3])
        await new.stop(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()

    assert bridge.gaps == 0


async def test_a_rejections_only_bridge_resumes_after_a_blip_without_a_false_loss_when_only_accepted_ones_left():
    """Its resume point moves only with rejections: after replay_size accepted decisions any reconnect asked for an
    evicted sequence and raised a CRITICAL 'Order-path messages lost' though it had missed nothing."""
    risk_bus, local = Bus(), Bus()
    tasks = [asyncio.create_task(b.run()) for b in (risk_bus, local)]
    seen: list[int] = []
    notes: list[ops_pb2.Notification] = []

    async def collect(d):
        seen.append(d.sequence)

    async def note(n):
        notes.append(n)

    local.subscribe(Topic.ORDERS, "strategy", collect)
    local.subscribe(Topic.NOTIFICATIONS, "notes", note)
    settings = GrpcSettings(replay_size=10)
    server = GrpcServer(risk_bus, ["RiskService"], settings)
    proxy = Proxy()
    await proxy.start()
    proxy.target_port = await server.start()
    server.set_all_serving()
    channel = open_channel(f"127.0.0.1:{proxy.port}", settings)
    bridge = StreamBridge(local, channel, DECISIONS, risk_pb2.StreamDecisionsRequest(rejections_only=True),
                          backoff=Backoff(0.05, 0.1))
    tasks.append(asyncio.create_task(bridge.run()))
    try:
        await wait_for(lambda: server.hubs[DECISIONS].listener_count == 1)
        await risk_bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(accepted=False, sequence=1))
        hub = server.hubs[DECISIONS]
        for seq in range(2, 40):  # a normal stretch of accepted decisions pushes the rejection out of the ring
            await risk_bus.publish(Topic.ORDERS, decision(f"c{seq}", seq))
            await risk_bus.drain()
        await wait_for(lambda: seen == [1])
        assert hub.evicted_sequence > 1
        proxy.cut()  # a network blip
        await wait_for(lambda: server.hubs[DECISIONS].listener_count == 0)
        await wait_for(lambda: server.hubs[DECISIONS].listener_count == 1)
        await risk_bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(accepted=False, reason_code="MAX_LOSS",
                                                                      sequence=40))
        await wait_for(lambda: seen == [1, 40])
    finally:
        await server.stop(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()
        await proxy.stop()

    assert bridge.gaps == 0 and notes == []


async def test_a_filtered_stream_whose_evicted_messages_it_would_have_got_is_still_data_loss():
    bus = Bus()
    task = asyncio.create_task(bus.run())
    hub = TopicHub(bus, Topic.ORDERS, replay_size=2)
    for seq, accepted in ((1, False), (2, False), (3, True), (4, True)):
        await bus.publish(Topic.ORDERS, trading_pb2.RiskDecision(accepted=accepted, sequence=seq))
    await bus.drain()
    rejections = risk_pb2.StreamDecisionsRequest(rejections_only=True, after_sequence=1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert hub.evicted_for(rejections) == 2
    with pytest.raises(MessagesLost):
        hub.attach(1, hub.evicted_for(rejections))
    replay, _ = hub.attach(2, hub.evicted_for(rejections))  # nothing it would have got is gone after 2
    assert [d.sequence for d in replay] == [3, 4]
