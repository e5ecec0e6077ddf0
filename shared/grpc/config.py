"""gRPC server settings (section "grpc", env NEOPULSE_GRPC_): auth token, TLS files, keepalive, sizes.

Read by shared.grpc.server and the bridges' client channels.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings
from shared.grpc.auth import auth_metadata

MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; 0.0.0.0, [::] and any other address or name reach beyond this machine."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class GrpcSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_GRPC_", extra="forbid", validate_default=True)
    section = "grpc"

    host: str = "127.0.0.1"
    # When set, every RPC except grpc.health.v1 needs `authorization: Bearer <token>`.
    auth_token: SecretStr | None = None
    # Both set = TLS on; neither = plaintext (loopback and trusted networks only).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Ping idle connections so dead peers (and NAT drops) are noticed within a minute.
    keepalive_time_ms: int = Field(default=20_000, ge=1_000)
    keepalive_timeout_ms: int = Field(default=10_000, ge=1_000)
    # A TickBatch of a full feed burst fits comfortably; larger messages are a bug, not a load.
    max_message_bytes: int = Field(default=16 * MIB, ge=MIB, le=256 * MIB)
    # Seconds a stopping server lets open streams flush before cancelling them.
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=60)
    # Order-path messages kept per stream for `after_sequence` resume.
    replay_size: int = Field(default=10_000, ge=0, le=1_000_000)
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("auth_token", mode="after")
    @classmethod
    def _empty_token_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        # Compose passes `${TOKEN:-}`: an empty value means "no auth", not "the empty token".
        return token if token is not None and token.get_secret_value() else None

    @model_validator(mode="after")
    def _tls_pair(self) -> GrpcSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def open_to_the_network(self, host: str | None = None) -> bool:
        """Served beyond this machine with no token: anyone who reaches the port may place orders, change the risk
        limits and release the kill switch."""
        return self.auth_token is None and not is_loopback(host or self.host)

    def client_metadata(self) -> tuple[tuple[str, str], ...]:
        """What a client of these servers sends with every call: the bearer token, when one is set."""
        return auth_metadata(self.auth_token.get_secret_value() if self.auth_token else None)

    def channel_options(self) -> list[tuple[str, int]]:
        """Options shared by servers and the bridges' client channels."""
        return [
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            # A restarted upstream is found within 5 s: the channel's own reconnect backoff (gRPC's default grows
            # to 120 s) would otherwise override the bridges' and fail every call in between with UNAVAILABLE.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        return [
            *self.channel_options(),
            # Clients ping every keepalive_time_ms; allow it instead of answering GOAWAY too_many_pings.
            ("grpc.http2.min_ping_interval_without_data_ms", min(self.keepalive_time_ms, 10_000)),
            # Two servers must never share a port silently (a stale process would steal half the calls).
            ("grpc.so_reuseport", 0),
        ]
