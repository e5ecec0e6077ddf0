"""The warm start: the 1-minute candles each traded token closed before now, read from the stored ticks.

Reads market_ticks through shared/db/queries.candles_1m (the SQL twin of candles.py's builder); the module hands
what it reads to the engine (StrategyEngine.warm_up) before the strategy takes its first live tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, Protocol

from services.strategy.candles import MINUTE_NS
from shared.clock import day_of, ist_ns, last_trading_day
from shared.contracts import market_pb2
from shared.db import queries

# Earlier trading days read at most, per token, for a strategy that needs closes (closes_needed): two hold
# the longest MOMENTUM_RSI warm-up (502 closes; an NSE day has 375), the rest cover days NeoPulse did not run.
LOOKBACK_DAYS = 5
# Tokens read at once: the pool also serves the tick writer and the order ledger (monolith) while this runs.
CONCURRENT_READS = 4


class CandleHistory(Protocol):
    async def candles(self, token: int, start_ns: int, end_ns: int) -> list[market_pb2.Candle]:
        """The token's 1-minute candles of the ticks with start_ns <= ts < end_ns, oldest first."""
        ...

    async def day_volume(self, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        """The cumulative day volume the token's ticks with start_ns <= ts < end_ns reached, and the time of the tick
        that carried it (queries.day_volume_reached); None if none carried one."""
        ...

    async def price_range(self, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        """The highest and lowest price of the token's ticks with start_ns <= ts < end_ns; None if it has none."""
        ...


class StoredCandles:
    """Candles from market_ticks (ingestion's tick writer stores every tick there)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def candles(self, token: int, start_ns: int, end_ns: int) -> list[market_pb2.Candle]:
        return await queries.candles_1m(self.pool, token, start_ns, end_ns)

    async def day_volume(self, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        return await queries.day_volume_reached(self.pool, token, start_ns, end_ns)

    async def price_range(self, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        return await queries.price_range(self.pool, token, start_ns, end_ns)


async def read(history: CandleHistory, needs: dict[int, int], cutoff_ns: int) -> list[market_pb2.Candle]:
    """Each token's candles that closed before `cutoff_ns` (a minute's start: the candle of that minute is still
    open): all of today's (IST), and whole earlier trading days' while the token has fewer closes than it needs
    (`needs`: token -> closes), up to LOOKBACK_DAYS of them, until those earlier days alone hold what it needs (today's
    not counted: the candles are those a process started before the open read, at any time of day). Whole days, so
    that the indicators come out as those of a strategy that saw the same candles live. Oldest first per token."""
    return await _each(needs, lambda token: _token(history, token, needs[token], cutoff_ns))


async def read_since(history: CandleHistory, tokens: Iterable[int], start_ns: int,
                     cutoff_ns: int) -> list[market_pb2.Candle]:
    """The candles of the minutes that closed while `read` ran (start_ns <= minute < cutoff_ns)."""
    return await _each(tokens, lambda token: history.candles(token, start_ns, cutoff_ns))


async def read_open(history: CandleHistory, tokens: Iterable[int],
                    cutoff_ns: int) -> tuple[list[market_pb2.Candle], dict[int, tuple[int, int]]]:
    """The candle of the minute starting at `cutoff_ns` (still open) as far as the stored ticks have it, for each
    token with ticks in it. Read from the minute before, so that its volume is counted from the day volume that
    minute reached (a range's first minute has no earlier tick to count from). And for each token whose ticks
    carried one today, the day volume they reached and when (token -> (volume, ts_ns)): the first live tick's
    candle volume is its growth from there, not its own `ltq` (what traded since the last stored tick)."""
    end_ns, day_start_ns = cutoff_ns + MINUTE_NS, ist_ns(day_of(cutoff_ns), 0, 0)
    reached: dict[int, tuple[int, int]] = {}

    async def one(token: int) -> list[market_pb2.Candle]:
        candles = await history.candles(token, cutoff_ns - MINUTE_NS, end_ns)
        held = await history.day_volume(token, day_start_ns, end_ns)
        if held is not None:
            reached[token] = held
        return [candle for candle in candles if candle.start_ns == cutoff_ns]

    return await _each(tokens, one), reached


async def _each(tokens: Iterable[int],
                read_one: Callable[[int], Awaitable[list[market_pb2.Candle]]]) -> list[market_pb2.Candle]:
    """`read_one` of every token, CONCURRENT_READS at a time; their candles, token after token."""
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def one(token: int) -> list[market_pb2.Candle]:
        async with gate:
            return await read_one(token)

    async with asyncio.TaskGroup() as tasks:
        reads = [tasks.create_task(one(token)) for token in tokens]
    return [candle for task in reads for candle in task.result()]


async def _token(history: CandleHistory, token: int, need: int, cutoff_ns: int) -> list[market_pb2.Candle]:
    day = day_of(cutoff_ns)
    days = [await history.candles(token, ist_ns(day, 0, 0), cutoff_ns)]
    # Earlier days alone are to hold `need`, whatever today has so far: a process started before the open read them,
    # and a restart at 10:30 must feed the same candles (counting today's, Wilder's RSI would be seeded again from a
    # handful of this morning's closes instead of carrying the earlier days' smoothing on).
    have = 0
    for _ in range(LOOKBACK_DAYS):
        if have >= need:
            break
        end = ist_ns(day, 0, 0)
        day = last_trading_day(day - timedelta(days=1))
        days.append(await history.candles(token, ist_ns(day, 0, 0), end))
        have += len(days[-1])
    return [candle for candles in reversed(days) for candle in candles]
