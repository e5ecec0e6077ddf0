"""Replay: ticks stored in market_ticks come back in order, grouped by timestamp, driving the clock."""

import asyncio
import time

from services.ingestion.instrument_store import upsert_instruments
from services.ingestion.replay import ReplaySource
from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock
from shared.contracts import market_pb2
from shared.marketdata import nse_instruments

T0 = (time.time_ns() // NS - 3600) * NS


def stored_ticks():
    # Two ticks share T0; RELIANCE and TCS alternate; one SBIN tick is outside the chosen symbols.
    spec = [(2885, 0, 129000), (11536, 0, 345000), (2885, 1, 129005), (3045, 1, 81000), (11536, 2, 344995)]
    return [market_pb2.Tick(token=tok, exchange_segment="nse_cm", ts_ns=T0 + s * NS, ltp_paise=px, ltq=1,
                            volume=10 + i) for i, (tok, s, px) in enumerate(spec)]


async def store(pool, ticks):
    await upsert_instruments(pool, nse_instruments(["RELIANCE-EQ", "TCS-EQ", "SBIN-EQ"]))
    writer = TickWriter(pool)
    task = asyncio.create_task(writer.run())
    writer.offer(market_pb2.TickBatch(ticks=ticks))
    await writer.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_replay_yields_stored_ticks_of_the_chosen_symbols_in_order_grouped_by_timestamp(db_pool):
    await store(db_pool, stored_ticks())
    clock = ManualClock(0)
    source = ReplaySource(db_pool, ["RELIANCE-EQ", "TCS-EQ"], T0 - NS, T0 + 10 * NS, clock, speed=0)
    assert sorted(i.symbol for i in await source.instruments()) == ["RELIANCE-EQ", "TCS-EQ"]
    batches = []
    stream = source.batches()
    while not source.done.is_set():
        batches.append(await asyncio.wait_for(stream.__anext__(), 5) if not source.done.is_set() else None)
        if len(batches) == 3:
            break
    got = [[(t.token, (t.ts_ns - T0) // NS, t.ltp_paise) for t in b.ticks] for b in batches]
    assert got == [[(2885, 0, 129000), (11536, 0, 345000)], [(2885, 1, 129005)], [(11536, 2, 344995)]]
    assert clock.now_ns() == T0 + 2 * NS and all(t.recv_ns > 0 for b in batches for t in b.ticks)
    await stream.aclose()


async def test_a_page_boundary_inside_a_timestamp_loses_no_tick(db_pool, monkeypatch):
    import services.ingestion.replay as replay

    monkeypatch.setattr(replay, "PAGE", 2)
    ticks = stored_ticks()
    await store(db_pool, ticks)
    source = ReplaySource(db_pool, [], T0 - NS, T0 + 10 * NS, ManualClock(0), speed=0)
    await source.instruments()
    seen = [t.ltp_paise async for group in source._groups() for t in group]
    assert sorted(seen) == sorted(t.ltp_paise for t in ticks)


async def test_a_timestamp_shared_by_more_ticks_than_a_page_replays_every_tick(db_pool, monkeypatch):
    import services.ingestion.replay as replay

    monkeypatch.setattr(replay, "PAGE", 2)
    ticks = [market_pb2.Tick(token=2885, exchange_segment="nse_cm", ts_ns=T0, ltp_paise=100 + i, ltq=1,
                             volume=10 + i) for i in range(5)]
    ticks.append(market_pb2.Tick(token=2885, exchange_segment="nse_cm", ts_ns=T0 + NS, ltp_paise=200, ltq=1,
                                 volume=20))
    await store(db_pool, ticks)
    source = ReplaySource(db_pool, [], T0 - NS, T0 + 10 * NS, ManualClock(0), speed=0)
    await source.instruments()

    groups = [[t.ltp_paise for t in group] async for group in source._groups()]

    assert groups == [[100, 101, 102, 103, 104], [200]]


async def test_replay_resolves_symbols_as_the_live_feed_does(db_pool):
    await upsert_instruments(db_pool, [
        market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=5),
        market_pb2.Instrument(token=500325, symbol="RELIANCE-EQ", exchange_segment="bse_cm", tick_size_paise=5),
        market_pb2.Instrument(token=450001, symbol="CRUDEOIL26JANFUT", exchange_segment="mcx_fo", tick_size_paise=100)])
    source = ReplaySource(db_pool, ["RELIANCE-EQ", "mcx_fo:CRUDEOIL26JANFUT"], T0, T0 + NS, ManualClock(0))

    chosen = await source.instruments()

    assert [(i.exchange_segment, i.token) for i in chosen] == [("nse_cm", 2885), ("mcx_fo", 450001)]
