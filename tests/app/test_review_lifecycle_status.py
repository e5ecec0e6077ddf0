"""The status line's elapsed time and tick rate count from the run's start, not from the start-up before it (the
embedded database, the Kotak login, the strategies' warm-up): a long start must not read as a slow feed."""

from __future__ import annotations

import asyncio
import io

from services.app.status import StatusBoard
from shared.bus import Topic
from shared.contracts import market_pb2
from tests.app.test_status import bus  # noqa: F401  (its fixture: a running bus)

START_UP_S = 30.0  # a live start: login and warm-up
EVERY_S = 0.01  # the line comes every fifth turn off a terminal



async def first_line(out: io.StringIO, within_s: float = 5.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not out.getvalue():
        assert loop.time() < deadline, "no status line"
        await asyncio.sleep(EVERY_S)
    return out.getvalue().splitlines()[0]


async def test_the_status_lines_clock_and_tick_rate_start_with_the_run_not_the_start_up(bus):  # noqa: F811
    out = io.StringIO()
    board = StatusBoard(bus, out=out)
    board.started -= START_UP_S  # built START_UP_S ago, before the start-up
    await bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(token=1)] * 1000))  # warm-up's
    assert await bus.drain()

    line_task = asyncio.create_task(board.run(every=EVERY_S))
    try:
        line = await first_line(out)
    finally:
        line_task.cancel()
        await asyncio.gather(line_task, return_exceptions=True)

    assert line.split()[:4] == ["0s", "ticks", "1,000", "(0/s)"]
