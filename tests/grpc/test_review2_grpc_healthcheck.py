"""The image's HEALTHCHECK, run as written in deploy/Dockerfile, against a real server: it asks over TLS when a
certificate is configured, and where the server listens; otherwise a healthy container stays `unhealthy`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from shared import rpc
from shared.grpc.config import GrpcSettings
from shared.grpc.server import GrpcServer

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's exec-form CMD, run by this interpreter (the image's `python`)."""
    line = next(line for line in DOCKERFILE.read_text().splitlines() if line.strip().startswith("CMD [\"python\""))
    command: list[str] = json.loads(line.strip().removeprefix("CMD "))
    return [sys.executable, *command[1:]]


async def healthcheck(bus, settings: GrpcSettings, env: dict[str, str]) -> int:
    """The check's exit code against a serving server with `settings`, the container's environment `env`."""
    server = GrpcServer(bus, list(rpc.DESCRIPTORS), settings)
    port = await server.start()
    server.set_all_serving()
    try:
        proc = await asyncio.create_subprocess_exec(
            *healthcheck_command(), env={**os.environ, "NEOPULSE_GRPC_PORT": str(port), **env},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(proc.wait(), 20)
    finally:
        await server.stop(0)


async def test_the_healthcheck_asks_over_tls_when_the_server_has_a_certificate(bus, cert):
    """As the image serves (NEOPULSE_GRPC_HOST 0.0.0.0); bound here to loopback only, which that also reaches."""
    settings = GrpcSettings(tls_cert_file=cert[0], tls_key_file=cert[1])
    env = {"NEOPULSE_GRPC_HOST": "0.0.0.0", "NEOPULSE_GRPC_TLS_CERT_FILE": str(cert[0]),
           "NEOPULSE_GRPC_TLS_KEY_FILE": str(cert[1])}

    code = await healthcheck(bus, settings, env)

    assert code == 0


async def test_the_healthcheck_asks_the_host_the_server_listens_on(bus):
    """NEOPULSE_SPLIT_GRPC_HOST puts a split module on one address: 127.0.0.1 reaches nothing there."""
    code = await healthcheck(bus, GrpcSettings(host="127.0.0.2"), {"NEOPULSE_GRPC_HOST": "127.0.0.2"})

    assert code == 0
