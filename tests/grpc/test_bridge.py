"""Split-mode bridges between two real buses over a real gRPC server: streams, proxies, notifications."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from shared import errors, rpc
from shared.bus import Bus, Topic
from shared.contracts import notifier_pb2, oms_pb2, ops_pb2, trading_pb2
from shared.grpc.bridge import (
    Backoff,
    NotificationForwarder,
    StreamBridge,
    error_from_rpc,
    install_unary_proxy,
    open_channel,
)
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer
from shared.ports import free_loopback_port as free_port
from tests.grpc.conftest import KNOWN_ORDER, register_test_handlers, wait_for


@pytest.fixture
async def running():
    """Start buses on demand; every one is stopped at the end."""
    tasks = []

    def start() -> Bus:
        bus = Bus()
        tasks.append(asyncio.create_task(bus.run()))
        return bus

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def serve(bus: Bus, services: list[str], port: int = 0) -> GrpcServer:
    server = GrpcServer(bus, services, GrpcSettings(), port=port)
    await server.start()
    server.set_all_serving()
    return server


UPDATES = rpc.method("OrderService", "StreamOrderUpdates")


def update(seq: int) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq)


async def test_stream_bridge_resumes_after_upstream_restart_without_duplicates(running):
    upstream, local = running(), running()
    seen: list[int] = []

    async def collect(msg):
        seen.append(msg.sequence)

    local.subscribe(Topic.ORDER_UPDATES, "collector", collect)
    first = await serve(upstream, ["OrderService"])
    port = first.bound_port
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    bridge = StreamBridge(local, channel, rpc.method("OrderService", "StreamOrderUpdates"),
                          backoff=Backoff(0.05, 0.2))
    task = asyncio.create_task(bridge.run())
    try:
        await asyncio.wait_for(bridge.connected.wait(), 5)
        await wait_for(lambda: first.hubs[rpc.method("OrderService", "StreamOrderUpdates")].listener_count == 1)
        for seq in (1, 2, 3):
            await upstream.publish(Topic.ORDER_UPDATES, update(seq))
        await wait_for(lambda: seen == [1, 2, 3])
        await first.stop(1.0)

        restarted_bus = running()
        second = await serve(restarted_bus, ["OrderService"], port=port)
        for seq in (2, 3, 4):  # the restarted upstream repeats 2 and 3 before it reaches new work
            await restarted_bus.publish(Topic.ORDER_UPDATES, update(seq))
        await wait_for(lambda: seen[-1:] == [4])
        await restarted_bus.publish(Topic.ORDER_UPDATES, update(5))
        await wait_for(lambda: seen[-1:] == [5])
        await second.stop(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()

    assert seen == [1, 2, 3, 4, 5]


async def test_a_gated_bridge_keeps_what_arrives_before_the_local_module_subscribed(running):
    """Split mode opens the streams, then starts the module (which subscribes): a decision in between is not lost."""
    upstream, local = running(), running()
    server = await serve(upstream, ["OrderService"])
    channel = open_channel(f"127.0.0.1:{server.bound_port}", GrpcSettings())
    method = rpc.method("OrderService", "StreamOrderUpdates")
    started = asyncio.Event()
    bridge = StreamBridge(local, channel, method, gate=started)
    task = asyncio.create_task(bridge.run())
    seen: list[int] = []

    async def collect(msg):
        seen.append(msg.sequence)

    try:
        await asyncio.wait_for(bridge.connected.wait(), 5)
        await wait_for(lambda: server.hubs[method].listener_count == 1)
        await upstream.publish(Topic.ORDER_UPDATES, update(1))  # the module is still starting
        await asyncio.sleep(0.1)
        local.subscribe(Topic.ORDER_UPDATES, "module", collect)  # its start() subscribes
        started.set()
        await upstream.publish(Topic.ORDER_UPDATES, update(2))
        await wait_for(lambda: seen == [1, 2])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await server.stop(0)


@pytest.fixture
async def proxied(running):
    upstream, local = running(), running()
    register_test_handlers(upstream)
    server = await serve(upstream, ["OrderService"])
    channel = open_channel(f"127.0.0.1:{server.bound_port}", GrpcSettings())
    for method in (rpc.GET_ORDER, rpc.PLACE_ORDER, rpc.CANCEL_ORDER, rpc.MODIFY_ORDER):
        install_unary_proxy(local, channel, method)
    yield local
    await channel.close()
    await server.stop(0)


async def test_unary_proxy_returns_the_remote_answer(proxied):
    reply = await proxied.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=KNOWN_ORDER))

    assert reply.order.internal_id == KNOWN_ORDER


async def test_unary_proxy_raises_invalid_input_with_the_remote_field(proxied):
    with pytest.raises(errors.InvalidInput) as caught:
        await proxied.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=""))

    assert caught.value.field == "order_id"
    assert str(caught.value) == "order_id: is empty; pass the internal_id from ListOrders"


async def test_unary_proxy_raises_not_found_for_an_unknown_id(proxied):
    with pytest.raises(errors.NotFound, match="order NOPE does not exist"):
        await proxied.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id="NOPE"))


async def test_unary_proxy_raises_trading_halted_with_its_reason_code(proxied):
    with pytest.raises(errors.TradingHalted) as caught:
        await proxied.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest())

    assert caught.value.reason_code == "KILL_SWITCH"


async def test_unary_proxy_raises_the_order_state_error_and_not_sent_the_remote_raised_not_a_risk_refusal(proxied):
    """Both are FAILED_PRECONDITION on the wire, as a risk refusal is: the trailer says which (a client catching
    RiskRejected must not take a TRADED order's refused change for risk's word)."""
    with pytest.raises(errors.OrderStateError, match="already TRADED"):
        await proxied.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id=KNOWN_ORDER, quantity=2))
    with pytest.raises(errors.NotSent, match="was not sent"):
        await proxied.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id="other", quantity=2))


async def test_unary_proxy_turns_a_remote_crash_into_a_generic_error(proxied):
    with pytest.raises(errors.NeoPulseError) as caught:
        await proxied.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=KNOWN_ORDER))

    assert str(caught.value) == "internal error; see the server log"


async def test_unary_proxy_to_an_unreachable_server_is_retryable(running):
    local = running()
    channel = open_channel("127.0.0.1:1", GrpcSettings())
    install_unary_proxy(local, channel, rpc.LIST_ORDERS, timeout_s=2.0)
    try:
        with pytest.raises(errors.RetryableError):
            await local.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest())
    finally:
        await channel.close()


def notifier_taking(bus: Bus) -> list[str]:
    """A NotifierService/Notify on `bus` that takes every notification; the titles it took."""
    received: list[str] = []

    async def notify(req):
        received.append(req.notification.title)
        return notifier_pb2.NotifyResponse(accepted=True)

    bus.handle(rpc.NOTIFY, notify)
    return received


async def test_local_notifications_reach_the_remote_notifier(running):
    notifier_bus, local = running(), running()
    received = notifier_taking(notifier_bus)
    server = await serve(notifier_bus, ["NotifierService"])
    channel = open_channel(f"127.0.0.1:{server.bound_port}", GrpcSettings())
    forwarder = NotificationForwarder(local, channel)
    try:
        await local.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title="Order filled"))
        await wait_for(lambda: forwarder.forwarded == 1)
    finally:
        await channel.close()
        await server.stop(0)

    assert received == ["Order filled"]


async def test_notifications_published_while_the_notifier_is_down_reach_it_once_it_serves(running):
    """A notifier restarting (split mode: its process replaced) must not cost the fills and rejections published
    meanwhile: they are held and delivered when it serves again, oldest first."""
    notifier_bus, local = running(), running()
    received = notifier_taking(notifier_bus)
    port = free_port()
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    forwarder = NotificationForwarder(local, channel, backoff=(0.05, 0.2))
    server = None
    try:
        for title in ("Order placed", "Order filled", "Risk REDUCING"):
            await local.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title=title))
        await wait_for(lambda: forwarder.down)
        await asyncio.sleep(1.5)  # longer than the few tries a send used to get
        server = await serve(notifier_bus, ["NotifierService"], port=port)
        await wait_for(lambda: forwarder.forwarded == 3)
    finally:
        await channel.close()
        if server is not None:
            await server.stop(0)

    assert received == ["Order placed", "Order filled", "Risk REDUCING"]
    assert forwarder.failed == 0 and not forwarder.down


async def test_a_notification_held_longer_than_max_age_s_is_dropped_and_counted(running):
    """An alert an hour late misleads more than its absence: a notifier down that long gets what came since."""
    notifier_bus, local = running(), running()
    received = notifier_taking(notifier_bus)
    port = free_port()
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    forwarder = NotificationForwarder(local, channel, backoff=(0.05, 0.1), max_age_s=0.5)
    server = None
    try:
        await local.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title="Order filled"))
        await wait_for(lambda: forwarder.down)
        await asyncio.sleep(0.8)  # past max_age_s while the notifier is away
        server = await serve(notifier_bus, ["NotifierService"], port=port)
        await local.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title="Risk REDUCING"))
        await wait_for(lambda: forwarder.forwarded == 1)
    finally:
        await channel.close()
        if server is not None:
            await server.stop(0)

    assert received == ["Risk REDUCING"] and forwarder.failed == 1


async def test_a_hung_notifier_never_holds_up_whoever_publishes_notifications(running):
    """Each send to a notifier that accepts the call but never answers takes its timeouts; publishing
    (risk's state changes, say) must not wait for them."""
    notifier_bus, local = running(), running()

    async def hang(req):
        await asyncio.Event().wait()

    notifier_bus.handle(rpc.NOTIFY, hang)
    server = await serve(notifier_bus, ["NotifierService"])
    channel = open_channel(f"127.0.0.1:{server.bound_port}", GrpcSettings())
    local.default_maxsize = 5  # a small bus queue: it would fill at once if the handler waited for the sends
    forwarder = NotificationForwarder(local, channel, timeout_s=0.2, max_pending=3)
    try:
        started = asyncio.get_running_loop().time()
        for i in range(50):
            await asyncio.wait_for(local.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(title=f"n{i}")), 1)
        took = asyncio.get_running_loop().time() - started
    finally:
        await channel.close()
        await server.stop(0)

    assert took < 1.0 and forwarder.failed >= 40  # the oldest were shed, counted




