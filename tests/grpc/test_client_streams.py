"""NeoPulseClient's streams against a real GrpcServer: a stream the caller stops reading ends on the server too."""

import asyncio

from shared import rpc
from shared.bus import Topic
from shared.client import NeoPulseClient
from shared.contracts import trading_pb2
from tests.grpc.conftest import wait_for


async def test_closing_an_order_update_stream_ends_it_on_the_server_while_the_client_stays_open(bus, server, addr):
    """aclose() (or leaving an `async for`) left the RPC running until the channel closed: the server kept a listener
    queueing order updates nobody read until its queue filled."""
    hub = server.hubs[rpc.method("OrderService", "StreamOrderUpdates")]
    async with NeoPulseClient(addr) as client:
        updates = client.stream_order_updates()
        first = asyncio.ensure_future(anext(updates))
        await wait_for(lambda: hub.listener_count == 1)
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id="ORD-1", sequence=1))
        got = await asyncio.wait_for(first, 5)
        await updates.aclose()

        await wait_for(lambda: hub.listener_count == 0, 2)

    assert got.sequence == 1
