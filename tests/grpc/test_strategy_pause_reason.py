"""ListStrategies through the real grpcurl says why a strategy is paused, who paused it and when: NeoPulse at start
(positions not restorable from the OMS's orders) or an operator (PauseStrategy)."""

import asyncio
import json

import pytest

from tests.grpc.conftest import grpcurl, start_server
from tests.strategy.test_restore import TODAY, orders_filling_the_read, restarted_module


@pytest.fixture
async def addr(monkeypatch):
    """A strategy module that started paused (its orders of today fill the ListOrders read), behind a gRPC server."""
    oms = await orders_filling_the_read(monkeypatch)
    module, _ = await restarted_module(oms)
    bus_task = asyncio.create_task(module.bus.run())
    server = await start_server(module.bus)
    yield f"127.0.0.1:{server.bound_port}"
    await server.stop(0.5)
    bus_task.cancel()
    await asyncio.gather(bus_task, return_exceptions=True)


async def call(addr: str, method: str, request: dict | None = None) -> dict:
    result = await grpcurl("-plaintext", "-d", json.dumps(request or {}), addr, f"neopulse.v1.StrategyService/{method}")
    assert result.code == 0, result.err
    return result.json()


async def test_list_strategies_says_neopulse_paused_it_at_start_and_why(addr):
    (info,) = (await call(addr, "ListStrategies"))["strategies"]

    assert (info["paused"], info["paused_by"], info["paused_at_ns"]) == (True, "PAUSED_BY_NEOPULSE",
                                                                          str(TODAY + 3600 * 10**9))
    assert info["pause_reason"].startswith("its positions could not be restored at start: its orders were read "
                                           "with ListOrders(limit=3) and the reply was full")


async def test_list_strategies_says_an_operator_paused_it_and_why_after_a_resume_and_a_pause(addr):
    resumed = (await call(addr, "ResumeStrategy", {"name": "mom"}))["strategy"]
    await call(addr, "PauseStrategy", {"name": "mom", "reason": "earnings at 14:00"})

    (info,) = (await call(addr, "ListStrategies"))["strategies"]

    assert "pause_reason" not in resumed and "paused_by" not in resumed  # cleared: proto3 JSON omits defaults
    assert (info["paused"], info["paused_by"], info["pause_reason"]) == (True, "PAUSED_BY_OPERATOR",
                                                                          "earnings at 14:00")