async def test_unary_proxy_works_over_tls_with_the_shared_token(running, cert):
    from pydantic import SecretStr

    from shared.grpc.auth import auth_metadata

    settings = GrpcSettings(auth_token=SecretStr("split-token"), tls_cert_file=cert[0], tls_key_file=cert[1])
    upstream, local, anonymous = running(), running(), running()
    register_test_handlers(upstream)
    server = GrpcServer(upstream, ["OrderService"], settings)
    await server.start()
    server.set_all_serving()
    channel = open_channel(f"127.0.0.1:{server.bound_port}", settings)
    install_unary_proxy(local, channel, rpc.GET_ORDER, auth_metadata("split-token"))
    install_unary_proxy(anonymous, channel, rpc.GET_ORDER)
    try:
        reply = await local.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=KNOWN_ORDER))
        with pytest.raises(errors.ConfigError, match="auth_token"):
            await anonymous.call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=KNOWN_ORDER))
    finally:
        await channel.close()
        await server.stop(0)

    assert reply.order.internal_id == KNOWN_ORDER


def _timeout(method: str, code: grpc.StatusCode = grpc.StatusCode.DEADLINE_EXCEEDED, trailers=()):
    err = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=code.name)
    return error_from_rpc(method, err)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
@pytest.mark.parametrize("method", [rpc.PLACE_ORDER, rpc.SUBMIT_ORDER, rpc.SET_KILL_SWITCH, "PlaceOrder"])
def test_an_order_call_cut_off_by_a_stop_or_crash_says_its_outcome_is_unknown(method, code):
    error = _timeout(method, code)
    assert isinstance(error, errors.RetryableError) and "outcome is unknown" in str(error)
    assert "retried or try again later" not in str(error)


