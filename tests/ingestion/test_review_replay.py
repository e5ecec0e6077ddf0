"""Replay, reviewed: exactly the stored ticks in (ts, insertion) order across IST midnight and page boundaries,
the right instruments, a clock that reaches candle boundaries, an end that is said, one pass over the table."""

from __future__ import annotations

import asyncio
import random
from datetime import date, timedelta

import asyncpg
import pytest

import services.ingestion.replay as replay
from services.ingestion.instrument_store import upsert_instruments
from services.ingestion.replay import ReplaySource
from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.db.config import DatabaseSettings
from shared.marketdata import nse_instruments
from tests.helpers import eventually, replay_all

DAY = date(2026, 1, 20)  # a Tuesday
MIDNIGHT = ist_ns(DAY + timedelta(days=1), 0, 0)  # IST midnight: a partition boundary
TOKENS = (2885, 11536, 3045)  # RELIANCE-EQ, TCS-EQ, SBIN-EQ


def tick(token: int, ts_ns: int, ltp: int, segment: str = "nse_cm") -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment=segment, ts_ns=ts_ns, ltp_paise=ltp, ltq=1, volume=ltp)


async def store(pool: asyncpg.Pool, *batches: list[market_pb2.Tick]) -> None:
    """Through the real tick writer, one offer per batch: seq (arrival order) follows the order given."""
    await upsert_instruments(pool, nse_instruments(["RELIANCE-EQ", "TCS-EQ", "SBIN-EQ"]))
    writer = TickWriter(pool, DatabaseSettings(max_tick_past_s=10**9), clock=ManualClock(MIDNIGHT))
    for batch in batches:
        writer.offer(market_pb2.TickBatch(ticks=batch))
    await writer.flush()
    assert writer.pending == 0 and writer.persisted == sum(len(b) for b in batches)


def key(t: market_pb2.Tick) -> tuple[int, int, int]:
    return t.token, t.ts_ns, t.ltp_paise


