"""The monolith's stop: the gRPC streams stay open until the modules have stopped, and carry what they published."""

from __future__ import annotations

import asyncio

import grpc

from services.app.config import AppSettings
from shared import rpc
from shared.contracts import ingestion_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import RiskRejected

UPDATES = rpc.method("OrderService", "StreamOrderUpdates")


async def test_order_updates_published_during_the_stop_reach_the_open_streams():
    """The monolith ended its streams (status OK) before the order path drained: the fill of an order being placed
    as the stop began never reached a StreamOrderUpdates follower, which was told it had everything."""
    from services.app.monolith import Monolith
    from services.oms.module import OmsModule

    app = Monolith(AppSettings(source="synthetic", use_database=False, grpc_port=0, speed=1.0,
                               symbols=["SBIN-EQ"]), {"strategy": {"strategies": []}})
    stop = asyncio.Event()
    run = asyncio.create_task(app.run(stop=stop))
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait([run, started], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert app.started.is_set()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}")
    seen: list[t.OrderUpdate] = []
    end: list[str] = []

    async def follow():
        call = channel.unary_stream(UPDATES, request_serializer=oms_pb2.StreamOrderUpdatesRequest.SerializeToString,
                                    response_deserializer=t.OrderUpdateBatch.FromString)
        stream = call(oms_pb2.StreamOrderUpdatesRequest(after_sequence=0))
        try:
            async for batch in stream:
                seen.extend(batch.updates)
            end.append("OK")
        except grpc.aio.AioRpcError as e:
            end.append(e.code().name)

    follower = asyncio.create_task(follow())
    try:
        bus = app.bus
        sbin = next(i for i in (await bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest()))
                    .instruments if i.symbol == "SBIN-EQ")
        oms = next(c for c in app.components if isinstance(c, OmsModule))
        original = oms.engine.broker.place_order

        async def slow_place(order):  # a placement under way as the stop begins
            await asyncio.sleep(2.0)
            return await original(order)

        placed = None
        for n in range(100):  # a market buy, once risk has a price
            order = t.OrderRequest(client_order_id=f"stop-{n}", token=sbin.token,
                                   exchange_segment=sbin.exchange_segment, symbol=sbin.symbol, side=t.SIDE_BUY,
                                   quantity=1, order_type=t.ORDER_TYPE_MARKET, product=t.PRODUCT_MIS,
                                   validity=t.VALIDITY_DAY, strategy_tag="MANUAL")
            if n == 0:
                await asyncio.sleep(1.0)
            oms.engine.broker.place_order = slow_place
            placing = asyncio.create_task(bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=order)))
            await asyncio.sleep(0.3)
            if placing.done() and isinstance(placing.exception(), RiskRejected):
                continue
            placed = order.client_order_id
            break
        assert placed
        stop.set()  # the stop begins while the order is being placed
        await asyncio.wait_for(run, 60)
        await asyncio.wait_for(follower, 10)
    finally:
        await channel.close()
        if not run.done():
            stop.set()
            await asyncio.wait_for(run, 60)
    final = oms.engine.lookup(placed)
    assert final is not None and final.status != t.ORDER_STATUS_PENDING_NEW
    got = [u for u in seen if u.client_order_id == placed]
    assert got, (f"the stream ended {end} and carried no update of order {placed}, which the OMS placed during "
                 f"the stop (final {t.OrderStatus.Name(final.status)} seq {final.sequence})")
