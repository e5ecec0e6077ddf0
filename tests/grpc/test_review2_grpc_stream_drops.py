"""Market data shed for a gRPC stream too slow to take it is counted (neopulse_bus_dropped_messages) and logged once
per stream: a process working from a shed stream has partial candles, marks and paper fills."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from shared.bus import Topic
from shared.contracts import market_pb2
from shared.grpc.hub import TopicHub


def stream_drops() -> float:
    labels = {"topic": Topic.TICKS.value, "subscriber": "grpc-streams"}
    return REGISTRY.get_sample_value("neopulse_bus_dropped_messages_total", labels) or 0.0


async def shed(bus, batches: int) -> None:
    """Ticks published to a hub whose one stream holds 2 batches and never reads."""
    hub = TopicHub(bus, Topic.TICKS, replay_size=0, listener_maxsize=2)
    hub.attach()
    for n in range(batches):
        bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(token=2885, ltp_paise=n)]))
    await bus.drain()


async def test_batches_shed_for_a_slow_stream_are_counted_in_the_dropped_metric(bus):
    before = stream_drops()

    await shed(bus, batches=5)

    assert stream_drops() - before == 3


async def test_a_slow_stream_shedding_market_data_is_logged_once(bus, caplog):
    with caplog.at_level(logging.WARNING, logger="shared.grpc.hub"):
        await shed(bus, batches=5)

    assert len([r for r in caplog.records if "too slow for its market data" in r.getMessage()]) == 1
