"""The warm-up reads the same candles at any time of day: earlier whole days until they alone hold what the strategy
needs, then today's. A restart at 09:27 (twelve of today's candles, more than MOMENTUM_RSI's nine with the defaults)
no longer re-seeds Wilder's RSI from this morning's handful of closes while a process started before the open
carried Friday's smoothing on.

Real parts: the stored ticks in market_ticks (embedded PostgreSQL, written by ingestion's TickWriter), the SQL
candles (StoredCandles)."""

from services.strategy import warmup
from shared.clock import ist_ns
from tests.strategy.test_warm_start import FRIDAY, MONDAY, SBIN, random_walk, store


async def test_a_restart_at_0927_reads_fridays_candles_as_a_start_before_the_open_did(db_pool):
    await store(db_pool, random_walk(1, SBIN, ist_ns(FRIDAY, 9, 15), 375) + random_walk(2, SBIN, ist_ns(MONDAY, 9, 15),
                                                                                          12))
    history, need = warmup.StoredCandles(db_pool), {SBIN: 9}
    before_the_open = await warmup.read(history, need, ist_ns(MONDAY, 9, 0))
    todays = await history.candles(SBIN, ist_ns(MONDAY, 0, 0), ist_ns(MONDAY, 9, 27))

    restarted = await warmup.read(history, need, ist_ns(MONDAY, 9, 27))

    assert len(todays) >= 9
    assert [c.start_ns for c in restarted] == [c.start_ns for c in before_the_open + todays]
