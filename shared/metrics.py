"""Prometheus metrics endpoint for a process (prometheus-client).

Metrics themselves are declared beside the code that counts them, named
neopulse_<module>_<thing>_<unit>.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on host:port; 0 turns it off."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics served", extra={"url": f"http://{host}:{port}/metrics"})
