"""A stream resumed from a sequence an earlier process of the server gave: DATA_LOSS when that process published more
after it (oms.proto: a resume point no longer buffered is DATA_LOSS), never a silent gap; a clean resume when its
record shows the client had it all. Split mode's bridges check restarts themselves and are served as before."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.app.wiring import start_grpc
from services.oms.ledger_pg import PgLedger
from shared import rpc
from shared.bus import Bus, Topic
from shared.client import NeoPulseClient
from shared.contracts import trading_pb2
from shared.errors import MessagesLost
from shared.grpc.server import GrpcServer
from tests.db.helpers import new_order
from tests.grpc.conftest import start_server, wait_for
from tests.grpc.test_split_restart import Restarting

UPDATES = rpc.method("OrderService", "StreamOrderUpdates")


def restarted(server: GrpcServer, previous: int | None, started_at: int) -> None:
    """What split mode's OMS declares: how far its earlier processes got (its ledger), where this one numbers from."""
    hub = server.hubs[UPDATES]
    hub.previous, hub.started_at = ({"all": previous} if previous is not None else None), started_at


async def first_update(server: GrpcServer, after_sequence: int) -> trading_pb2.OrderUpdate:
    async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as client:
        stream = client.stream_order_updates(after_sequence=after_sequence)
        try:
            return await asyncio.wait_for(anext(stream), 5)
        finally:
            await stream.aclose()


async def test_a_client_resuming_from_before_a_restart_it_missed_messages_of_is_told_data_loss(bus):
    server = await start_server(bus)
    restarted(server, previous=105, started_at=200)
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id="new", sequence=201))
    await bus.drain()
    try:
        with pytest.raises(MessagesLost, match="earlier process of this server, which got to 105"):
            await first_update(server, after_sequence=102)  # 103..105 died with the earlier process
    finally:
        await server.stop(0.2)


async def test_a_client_that_had_all_an_earlier_process_published_resumes_without_loss(bus):
    server = await start_server(bus)
    restarted(server, previous=105, started_at=200)
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id="new", sequence=201))
    await bus.drain()
    try:
        first = await first_update(server, after_sequence=105)
    finally:
        await server.stop(0.2)

    assert first.sequence == 201


async def test_a_bridge_resuming_across_a_clean_restart_of_an_upstream_without_record_reports_no_loss():
    """The bridge knows what the server cannot: its stream ended cleanly, so it had all the earlier process sent.
    Refused with DATA_LOSS, it would notify a loss at every clean restart of such an upstream."""
    rig = Restarting(UPDATES)
    try:
        await rig.start(started_at=100)
        await rig.publish(trading_pb2.OrderUpdate(internal_id="a", sequence=101))
        await wait_for(lambda: rig.seen == [101])
        assert rig.upstream is not None
        await rig.upstream[1].stop(1.0)  # every stream ends after it had all
        await rig.start_upstream(previous=None, started_at=200)
        await rig.attached()
        await rig.publish(trading_pb2.OrderUpdate(internal_id="b", sequence=201))
        await wait_for(lambda: rig.seen == [101, 201])
    finally:
        await rig.close()

    assert (rig.bridge.gaps, rig.notes) == (0, [])


async def test_the_monolith_order_stream_refuses_a_resume_point_from_before_it_started_without_a_record():
    """No ledger record (no database): what the process before published after the client's point is unknown."""
    bus = Bus()
    task = asyncio.create_task(bus.run())
    server, _ = await start_grpc(bus, {}, 0)
    server.set_all_serving()
    try:
        with pytest.raises(MessagesLost, match="kept no record"):
            await first_update(server, after_sequence=server.hubs[UPDATES].started_at - 1_000)
    finally:
        await server.stop(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def monolith_server(database):
    """The monolith's server over a ledger whose earlier process recorded up to sequence 105; one update since."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    await PgLedger(pool).insert_new(new_order(str(uuid.uuid4()), "sig-1", sequence=105), {})
    bus = Bus()
    task = asyncio.create_task(bus.run())
    server, _ = await start_grpc(bus, {}, 0, ledger=PgLedger(pool))
    server.set_all_serving()
    await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(
        internal_id="new", sequence=server.hubs[UPDATES].started_at + 1))
    await bus.drain()
    yield server
    await server.stop(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pool.close()


async def test_the_monolith_order_stream_resumes_after_the_last_sequence_its_ledger_recorded(monolith_server):
    first = await first_update(monolith_server, after_sequence=105)

    assert first.sequence == monolith_server.hubs[UPDATES].started_at + 1


async def test_the_monolith_order_stream_is_data_loss_before_the_last_sequence_its_ledger_recorded(monolith_server):
    with pytest.raises(MessagesLost, match="got to 105"):
        await first_update(monolith_server, after_sequence=104)


async def test_the_first_client_of_a_quiet_process_is_told_of_what_a_crash_lost():
    """Connected before anything was published, it was told neopulse-sequence 0 and could only resume with 0 or -1,
    neither checked against the earlier process's record: the fill published before the crash was a silent gap."""
    from shared.bus import Bus, Topic
    from shared.contracts import oms_pb2
    from shared.errors import MessagesLost
    from shared.grpc.hub import TopicHub
    from shared.grpc.servicers import SEQUENCE_KEY, stream_headers

    bus = Bus()
    task = asyncio.create_task(bus.run())
    try:
        old = TopicHub(bus, Topic.ORDER_UPDATES, 100)
        old.previous, old.started_at = {"all": 0}, 1000
        request = oms_pb2.StreamOrderUpdatesRequest()
        old.attach(0, request=request)
        told = int(dict(stream_headers(old, request, old.oldest_kept))[SEQUENCE_KEY])
        old.unsubscribe()  # it published 1001, recorded in its ledger, and crashed before the stream carried it
        new = TopicHub(bus, Topic.ORDER_UPDATES, 100)
        new.previous, new.started_at = {"all": 1001}, 2000

        with pytest.raises(MessagesLost):
            new.attach(told, request=oms_pb2.StreamOrderUpdatesRequest(after_sequence=told))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