@pytest.mark.parametrize("seed", range(6))
async def test_replay_delivers_exactly_the_stored_ticks_in_ts_then_insertion_order(db_pool, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(replay, "PAGE", rng.choice((1, 2, 3, 7, 50)))
    # Few distinct instants (whole microseconds) around IST midnight, so many ticks share one.
    instants = sorted({MIDNIGHT + rng.randint(-90, 90) * NS + rng.randint(0, 3) * 1000 for _ in range(12)})
    start, end = instants[1], instants[-2]  # some ticks fall outside [start, end)
    ticks = [tick(rng.choice(TOKENS), rng.choice(instants), 100 + i) for i in range(rng.randint(1, 150))]
    cuts = sorted(rng.sample(range(len(ticks) + 1), min(4, len(ticks) + 1)))
    offers = [ticks[a:b] for a, b in zip([0, *cuts], [*cuts, len(ticks)], strict=True)]
    await store(db_pool, *offers)  # arrival order is list order, whatever the timestamps

    got = await replay_all(ReplaySource(db_pool, [], start, end, ManualClock(0), speed=0))

    wanted = sorted((t for t in ticks if start <= t.ts_ns < end), key=lambda t: t.ts_ns)  # stable: arrival order
    assert [key(t) for group in got for t in group] == [key(t) for t in wanted]
    assert all(len({t.ts_ns for t in group}) == 1 for group in got)
    # One tick per token per batch: an order made from a tick never fills at a later quote of the same instant.
    assert all(len({t.token for t in group}) == len(group) for group in got)
    assert list(dict.fromkeys(g[0].ts_ns for g in got)) == sorted({t.ts_ns for t in wanted})


async def test_a_replay_that_has_delivered_its_last_tick_ends_with_the_clock_at_the_end_of_its_range(db_pool):
    last = ist_ns(DAY, 15, 29, 59)
    await store(db_pool, [tick(2885, ist_ns(DAY, 15, 29, 30), 100), tick(2885, last, 101)])
    clock = ManualClock(0)
    source = ReplaySource(db_pool, [], ist_ns(DAY, 0, 0), ist_ns(DAY + timedelta(days=1), 0, 0), clock, speed=0)

    got = await replay_all(source)

    # The 15:29 candle closes on the clock: left at the last tick, it never would.
    assert [[t.ltp_paise for t in g] for g in got] == [[100], [101]]
    assert source.done.is_set() and clock.now_ns() == ist_ns(DAY + timedelta(days=1), 0, 0)


async def test_replaying_a_symbol_skips_another_segments_instrument_with_the_same_token(db_pool):
    bse = market_pb2.Instrument(token=2885, symbol="OTHER", exchange_segment="bse_cm", tick_size_paise=1, lot_size=1)
    await store(db_pool, [tick(2885, ist_ns(DAY, 10, 0), 129_000), tick(2885, ist_ns(DAY, 10, 0, 1), 50, "bse_cm")])
    await upsert_instruments(db_pool, [bse])
    source = ReplaySource(db_pool, ["RELIANCE-EQ"], ist_ns(DAY, 9, 0), ist_ns(DAY, 16, 0), ManualClock(0), speed=0)

    got = await replay_all(source)

    assert [(t.exchange_segment, t.ltp_paise) for g in got for t in g] == [("nse_cm", 129_000)]


async def test_a_paced_replay_moves_the_clock_past_a_minute_end_while_it_waits_for_the_next_tick(db_pool):
    first, second = ist_ns(DAY, 10, 0, 50), ist_ns(DAY, 10, 2, 0)
    await store(db_pool, [tick(2885, first, 100), tick(11536, second, 200)])
    clock = ManualClock(0)
    source = ReplaySource(db_pool, [], ist_ns(DAY, 9, 0), ist_ns(DAY, 16, 0), clock, speed=300)
    await source.instruments()
    stream = source.batches()
    assert [t.ltp_paise for t in (await anext(stream)).ticks] == [100]

    nxt = asyncio.ensure_future(anext(stream))  # due 70 s / 300 = 0.23 s later
    try:
        # A quiet instrument's 10:00 candle closes on the clock (minute end + grace), not at the next tick.
        await eventually(lambda: clock.now_ns() >= ist_ns(DAY, 10, 1, 5) or nxt.done(), within=5)
        assert not nxt.done() and clock.now_ns() < second
        assert [t.ltp_paise for t in (await nxt).ticks] == [200] and clock.now_ns() == second
    finally:
        nxt.cancel()
        await stream.aclose()


async def test_replaying_a_day_reads_each_stored_tick_once_not_once_per_page(database, monkeypatch):
    monkeypatch.setattr(replay, "PAGE", 50)
    n = 3000
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)  # one backend: its stats flush at exit
    try:
        await store(pool, [tick(TOKENS[i % 3], ist_ns(DAY, 10, 0) + i * 1000, 100 + i) for i in range(n)])
        before = await _tuples_read(pool)
        got = await replay_all(ReplaySource(pool, [], ist_ns(DAY, 0, 0), ist_ns(DAY, 23, 0), ManualClock(0), 0))
        assert sum(len(g) for g in got) == n
    finally:
        await pool.close()
    reader = await asyncpg.connect(database)
    try:
        await eventually(lambda: _more_than(reader, before + n - 1), within=10)
        read = await _tuples_read(reader) - before
    finally:
        await reader.close()

    assert read <= 2 * n  # keyset pages without an index on (ts, seq) re-scan the day per page: ~n * n / PAGE / 2


async def _tuples_read(db: asyncpg.Pool | asyncpg.Connection) -> int:
    value = await db.fetchval("SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint "
                              "FROM pg_stat_user_tables WHERE relname LIKE 'market_ticks_%'")
    return int(value)


async def _more_than(conn: asyncpg.Connection, floor: int) -> bool:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await _tuples_read(conn) > floor
