"""NeoPulseClient against a real GrpcServer on a real Bus: typed answers, typed errors, token auth."""

import asyncio

import pytest
from pydantic import SecretStr

from shared import errors, rpc
from shared.bus import Topic
from shared.client import NeoPulseClient, OutcomeUnknown
from shared.contracts import market_pb2, oms_pb2, risk_pb2, trading_pb2
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


async def test_a_place_order_cut_off_by_a_stop_is_an_unknown_outcome_whose_retry_is_refused_as_a_duplicate(bus):
    """The OMS acted (the order is booked) but the server stopped before it answered: the client must not be told
    to simply retry, and its retry with the id the error carries must not be a second order."""
    booked: list[str] = []
    answering = asyncio.Event()  # never set: the handler is still waiting for the book when the server stops

    async def place_order(req):
        cid = req.order.client_order_id
        if cid in booked:  # as the OMS does
            raise errors.RiskRejected("DUPLICATE_ORDER", f"client_order_id {cid} is already an order")
        booked.append(cid)
        await answering.wait()

    bus.handle(rpc.PLACE_ORDER, place_order)
    first = await start_server(bus)
    reliance = market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm")
    async with NeoPulseClient(f"127.0.0.1:{first.bound_port}") as client:
        call = asyncio.create_task(client.place_order(reliance, 1, 1, price_paise=250_000))
        await wait_for(lambda: len(booked) == 1)
        await first.stop(0.1)
        with pytest.raises(OutcomeUnknown) as cut_off:
            await call
    second = await start_server(bus)
    try:
        async with NeoPulseClient(f"127.0.0.1:{second.bound_port}") as client:
            with pytest.raises(errors.RiskRejected) as retried:
                await client.place_order(reliance, 1, 1, price_paise=250_000,
                                         client_order_id=cut_off.value.client_order_id)
    finally:
        await second.stop(0)

    assert cut_off.value.client_order_id == booked[0]
    assert f"client_order_id {booked[0]}" in str(cut_off.value) and "outcome is unknown" in str(cut_off.value)
    assert retried.value.reason_code == "DUPLICATE_ORDER" and booked == [cut_off.value.client_order_id]


async def test_an_order_the_oms_says_may_still_be_placed_reaches_the_client_as_an_unknown_outcome_with_its_id(bus):
    """Accepted by risk, not yet in the OMS's book when PlaceOrder stops waiting: the order may still go out. A plain
    RetryableError would tell the caller it did not act."""
    async def place_order(req):
        raise errors.OutcomeUnknown("order c-9 was accepted by risk but has not reached the OMS yet", "c-9")

    bus.handle(rpc.PLACE_ORDER, place_order)
    server = await start_server(bus)
    reliance = market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm")
    try:
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as client:
            with pytest.raises(OutcomeUnknown) as info:
                await client.place_order(reliance, 1, 1, price_paise=250_000, client_order_id="c-9")
    finally:
        await server.stop(0)

    assert info.value.client_order_id == "c-9" and "has not reached the OMS yet" in str(info.value)


def test_a_stopping_server_waits_for_the_slowest_acting_handler_in_the_monolith_and_split_processes():
    from services.app.split import acting_grace_s
    from services.oms.config import OmsSettings

    toml = {"oms": {"place_order_wait_s": 7.0}}

    assert acting_grace_s({}, 0.0) > OmsSettings().place_order_wait_s
    assert acting_grace_s(toml, GrpcSettings().shutdown_grace_s) > 7.0


async def test_a_server_whose_module_has_not_started_says_try_again_not_that_the_order_does_not_exist(bus):
    """A split process binds before its module registers its handlers (up to a minute, waiting for upstreams):
    'order ORD-1 does not exist' from a restarting OMS is a wrong answer, not a pause."""
    server = await start_server(bus, ready=False)
    try:
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as client:
            with pytest.raises(errors.RetryableError) as starting:
                await client.get_order(KNOWN_ORDER)
            register_test_handlers(bus)  # the module starts
            server.set_all_serving()
            order = await client.get_order(KNOWN_ORDER)
    finally:
        await server.stop(0)

    assert not isinstance(starting.value, errors.NotFound) and "starting" in str(starting.value)
    assert order.internal_id == KNOWN_ORDER


async def test_client_modifies_an_order_sending_only_the_terms_given_and_a_refusal_names_the_field(bus):
    asked = []

    async def modify_order(request):  # the OMS's ModifyOrder as the bus serves it (its checks: tests/oms)
        asked.append(request)
        if request.price_paise and not request.quantity:
            raise errors.InvalidInput("price_paise", "a MARKET order has no limit price; cancel it and place a "
                                                     "limit order")
        changed = trading_pb2.OrderRequest(quantity=request.quantity, price_paise=request.price_paise)
        return oms_pb2.ModifyOrderResponse(order=trading_pb2.OrderUpdate(internal_id=request.order_id,
                                                                         request=changed))

    bus.handle(rpc.MODIFY_ORDER, modify_order)
    server = await start_server(bus)
    try:
        async with NeoPulseClient(f"127.0.0.1:{server.bound_port}") as client:
            order = await client.modify_order(KNOWN_ORDER, quantity=20, price_paise=81_300)
            with pytest.raises(errors.InvalidInput) as refused:
                await client.modify_order(KNOWN_ORDER, price_paise=81_300)
    finally:
        await server.stop(0)

    assert [(r.order_id, r.quantity, r.price_paise, r.trigger_price_paise) for r in asked] == [
        (KNOWN_ORDER, 20, 81_300, 0), (KNOWN_ORDER, 0, 81_300, 0)]
    assert (order.internal_id, order.request.quantity, order.request.price_paise) == (KNOWN_ORDER, 20, 81_300)
    assert refused.value.field == "price_paise" and "has no limit price" in str(refused.value)