def test_an_order_call_refused_before_acting_is_simply_retryable():
    error = _timeout(rpc.PLACE_ORDER, grpc.StatusCode.UNAVAILABLE, (("neopulse-error", "RetryableError"),))
    assert isinstance(error, errors.RetryableError) and "outcome" not in str(error)


def test_a_timed_out_order_call_says_its_outcome_is_unknown_instead_of_inviting_a_retry():
    error = _timeout(rpc.PLACE_ORDER)
    assert isinstance(error, errors.RetryableError) and "outcome is unknown" in str(error)
    assert "same client_order_id" in str(error)


def test_a_timed_out_read_is_simply_retryable():
    error = _timeout(rpc.LIST_ORDERS)
    assert isinstance(error, errors.RetryableError) and "outcome" not in str(error)


def test_channels_look_for_a_restarted_upstream_at_least_every_five_seconds():
    """gRPC's own reconnect backoff (to 120 s by default) would override the bridges' and fail every call
    in between with UNAVAILABLE (measured: 24.5 s to reconnect after a 45 s outage)."""
    options = dict(GrpcSettings().channel_options())

    assert options["grpc.max_reconnect_backoff_ms"] <= 5_000


@contextlib.asynccontextmanager
async def updates_bridged(local: Bus, port: int, backoff: Backoff) -> AsyncIterator[tuple[StreamBridge, list[int]]]:
    """A running StreamOrderUpdates bridge from 127.0.0.1:`port` into `local`, and the sequences it delivered."""
    seen: list[int] = []

    async def collect(msg):
        seen.append(msg.sequence)

    local.subscribe(Topic.ORDER_UPDATES, "collector", collect)
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    bridge = StreamBridge(local, channel, UPDATES, backoff=backoff)
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge, seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()


