"""A token bucket on a Clock: the submit-rate limit of the risk engine.

Pure: time comes from the caller, so a ManualClock drives it in tests.
"""

from __future__ import annotations

from shared.clock import NS


class TokenBucket:
    """`rate` tokens per second, bursts up to max(1, rate); one accepted order takes one token, down to 0."""

    def __init__(self, rate: float, now_ns: int) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._last_ns = now_ns

    def _refill(self, now_ns: int) -> None:
        elapsed = max(0, now_ns - self._last_ns)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate / NS)
        self._last_ns = now_ns  # a clock stepped back (NTP) refills from there, not only once it is past again

    def ready(self, now_ns: int) -> bool:
        self._refill(now_ns)
        return self.tokens >= 1.0

    def take(self, now_ns: int) -> None:
        """Take a token; an order exempt from the check (a square-off) may find none and takes what is left, never
        running the bucket into debt: a burst of square-offs must not refuse every other order (a stop's exit among
        them) for seconds after it, while the next ones still wait for the refill."""
        self._refill(now_ns)
        self.tokens = max(0.0, self.tokens - 1.0)

    def set_rate(self, rate: float, now_ns: int) -> None:
        self._refill(now_ns)
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)
