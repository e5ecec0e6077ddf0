"""Picking a free loopback port for a server that several local processes will dial (split mode, tests, bench).

Ports below the kernel's ephemeral range: a client retrying a port that is not listening yet can never
be handed that same port as its own source port and so connect to itself.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000  # below net.ipv4.ip_local_port_range's default 32768


def free_loopback_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, chosen at random in [LOW, HIGH]."""
    while True:
        port = random.randint(LOW, HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
