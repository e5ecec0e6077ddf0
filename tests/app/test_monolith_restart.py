"""A monolith restarted on the same database: risk counts the positions and orders the OMS rebuilt from the ledger.

Real parts: two monolith runs (synthetic market, paper broker) one after the other on one embedded PostgreSQL
database, manual orders through OrderService/PlaceOrder -> risk -> oms.
"""

from __future__ import annotations

import asyncio

import pytest

from services.app.config import AppSettings
from shared import rpc
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2, trading_pb2
from tests.notifier.test_monolith import place_once_priced

pytestmark = pytest.mark.slow


def settings(database: str) -> AppSettings:
    return AppSettings(source="synthetic", use_database=True, database_url=database, grpc_port=0, speed=60.0,
                       symbols=["SBIN-EQ"])


async def run_until(app, work) -> None:
    stop = asyncio.Event()

    async def body() -> None:
        try:
            await app.started.wait()
            await work()
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[body], stop=stop), 60)


async def test_after_a_restart_risk_counts_the_position_the_oms_rebuilt_from_the_ledger(database):
    from services.app.monolith import Monolith

    first = Monolith(settings(database), {"strategy": {"strategies": []}})

    async def buy_one() -> None:
        listed = await first.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        sbin = next(i for i in listed.instruments if i.symbol == "SBIN-EQ")
        await place_once_priced(first.bus, sbin)
        for _ in range(400):
            positions = await first.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
            if any(p.net_quantity == 1 for p in positions.positions):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the market order never filled")

    await run_until(first, buy_one)

    second = Monolith(settings(database), {"strategy": {"strategies": []}})
    seen: list[risk_pb2.GetRiskStateResponse] = []

    async def ask_risk() -> None:
        seen.append(await second.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest()))

    await run_until(second, ask_risk)

    (state,) = seen
    assert [(p.symbol, p.product, p.net_quantity) for p in state.positions if p.net_quantity] == [
        ("SBIN-EQ", trading_pb2.PRODUCT_MIS, 1)]
