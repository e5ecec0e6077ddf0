"""Read-side queries and the instrument master: ticks, SQL candles, orders by day, day P&L per strategy."""

from __future__ import annotations

import uuid
from datetime import date

from services.ingestion.instrument_store import load_instruments, upsert_instruments
from services.ingestion.tick_writer import TickWriter
from services.oms.ledger_pg import PgLedger
from shared.clock import NS, ManualClock, day_of, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.db import queries
from shared.db.config import DatabaseSettings
from tests.db.helpers import new_order, tick, transition

DAY = date(2026, 1, 20)
T0 = ist_ns(DAY, 9, 15)


async def _store(pool, ticks):
    writer = TickWriter(pool, DatabaseSettings(max_tick_past_s=10**9), clock=ManualClock(T0))
    writer.offer(market_pb2.TickBatch(ticks=ticks))
    await writer.flush()


async def test_ticks_returns_one_tokens_ticks_in_the_range_in_order(db_pool):
    await _store(db_pool, [tick(1, T0 + 2 * NS, 102), tick(1, T0 + 1 * NS, 101), tick(2, T0 + 1 * NS, 900),
                           tick(1, T0 + 90 * NS, 190)])

    got = await queries.ticks(db_pool, 1, T0, T0 + 60 * NS)

    assert [(x.ts_ns - T0, x.ltp_paise) for x in got] == [(1 * NS, 101), (2 * NS, 102)]


async def test_candles_aggregate_open_high_low_close_and_volume_per_minute(db_pool):
    await _store(db_pool, [tick(1, T0 + 1 * NS, 100, volume=1_000), tick(1, T0 + 20 * NS, 130, volume=1_050),
                           tick(1, T0 + 40 * NS, 90, volume=1_070), tick(1, T0 + 59 * NS, 110, volume=1_100),
                           tick(1, T0 + 61 * NS, 111, volume=1_160)])

    got = await queries.candles_1m(db_pool, 1, T0, T0 + 120 * NS)

    assert [(c.start_ns - T0, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume, c.tick_count)
            for c in got] == [(0, 100, 130, 90, 110, 100, 4), (60 * NS, 111, 111, 111, 111, 60, 1)]


async def test_orders_lists_one_days_orders_filtered_by_status(db_pool):
    ledger = PgLedger(db_pool)
    a = new_order(str(uuid.uuid4()), "a", ts_ns=T0)
    b = new_order(str(uuid.uuid4()), "b", ts_ns=T0 + NS)
    other_day = new_order(str(uuid.uuid4()), "c", ts_ns=T0 - 86_400 * NS)
    for o in (a, b, other_day):
        await ledger.insert_new(o, {})
    await ledger.record(transition(a, t.ORDER_STATUS_OPEN, 5), {})

    assert [o.client_order_id for o in await queries.orders(db_pool, DAY)] == ["b", "a"]
    assert [o.client_order_id for o in await queries.orders(db_pool, DAY, status="open")] == ["a"]


async def test_day_pnl_is_realised_from_fills_per_strategy(db_pool):
    ledger = PgLedger(db_pool)
    buy = new_order(str(uuid.uuid4()), "buy", strategy="S1", side=t.SIDE_BUY, quantity=10, ts_ns=T0)
    sell = new_order(str(uuid.uuid4()), "sell", strategy="S1", side=t.SIDE_SELL, quantity=10, ts_ns=T0 + 60 * NS)
    for o in (buy, sell):
        await ledger.insert_new(o, {})
    await ledger.record(transition(buy, t.ORDER_STATUS_TRADED, 10, fill=(10, 100_000, 50), filled=(10, 100_000)), {})
    await ledger.record(transition(sell, t.ORDER_STATUS_TRADED, 11, fill=(10, 101_000, 60), filled=(10, 101_000)), {})

    [pnl] = await queries.day_pnl(db_pool, day_of(T0))

    assert (pnl.strategy, pnl.realised_paise, pnl.charges_paise, pnl.net_paise, pnl.fills, pnl.open_quantity) == (
        "S1", 10_000, 110, 9_890, 2, 0)


async def test_upserting_instruments_inserts_new_ones_and_updates_known_ones(db_pool):
    await upsert_instruments(db_pool, [market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ",
                                                             exchange_segment="nse_cm", tick_size_paise=5, lot_size=1)])

    await upsert_instruments(db_pool, [
        market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=10,
                              lot_size=1, freeze_quantity=50_000),
        market_pb2.Instrument(token=2885, symbol="RELIANCE", exchange_segment="bse_cm", tick_size_paise=5, lot_size=1)])

    got = await load_instruments(db_pool)
    assert [(i.exchange_segment, i.symbol, i.tick_size_paise, i.freeze_quantity) for i in got] == [
        ("bse_cm", "RELIANCE", 5, 0), ("nse_cm", "RELIANCE-EQ", 10, 50_000)]


async def test_ticks_of_all_tokens_come_in_time_order_for_replay(db_pool):
    await _store(db_pool, [tick(2, T0 + 2 * NS, 202), tick(1, T0 + 1 * NS, 101), tick(3, T0 + 3 * NS, 303)])

    got = await queries.ticks(db_pool, None, T0, T0 + 60 * NS)

    assert [x.token for x in got] == [1, 2, 3]
