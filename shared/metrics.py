"""Prometheus metrics endpoint for a process (prometheus-client).

Metrics themselves are declared beside the code that counts them, named
neopulse_<module>_<thing>_<unit>.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

log = logging.getLogger(__name__)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on host:port; 0 turns it off."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics served", extra={"url": f"http://{host}:{port}/metrics"})


def start_at_zero(counter: Counter, *label_values: str | tuple[str, ...]) -> None:
    """Export these label values' series at 0 from now on, before their first event.

    deploy/prometheus/alerts.yml reads counters with increase(), which takes a series' first sample as its start, not
    as an increase (prometheus/prometheus#1673): a series born at 1 by its first event never fires its alert, and for
    a rare event (an outcome unknown, a stream message lost) the first is usually the only one. Known values only:
    each one is a series kept for the life of the process."""
    for values in label_values:
        counter.labels(*((values,) if isinstance(values, str) else values))
