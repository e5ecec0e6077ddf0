"""Incremental indicators over candle closes: Wilder RSI, EMA and SMA, one value in, one value out.

Pure arithmetic with no bus or I/O; strategies keep one instance per token. Floats are fine here:
indicator values drive decisions, never prices (order prices come from integer candle closes).
"""

from __future__ import annotations

from collections import deque


class SMA:
    """Simple moving average of the last `period` values; None until `period` values were seen."""

    __slots__ = ("_sum", "_window", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._window: deque[float] = deque()
        self._sum = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        window = self._window
        window.append(x)
        self._sum += x
        if len(window) > self.period:
            self._sum -= window.popleft()
        if len(window) == self.period:
            self.value = self._sum / self.period
        return self.value


class EMA:
    """Exponential moving average, alpha = 2 / (period + 1), seeded with the SMA of the first `period` values.

    None until `period` values were seen (the seed), then updated on every value.
    """

    __slots__ = ("_count", "_seed_sum", "alpha", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        if self.value is not None:
            self.value += self.alpha * (x - self.value)
            return self.value
        self._count += 1
        self._seed_sum += x
        if self._count == self.period:
            self.value = self._seed_sum / self.period
        return self.value


class RSI:
    """Wilder's relative strength index over `period` changes.

    The first average gain/loss is the plain mean of the first `period` changes (so the
    first value needs period + 1 closes); after that each average is smoothed Wilder's way:
    avg = (avg * (period - 1) + change) / period. RSI = 100 - 100 / (1 + avg_gain / avg_loss);
    100 when there were no losses, 50 when there was no movement at all.
    """

    __slots__ = ("_avg_gain", "_avg_loss", "_count", "_prev", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._prev: float | None = None
        self._count = 0
        self._avg_gain = 0.0
        self._avg_loss = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        prev = self._prev
        self._prev = x
        if prev is None:
            return None
        change = x - prev
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        n = self.period
        if self._count < n:
            # Seeding: accumulate sums, turn them into means at the n-th change.
            self._count += 1
            self._avg_gain += gain
            self._avg_loss += loss
            if self._count < n:
                return None
            self._avg_gain /= n
            self._avg_loss /= n
        else:
            self._avg_gain = (self._avg_gain * (n - 1) + gain) / n
            self._avg_loss = (self._avg_loss * (n - 1) + loss) / n
        self.value = _rsi(self._avg_gain, self._avg_loss)
        return self.value


def _rsi(avg_gain: float, avg_loss: float) -> float:
    if avg_loss == 0.0:
        return 50.0 if avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
