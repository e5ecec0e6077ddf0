"""The gRPC server of a process: generic servicers for its services, health, reflection, auth, TLS.

Owns the topic hubs that feed server streams; talks to the bus and shared.grpc.* only.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import rpc
from shared.bus import Bus
from shared.grpc.auth import BearerTokenInterceptor, server_credentials
from shared.grpc.config import GrpcSettings, is_loopback
from shared.grpc.hub import TopicHub
from shared.grpc.servicers import CallGate, service_handler

__all__ = ["GrpcServer", "GrpcSettings"]

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Health(health.aio.HealthServicer):
    """The stock async health servicer plus a synchronous setter (grpcio-health-checking 1.85)."""

    def __init__(self) -> None:
        super().__init__()
        self.watch_tasks: set[asyncio.Task[None]] = set()

    def set_now(self, service: str, status: int) -> None:
        if self._gracefully_shutting_down:
            return
        self._server_status[service] = status  # what Check reads
        if service in self._server_watchers:  # wake Watch streams from a short task tracked until stop()
            task = asyncio.get_running_loop().create_task(self._set(service, status))
            self.watch_tasks.add(task)
            task.add_done_callback(self.watch_tasks.discard)


def qualified(service: str) -> str:
    """"OrderService" -> "neopulse.v1.OrderService" (the name health and reflection use)."""
    return rpc.DESCRIPTORS[service].full_name


class GrpcServer:
    """Serves `services` (keys of shared.rpc.DESCRIPTORS) from `bus`; NOT_SERVING until set_serving."""

    def __init__(self, bus: Bus, services: list[str], settings: GrpcSettings, host: str | None = None,
                 port: int = 0) -> None:
        unknown = [s for s in services if s not in rpc.DESCRIPTORS]
        if unknown:
            raise ValueError(f"unknown services {unknown}; choose from {sorted(rpc.DESCRIPTORS)}")
        self.bus = bus
        self.services = list(services)
        self.settings = settings
        self.host = host or settings.host
        self.port = port
        self.bound_port: int | None = None
        # Hubs subscribe now, before modules start publishing, so the replay ring starts complete.
        self.hubs = {
            method: TopicHub(bus, topic, settings.replay_size)
            for method, topic in rpc.STREAM_TOPICS.items()
            if method.split("/")[1].split(".")[-1] in self.services
        }
        self.health = _Health()
        for name in ["", *(qualified(n) for n in self.services)]:
            self.health.set_now(name, NOT_SERVING)
        self._serving: dict[str, bool] = {s: False for s in self.services}
        self.gates = {s: CallGate(open=False) for s in self.services}  # opened by set_serving
        self._stopping = False
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        s = self.settings
        interceptors = [BearerTokenInterceptor(s.auth_token.get_secret_value())] if s.auth_token else []
        server = grpc.aio.server(interceptors=interceptors, options=s.server_options())
        server.add_generic_rpc_handlers([service_handler(self.bus, name, self.hubs, self.gates[name])
                                         for name in self.services])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*(qualified(n) for n in self.services), health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        bound = self._bind(server)
        await server.start()
        self._server, self.bound_port = server, bound
        log.info("gRPC serving", extra={"address": f"{self.host}:{bound}", "services": self.services, "tls": s.tls})
        if s.auth_token is not None and not s.tls and not is_loopback(self.host):
            log.warning("gRPC serves beyond this machine without TLS: its bearer token travels in plain text, and "
                        "whoever reads it may place orders; set [grpc] tls_cert_file and tls_key_file, or keep the "
                        "port on a trusted network", extra={"address": f"{self.host}:{bound}"})
        if s.open_to_the_network(self.host):
            log.warning("gRPC serves beyond this machine with no auth token: anyone who reaches the port may place "
                        "orders, change risk limits and release the kill switch; set [grpc] auth_token "
                        "(NEOPULSE_GRPC_AUTH_TOKEN) or serve on 127.0.0.1", extra={"address": f"{self.host}:{bound}"})
        return bound

    def _bind(self, server: grpc.aio.Server) -> int:
        s = self.settings
        address = f"{self.host}:{self.port}"
        try:
            if s.tls:
                assert s.tls_cert_file is not None and s.tls_key_file is not None
                return server.add_secure_port(address, server_credentials(s.tls_cert_file, s.tls_key_file))
            return server.add_insecure_port(address)
        except RuntimeError:
            for hub in self.hubs.values():
                hub.unsubscribe()
            raise OSError(f"cannot bind gRPC to {address}: the port is in use; pick another --grpc-port") from None

    def set_serving(self, service: str, serving: bool) -> None:
        """Mark one service ready or not; "" (overall) is SERVING when every service here is."""
        if service not in self._serving:
            raise ValueError(f"{service} is not served here; served: {self.services}")
        self._serving[service] = serving
        self.gates[service].open = serving and not self._stopping
        self.health.set_now(qualified(service), SERVING if serving else NOT_SERVING)
        self.health.set_now("", SERVING if all(self._serving.values()) else NOT_SERVING)

    def set_all_serving(self) -> None:
        for name in self.services:
            self.set_serving(name, True)

    async def stop_serving(self, within_s: float) -> bool:
        """The first step of a stop: report NOT_SERVING, refuse new unary calls (UNAVAILABLE, not run) and wait at
        most `within_s` for those in flight. Streams stay open: what the module publishes while it stops still
        reaches them (stop() flushes them). True when no call is left in flight."""
        self._stopping = True
        await asyncio.gather(*self.health.watch_tasks, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        for gate in self.gates.values():
            gate.open = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        idle = [await gate.idle(max(0.0, deadline - loop.time())) for gate in self.gates.values()]
        if not all(idle):
            log.error("gRPC calls still in flight at stop; their callers get an unknown outcome",
                      extra={"calls": sum(g.in_flight for g in self.gates.values())})
        return all(idle)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving (stop_serving, if not done yet), let open streams take what the hubs hold and end, then stop
        within `grace` seconds: calls and streams still open then are cancelled."""
        if self._server is None:
            return
        grace = self.settings.shutdown_grace_s if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if not self._stopping:
            await self.stop_serving(grace)
        for hub in self.hubs.values():
            hub.close()
        await self._server.stop(max(0.0, deadline - loop.time()))
        for hub in self.hubs.values():
            hub.unsubscribe()
        self._server = None
