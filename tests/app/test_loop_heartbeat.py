"""The event loop's heartbeat (shared.runtime.heartbeat): the monolith and every split process stamp
neopulse_loop_heartbeat_timestamp_seconds from their loop while their modules run, and set it back to 0 when they
stop. /metrics answers from a thread even while the loop is blocked; NeoPulseEventLoopStuck reads the stamp."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from services.app.config import AppSettings
from services.app.split import SplitProcess, SplitSettings
from shared import runtime
from shared.grpc.config import GrpcSettings
from tests.helpers import eventually

pytestmark = pytest.mark.slow


def stamp() -> float:
    """What /metrics shows for the heartbeat now."""
    return REGISTRY.get_sample_value("neopulse_loop_heartbeat_timestamp_seconds") or 0.0


async def a_second_beat() -> float:
    """The stamp after the one seen first: the loop went on stamping."""
    first = stamp()
    await eventually(lambda: stamp() > first, within=3 * runtime.HEARTBEAT_S, every=0.05)
    return stamp()


async def test_a_running_monolith_stamps_its_loop_heartbeat_every_second():
    from services.app.monolith import Monolith

    app = Monolith(AppSettings(source="synthetic", use_database=False, grpc_port=0, symbols=["SBIN-EQ"]),
                   {"strategy": {"strategies": []}})
    stop = asyncio.Event()
    beats: list[float] = []

    async def watch_the_heartbeat() -> None:
        try:
            await app.started.wait()
            beats.append(await a_second_beat())
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[watch_the_heartbeat], stop=stop), 60)

    assert beats and abs(time.time() - beats[0]) < 5


async def test_a_running_split_process_stamps_its_loop_heartbeat_every_second():
    app = AppSettings(source="synthetic", use_database=False, symbols=["SBIN-EQ"])
    process = SplitProcess("ingestion", app, SplitSettings(), GrpcSettings(), {}, 0)
    stop = asyncio.Event()
    runner = asyncio.create_task(process.run(stop))
    try:
        await asyncio.wait_for(process.started.wait(), 30)

        beat = await a_second_beat()
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)

    assert abs(time.time() - beat) < 5


async def test_the_heartbeat_reads_0_once_it_stops_so_a_stopping_process_is_not_taken_for_hung():
    beating = asyncio.create_task(runtime.heartbeat())
    await eventually(lambda: stamp() > 0)

    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)

    assert stamp() == 0
