"""NeoPulseClient against a real GrpcServer on a real Bus: typed answers, typed errors, token auth."""

import asyncio

import pytest
from pydantic import SecretStr

from shared import errors, rpc
from shared.bus import Topic
from shared.client import NeoPulseClient
from shared.contracts import market_pb2, risk_pb2
from shared.grpc.config import GrpcSettings
from tests.grpc.conftest import KNOWN_ORDER, register_test_handlers, start_server, wait_for


async def test_client_lists_instruments(addr):
    async with NeoPulseClient(addr) as client:
        instruments = await client.list_instruments()

    assert [i.symbol for i in instruments] == ["RELIANCE-EQ"]


async def test_client_raises_not_found_for_an_unknown_order(addr):
    async with NeoPulseClient(addr) as client:
        with pytest.raises(errors.NotFound, match="order NOPE does not exist"):
            await client.get_order("NOPE")


async def test_client_gets_a_known_order(addr):
    async with NeoPulseClient(addr) as client:
        order = await client.get_order(KNOWN_ORDER)

    assert order.internal_id == KNOWN_ORDER


async def test_client_engages_the_kill_switch(addr):
    async with NeoPulseClient(addr) as client:
        state = await client.set_kill_switch(True, reason="test")

    assert state == risk_pb2.TRADING_STATE_HALTED


async def test_client_streams_ticks_one_by_one(bus, server, addr):
    hub = server.hubs[rpc.method("IngestionService", "StreamTicks")]
    async with NeoPulseClient(addr) as client:
        ticks = client.stream_ticks([2885])
        first = asyncio.ensure_future(anext(ticks))
        await wait_for(lambda: hub.listener_count == 1)
        bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[
            market_pb2.Tick(token=11536, ltp_paise=1), market_pb2.Tick(token=2885, ltp_paise=250_000)]))
        tick = await asyncio.wait_for(first, 5)
        await ticks.aclose()

    assert (tick.token, tick.ltp_paise) == (2885, 250_000)


async def test_client_with_the_token_passes_auth(bus):
    register_test_handlers(bus)
    server = await start_server(bus, GrpcSettings(auth_token=SecretStr("tok")))
    try:
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}", token="tok") as client:
            instruments = await client.list_instruments()
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as anonymous:
            with pytest.raises(errors.ConfigError, match="refused our token"):
                await anonymous.list_instruments()
    finally:
        await server.stop(0)

    assert len(instruments) == 1


async def test_each_rpc_is_counted_by_method_and_status_code(addr):
    from prometheus_client import REGISTRY

    labels = {"method": rpc.GET_ORDER, "code": "NOT_FOUND"}
    before = REGISTRY.get_sample_value("neopulse_grpc_requests_total", labels) or 0
    async with NeoPulseClient(addr) as client:
        with pytest.raises(errors.NotFound):
            await client.get_order("NOPE")

    assert REGISTRY.get_sample_value("neopulse_grpc_requests_total", labels) == before + 1
    assert REGISTRY.get_sample_value("neopulse_grpc_request_duration_seconds_count", labels) >= 1
