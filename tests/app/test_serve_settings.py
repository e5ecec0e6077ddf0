"""`neopulse serve` takes its ports as the image and `neopulse run` do: the gRPC port from NEOPULSE_GRPC_PORT (where
the image's health check probes), /metrics from --metrics-port, else metrics_port, else [grpc] metrics_port; and it
refuses a --speed it would ignore."""

from __future__ import annotations

import subprocess

import httpx

from shared.ports import free_loopback_port as free_port
from tests.app.test_config_and_cli import run_cli
from tests.grpc.test_review2_grpc_healthcheck import healthcheck_command

# A split ingestion on its own: no upstream to wait for, no database.
ALONE = {"NEOPULSE_USE_DATABASE": "false", "NEOPULSE_GRPC_HOST": "127.0.0.1"}


def test_serve_listens_on_the_port_the_image_health_check_probes(tmp_path, procs):
    """It listened on its [split] address's port (18061) whatever NEOPULSE_GRPC_PORT said: a container without
    compose's matching pair stayed unhealthy for ever."""
    env = {**ALONE, "NEOPULSE_GRPC_PORT": str(free_port())}
    procs.neopulse(["serve", "ingestion", "--duration", "60"], tmp_path / "serve.log", env=env).wait_for_line(
        "gRPC listening on")

    check = subprocess.run(healthcheck_command(), env=env, capture_output=True, text=True, timeout=30)

    assert check.returncode == 0, check.stderr


def test_serve_takes_its_metrics_port_from_the_environment_over_a_shared_config_file(tmp_path, procs):
    """With [grpc] metrics_port in the one config file of all five processes, each one's NEOPULSE_METRICS_PORT (as
    docker-compose.yml sets) was ignored: four of the five exited on the port clash."""
    shared_port, own_port = free_port(), free_port()
    config = tmp_path / "split.toml"
    config.write_text(f"[grpc]\nmetrics_port = {shared_port}\n")
    env = {**ALONE, "NEOPULSE_METRICS_PORT": str(own_port)}
    procs.neopulse(["serve", "ingestion", "--config", str(config), "--grpc-port", "0", "--duration", "60"],
                   tmp_path / "serve.log", env=env).wait_for_line("gRPC listening on")

    metrics = httpx.get(f"http://127.0.0.1:{own_port}/metrics", timeout=10)

    assert metrics.status_code == 200 and "neopulse_" in metrics.text


def test_serve_takes_a_metrics_port_flag_over_the_environment_and_the_config(tmp_path, procs):
    config = tmp_path / "split.toml"
    config.write_text(f"metrics_port = {free_port()}\n[grpc]\nmetrics_port = {free_port()}\n")
    port = free_port()
    procs.neopulse(["serve", "ingestion", "--config", str(config), "--grpc-port", "0", "--metrics-port", str(port),
                    "--duration", "60"], tmp_path / "serve.log",
                   env={**ALONE, "NEOPULSE_METRICS_PORT": str(free_port())}).wait_for_line("gRPC listening on")

    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)

    assert metrics.status_code == 200 and "neopulse_" in metrics.text


def test_serve_refuses_a_speed_without_the_shared_session_start_instead_of_ignoring_it():
    """Without [split] session_wall_start_ns the process runs on the real clock: --speed 60 did nothing, silently."""
    result = run_cli("serve", "ingestion", "--no-db", "--grpc-port", "0", "--speed", "60", "--duration", "1")

    assert result.returncode == 2 and "--speed 60 needs [split] session_wall_start_ns" in result.stderr
