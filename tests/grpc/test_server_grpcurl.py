"""The gRPC server seen through the real grpcurl: reflection, health, streams and status codes."""

import asyncio

from shared import rpc
from shared.bus import Topic
from shared.contracts import market_pb2
from shared.grpc.config import GrpcSettings
from tests.grpc.conftest import grpcurl, start_server, wait_for


async def test_list_shows_every_neopulse_service_with_health_and_reflection(addr):
    result = await grpcurl("-plaintext", addr, "list")

    assert result.code == 0, result.err
    services = set(result.out.split())
    assert {d.full_name for d in rpc.DESCRIPTORS.values()} <= services
    assert "grpc.health.v1.Health" in services


async def test_describe_order_service_lists_its_rpcs(addr):
    result = await grpcurl("-plaintext", addr, "describe", "neopulse.v1.OrderService")

    assert result.code == 0, result.err
    assert ("rpc PlaceOrder ( .neopulse.v1.PlaceOrderRequest ) returns ( .neopulse.v1.PlaceOrderResponse );"
            in result.out)
    assert "returns ( stream .neopulse.v1.OrderUpdateBatch )" in result.out


async def test_health_reports_serving_for_a_ready_service_and_overall(addr):
    one = await grpcurl("-plaintext", "-d", '{"service": "neopulse.v1.RiskService"}', addr,
                        "grpc.health.v1.Health/Check")
    overall = await grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check")

    assert one.json() == {"status": "SERVING"}
    assert overall.json() == {"status": "SERVING"}


async def test_health_reports_not_serving_until_the_module_is_ready(bus):
    server = await start_server(bus, ready=False)
    try:
        addr = f"127.0.0.1:{server.bound_port}"
        before = await grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check")
        server.set_all_serving()
        after = await grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check")
    finally:
        await server.stop(0)

    assert before.json() == {"status": "NOT_SERVING"}
    assert after.json() == {"status": "SERVING"}


async def test_unary_rpc_returns_what_the_bus_handler_answers(addr):
    result = await grpcurl("-plaintext", addr, "neopulse.v1.IngestionService/ListInstruments")

    assert result.code == 0, result.err
    assert result.json()["instruments"][0]["symbol"] == "RELIANCE-EQ"


async def test_stream_ticks_sends_only_the_requested_tokens_and_ends_cleanly_on_shutdown(bus, server, addr):
    call = asyncio.create_task(grpcurl("-plaintext", "-d", '{"tokens": [2885]}', addr,
                                       "neopulse.v1.IngestionService/StreamTicks"))
    hub = server.hubs[rpc.method("IngestionService", "StreamTicks")]
    await wait_for(lambda: hub.listener_count == 1)
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[
        market_pb2.Tick(token=2885, ltp_paise=250_000), market_pb2.Tick(token=11536, ltp_paise=400_000)]))
    bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(token=2885, ltp_paise=250_005)]))
    await bus.drain()
    await wait_for(lambda: hub.listener_count == 1 and not any(x.queue.qsize() for x in hub._listeners))

    await server.stop(2.0)
    result = await call

    assert result.code == 0, result.err
    assert '"ltp_paise": "250000"' in result.out and '"ltp_paise": "250005"' in result.out
    assert "400000" not in result.out


async def test_empty_order_id_is_invalid_argument_naming_the_field(addr):
    result = await grpcurl("-plaintext", "-d", '{"order_id": ""}', addr, "neopulse.v1.OrderService/GetOrder")

    assert "Code: InvalidArgument" in result.err
    assert "order_id: is empty" in result.err


async def test_unknown_order_id_is_not_found(addr):
    result = await grpcurl("-plaintext", "-d", '{"order_id": "NOPE"}', addr, "neopulse.v1.OrderService/GetOrder")

    assert "Code: NotFound" in result.err
    assert "order NOPE does not exist" in result.err


async def test_order_while_kill_switch_engaged_is_failed_precondition(addr):
    result = await grpcurl("-plaintext", "-d", '{"order": {"symbol": "SBIN-EQ"}}', addr,
                           "neopulse.v1.OrderService/PlaceOrder")

    assert "Code: FailedPrecondition" in result.err
    assert "kill switch" in result.err


async def test_unexpected_exception_is_internal_with_a_generic_message_and_no_traceback(addr):
    result = await grpcurl("-plaintext", "-d", '{"order_id": "ORD-1"}', addr, "neopulse.v1.OrderService/CancelOrder")

    assert "Code: Internal" in result.err
    assert "internal error; see the server log" in result.err
    assert "secret" not in result.err and "Traceback" not in result.err and "ledger.py" not in result.err


async def test_rpc_without_a_module_handler_is_unimplemented(addr):
    result = await grpcurl("-plaintext", addr, "neopulse.v1.StrategyService/ListStrategies")

    assert "Code: Unimplemented" in result.err


async def test_second_server_on_a_taken_port_fails_to_start(bus, server):
    from shared.grpc.server import GrpcServer

    other = GrpcServer(bus, ["RiskService"], GrpcSettings(), port=server.bound_port)
    try:
        await other.start()
        started = True
    except OSError:
        started = False

    assert started is False
