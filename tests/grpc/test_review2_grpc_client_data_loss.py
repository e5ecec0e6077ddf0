"""The typed client's MessagesLost carries where the stream may go on from (the server's oldest-kept trailer)."""

from __future__ import annotations

import asyncio

import pytest

from shared import rpc
from shared.bus import Topic
from shared.client import NeoPulseClient
from shared.contracts import trading_pb2
from shared.errors import MessagesLost
from shared.grpc.config import GrpcSettings
from tests.grpc.conftest import start_server


async def test_data_loss_tells_the_typed_client_the_oldest_sequence_still_kept(bus):
    server = await start_server(bus, GrpcSettings(replay_size=4))
    for seq in range(1, 11):  # the ring keeps 7..10
        await bus.publish(Topic.ORDER_UPDATES, trading_pb2.OrderUpdate(internal_id=f"ORD-{seq}", sequence=seq))
    await bus.drain()
    assert server.hubs[rpc.method("OrderService", "StreamOrderUpdates")].oldest_kept == 7
    try:
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as client:
            with pytest.raises(MessagesLost) as lost:
                await asyncio.wait_for(anext(client.stream_order_updates(after_sequence=2)), 5)
    finally:
        await server.stop(0.2)

    assert lost.value.oldest_kept == 7
