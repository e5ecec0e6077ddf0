"""RPC metrics (prometheus-client): latency histogram and call counts by method and status code.

Recorded by the generic servicers; served on /metrics by shared.metrics.serve_metrics.
"""

from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Histogram

RPC_LATENCY = Histogram(
    "neopulse_grpc_request_duration_seconds", "Unary RPC latency (streams: time until the stream ended)",
    ["method", "code"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60))
RPC_COUNT = Counter("neopulse_grpc_requests", "RPCs finished, by method and status code", ["method", "code"])
STREAM_MESSAGES = Counter("neopulse_grpc_stream_messages", "Batches sent on server streams", ["method"])


class RpcTimer:
    """Times one RPC; `done(code)` records it once."""

    __slots__ = ("method", "start")

    def __init__(self, method: str) -> None:
        self.method = method
        self.start = time.perf_counter()

    def done(self, code: grpc.StatusCode) -> None:
        name = code.name
        RPC_LATENCY.labels(self.method, name).observe(time.perf_counter() - self.start)
        RPC_COUNT.labels(self.method, name).inc()
