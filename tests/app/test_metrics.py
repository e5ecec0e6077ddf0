"""A running monolith serves Prometheus metrics for the things an operator watches."""

import httpx
import pytest

from shared.ports import free_loopback_port as free_port
from tests.helpers import eventually

WATCHED = [
    "neopulse_ingestion_ticks_total", "neopulse_ingestion_ticks_per_second", "neopulse_ingestion_feed_reconnects",
    "neopulse_bus_queue_depth_messages", "neopulse_strategy_signals_total", "neopulse_oms_order_updates_total",
    "neopulse_grpc_request_duration_seconds", "neopulse_ingestion_writer_lag_seconds",
    "neopulse_risk_trading_state 1.0", "neopulse_risk_kill_switch_engaged 0.0", "neopulse_risk_daily_pnl_paise",
]


@pytest.mark.slow
async def test_the_metrics_endpoint_shows_ticks_queues_signals_orders_rpc_latency_and_writer_lag(tmp_path, procs):
    """Served on NEOPULSE_METRICS_HOST (here another loopback address, 127.0.0.2: a container's 0.0.0.0 in
    docker-compose.yml), and only there."""
    port, grpc_port = free_port(), free_port()
    (tmp_path / "c.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    procs.neopulse(["run", "--source", "synthetic", "--speed", "60", "--duration", "60", "--metrics-port", str(port),
                    "--grpc-port", str(grpc_port), "--config", str(tmp_path / "c.toml")], tmp_path / "run.log",
                   env={"NEOPULSE_METRICS_HOST": "127.0.0.2"})
    text = ""

    async def all_there() -> bool:
        nonlocal text
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.2:{port}/metrics")).text
        except httpx.HTTPError:
            return False
        return all(name in text for name in WATCHED) and "neopulse_oms_order_updates_total{" in text

    await eventually(all_there, within=60, every=0.5)

    assert [n for n in WATCHED if n not in text] == []
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")