async def test_a_bridge_that_got_nothing_yet_still_gets_what_a_restarted_upstream_published_meanwhile(running):
    """'Live from now' is where the first connection found the upstream: a reconnect replays from there."""
    upstream, local = running(), running()
    first = await serve(upstream, ["OrderService"])
    async with updates_bridged(local, first.bound_port, Backoff(0.3, 0.3)) as (bridge, seen):
        await asyncio.wait_for(bridge.connected.wait(), 5)
        await first.stop(1.0)  # nothing was published before the restart

        restarted_bus = running()
        second = await serve(restarted_bus, ["OrderService"], port=first.bound_port)
        await restarted_bus.publish(Topic.ORDER_UPDATES, update(1))  # before the bridge is back
        await wait_for(lambda: second.hubs[UPDATES].listener_count == 1)
        await restarted_bus.publish(Topic.ORDER_UPDATES, update(2))
        await wait_for(lambda: seen[-1:] == [2])
        await second.stop(0)

    assert seen == [1, 2]


async def _restarted_below(running, resume_from_records: int, previous: int | None) -> tuple[list[int], list[str]]:
    """An OrderService that started numbering at 500, below where the bridge resumes: (sequences delivered,
    notifications). `resume_from_records`: the bridge resumes from its own records (a restarted OMS); 0, it first
    streams from an earlier process numbered from 1000 (its clock ahead), which stops cleanly after 1001 and 1002."""
    local = running()
    seen: list[int] = []
    notes: list[str] = []

    async def collect(msg):
        seen.append(msg.sequence)

    async def note(msg):
        notes.append(msg.title)

    local.subscribe(Topic.ORDER_UPDATES, "collector", collect)
    local.subscribe(Topic.NOTIFICATIONS, "notes", note)
    method = rpc.method("OrderService", "StreamOrderUpdates")
    upstream = running()
    server = await serve(upstream, ["OrderService"])
    port = server.bound_port
    channel = open_channel(f"127.0.0.1:{port}", GrpcSettings())
    bridge = StreamBridge(local, channel, method, backoff=Backoff(0.05, 0.2))
    bridge.last_sequence = resume_from_records
    task = asyncio.create_task(bridge.run())
    try:
        if not resume_from_records:
            server.hubs[method].started_at = 1000
            await wait_for(lambda: server.hubs[method].listener_count == 1)
            for seq in (1001, 1002):
                await upstream.publish(Topic.ORDER_UPDATES, update(seq))
            await wait_for(lambda: seen == [1001, 1002])
            await server.stop(1.0)
            upstream = running()
            server = await serve(upstream, ["OrderService"], port=port)
        server.hubs[method].started_at = 500
        server.hubs[method].previous = None if previous is None else {"all": previous}
        await upstream.publish(Topic.ORDER_UPDATES, update(501))  # before the bridge is there
        await wait_for(lambda: server.hubs[method].listener_count == 1)
        await upstream.publish(Topic.ORDER_UPDATES, update(502))
        await wait_for(lambda: seen[-1:] == [502])
        await server.stop(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
    return seen, notes


async def test_an_upstream_restarted_on_a_clock_behind_the_last_one_is_streamed_from_its_start(running):
    """Sequences start at a process's start time: one whose clock is behind its predecessor's (stepped back, another
    host) numbered below the resume point, and all it published up to there (orders, fills) was dropped as seen."""
    seen, notes = await _restarted_below(running, resume_from_records=0, previous=1002)

    assert seen == [1001, 1002, 501, 502]
    assert notes == []  # the one before ended the stream cleanly: nothing lost


async def test_a_bridge_resuming_from_its_records_takes_all_an_upstream_numbering_below_them_published(running):
    seen, notes = await _restarted_below(running, resume_from_records=1002, previous=1002)

    assert seen == [501, 502]
    assert notes == []  # its earlier processes got to 1002: all had arrived


async def test_an_upstream_numbering_below_the_resume_point_keeping_no_record_may_have_lost_some(running):
    seen, notes = await _restarted_below(running, resume_from_records=1002, previous=None)

    assert seen == [501, 502]
    assert notes == ["Order-path messages may have been lost between processes"]


async def test_a_resume_point_the_running_upstream_gave_is_not_streamed_again(running):
    """A restarted OMS resumes from its ledger's last decision, which the risk process still running published:
    not taken for a point from an earlier process numbering above this one."""
    upstream, local = running(), running()
    seen: list[int] = []

    async def collect(msg):
        seen.append(msg.sequence)

    local.subscribe(Topic.ORDER_UPDATES, "collector", collect)
    method = rpc.method("OrderService", "StreamOrderUpdates")
    server = await serve(upstream, ["OrderService"])
    server.hubs[method].started_at = 1000
    for seq in (1001, 1002):
        await upstream.publish(Topic.ORDER_UPDATES, update(seq))
    channel = open_channel(f"127.0.0.1:{server.bound_port}", GrpcSettings())
    bridge = StreamBridge(local, channel, method, backoff=Backoff(0.05, 0.2))
    bridge.last_sequence = 1001
    task = asyncio.create_task(bridge.run())
    try:
        await wait_for(lambda: seen == [1002])
        await upstream.publish(Topic.ORDER_UPDATES, update(1003))
        await wait_for(lambda: seen[-1:] == [1003])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await server.stop(0)

    assert seen == [1002, 1003]


async def test_a_backoff_told_the_upstream_serves_retries_at_once():
    """A split process starts its module once its order-path streams are open: the bridge must not sit out a
    backoff that grew while the upstream was not listening yet."""
    backoff = Backoff(first_s=30, max_s=30)
    waiting = asyncio.create_task(backoff.wait())
    await asyncio.sleep(0.05)

    backoff.retry_now()

    await asyncio.wait_for(waiting, 5)
    assert backoff.next_s == 30


async def test_a_stream_first_asked_for_before_its_upstream_listened_gets_all_that_upstream_published(running):
    """A first connection is live from that point. A bridge whose try found no upstream listening tried again seconds
    later, and what the upstream published in between reached no one: the notifier, started before the OMS, missed
    its first fills. All that upstream published came after the bridge first asked: it now takes all of it."""
    upstream, local, port = running(), running(), free_port()
    async with updates_bridged(local, port, Backoff(3, 3)) as (bridge, seen):
        await asyncio.sleep(0.5)  # refused: nothing listens yet
        server = await serve(upstream, ["OrderService"], port=port)
        for seq in (1, 2):  # before the bridge's next try
            await upstream.publish(Topic.ORDER_UPDATES, update(seq))
        await asyncio.wait_for(bridge.connected.wait(), 10)
        await upstream.publish(Topic.ORDER_UPDATES, update(3))
        await wait_for(lambda: seen[-1:] == [3])
        await server.stop(0)

    assert seen == [1, 2, 3]


async def test_a_stream_whose_first_try_failed_gets_only_what_its_upstream_published_since_it_first_asked(running):
    """The rewind after a failed first try streamed the upstream's whole ring: a notifier restarted beside an OMS
    running all day, its first try failed, sent every fill of the day again. (The upstream's module publishes here
    before its server listens, so that the first try fails while it runs.)"""
    upstream, local, port = running(), running(), free_port()
    server = GrpcServer(upstream, ["OrderService"], GrpcSettings(), port=port)  # its hubs keep what is published
    for seq in (1, 2):  # before the bridge first asks
        await upstream.publish(Topic.ORDER_UPDATES, update(seq))
    assert await upstream.drain()
    async with updates_bridged(local, port, Backoff(1, 1)) as (bridge, seen):
        await wait_for(lambda: bridge.last_error)  # refused: not listening yet
        await upstream.publish(Topic.ORDER_UPDATES, update(3))  # after it asked, before it connected
        await server.start()
        server.set_all_serving()
        await asyncio.wait_for(bridge.connected.wait(), 10)
        await upstream.publish(Topic.ORDER_UPDATES, update(4))
        await wait_for(lambda: seen[-1:] == [4])
        await server.stop(0)

    assert seen == [3, 4]


async def test_a_backoff_cancelled_as_it_is_told_to_retry_is_cancelled_all_the_same():
    """asyncio.wait_for returned the finished wait instead (gh-86296): the bridge went on retrying, and the split
    process that cancelled it to exit hung."""
    backoff = Backoff(first_s=30, max_s=30)
    waiting = asyncio.create_task(backoff.wait())
    await asyncio.sleep(0.05)

    backoff.retry_now()
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
