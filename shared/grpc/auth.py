"""Bearer-token server interceptor and TLS credentials for the gRPC server.

Health checks stay open so probes work without the token; everything else needs it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects every RPC but health with UNAUTHENTICATED unless `authorization: Bearer <token>` matches."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("auth token must not be empty")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or self._authorised(details):
            return handler
        return _rejecting(handler)

    def _authorised(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that aborts before touching the request."""
    message = "missing or wrong bearer token; send metadata `authorization: Bearer <token>`"

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kind = (handler.request_streaming, handler.response_streaming)
    ser = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if kind == (False, False):
        return grpc.unary_unary_rpc_method_handler(unary, **ser)
    if kind == (False, True):
        return grpc.unary_stream_rpc_method_handler(streaming, **ser)
    if kind == (True, False):
        return grpc.stream_unary_rpc_method_handler(unary, **ser)
    return grpc.stream_stream_rpc_method_handler(streaming, **ser)


def server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """TLS credentials from PEM files (server authentication; clients verify with the CA)."""
    return grpc.ssl_server_credentials([(key_file.read_bytes(), cert_file.read_bytes())])


def channel_credentials(ca_file: Path | None) -> grpc.ChannelCredentials:
    """Client TLS credentials trusting `ca_file` (or the system roots when None)."""
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes() if ca_file else None)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()
