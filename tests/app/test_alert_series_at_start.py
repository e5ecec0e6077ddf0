"""Every counter deploy/prometheus/alerts.yml reads is exported at 0 before its first event.

increase() takes a series' first sample as its start (prometheus/prometheus#1673): a labelled counter whose series
appears only at its first event, already at 1, never fires its alert for it, and for a rare event (a placement's
outcome unknown, a stream message lost, a feed stall) the first is usually the only one (shared.metrics)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import rpc
from shared.bus import Bus
from shared.ports import free_loopback_port as free_port
from tests.app.test_alert_rules import MODULES, RULES

METRIC = re.compile(r"\bneopulse_[a-z_]+")
# Named by a rule, but no part of a paper monolith: the split bridges' (the test below), and the Kotak broker's.
NOT_IN_A_PAPER_MONOLITH = {"neopulse_grpc_bridge_reconnects_total", "neopulse_grpc_bridge_gaps_total",
                           "neopulse_grpc_bridge_rewinds_total", "neopulse_kotak_throttled_requests_total"}


def counted_series(families: Iterable[Metric]) -> set[str]:
    """The names of the counter and histogram series of these metric families."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {f.name + suffix for f in families for suffix in suffixes.get(f.type, ())}


def counters_the_rules_read() -> set[str]:
    """The counter and histogram series alerts.yml names (their types from the modules that declare them)."""
    for name in MODULES:
        importlib.import_module(name)
    return set(METRIC.findall(RULES.read_text())) & counted_series(REGISTRY.collect())


@pytest.mark.slow
def test_a_started_monolith_exports_every_counter_an_alert_reads_before_its_first_event(tmp_path, procs):
    port = free_port()
    (tmp_path / "c.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    proc = procs.neopulse(["run", "--source", "synthetic", "--duration", "120", "--metrics-port", str(port),
                           "--grpc-port", str(free_port()), "--config", str(tmp_path / "c.toml")], tmp_path / "run.log")
    proc.wait_for_line("gRPC listening", timeout_s=90)

    page = httpx.get(f"http://127.0.0.1:{port}/metrics").text

    sampled = {s.name for family in text_string_to_metric_families(page) for s in family.samples}
    counters = counters_the_rules_read() - NOT_IN_A_PAPER_MONOLITH
    assert len(counters) >= 20
    assert counters - sampled == set()


def test_every_result_of_an_outcome_unknown_placement_is_exported_from_the_start():
    import services.oms.placement  # noqa: F401  (what an OMS process imports)

    results = {s.labels["result"] for family in REGISTRY.collect() for s in family.samples
               if s.name == "neopulse_oms_unknown_placements_total"}

    assert results == {"adopted", "rejected", "adopted_after_giving_up"}


async def test_a_stream_bridge_exports_its_reconnects_losses_and_rewinds_as_it_is_built():
    from shared.grpc.bridge import StreamBridge

    method = rpc.method("OrderService", "StreamOrderUpdates")
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    try:
        StreamBridge(Bus(), channel, method)
    finally:
        await channel.close()

    named = ("neopulse_grpc_bridge_reconnects_total", "neopulse_grpc_bridge_gaps_total",
             "neopulse_grpc_bridge_rewinds_total")
    assert [name for name in named if REGISTRY.get_sample_value(name, {"method": method}) is None] == []


def test_kotak_throttling_of_order_requests_is_exported_from_the_start():
    import shared.kotak.session  # noqa: F401  (what a Kotak run imports)

    page = generate_latest(REGISTRY).decode()

    methods = {s.labels.get("method") for family in text_string_to_metric_families(page) for s in family.samples
               if s.name == "neopulse_kotak_throttled_requests_total"}  # at 0, or more if a test here was throttled
    assert {"place_order", "modify_order", "cancel_order"} <= methods
