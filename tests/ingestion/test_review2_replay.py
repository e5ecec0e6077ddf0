"""Replay, reviewed again: ticks that share a timestamp (Kotak stamps quote updates with the last trade's time) come
back in arrival order, one tick per token per batch, so a backtest's order fills at the quote it was made from,
not at one that arrived later."""

from __future__ import annotations

import csv
from datetime import date

import asyncpg
import pytest

from services.ingestion.instrument_store import upsert_instruments
from services.ingestion.replay import ReplaySource
from services.ingestion.tick_writer import TickWriter
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.db.config import DatabaseSettings
from shared.marketdata import nse_instruments
from tests.app.test_backtest import ORB, ORB_PRICES, SYMBOLS, THURSDAY, backtest
from tests.helpers import replay_all

DAY = date(2026, 1, 20)
AT = ist_ns(DAY, 10, 0)
RELIANCE, TCS, SBIN = 2885, 11536, 3045


def tick(token: int, ts_ns: int, ltp: int, ask: int = 0) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=1, volume=1,
                           bid_paise=ltp - 5, ask_paise=ask or ltp + 5, bid_qty=100, ask_qty=100)


async def store(pool: asyncpg.Pool, clock_ns: int, *offers: list[market_pb2.Tick]) -> None:
    """Through the real tick writer, one offer each: seq (arrival order) follows the order given."""
    await upsert_instruments(pool, nse_instruments(SYMBOLS))
    writer = TickWriter(pool, DatabaseSettings(), clock=ManualClock(clock_ns))
    for ticks in offers:
        writer.offer(market_pb2.TickBatch(ticks=ticks))
    await writer.close(grace_s=60)
    assert writer.persisted == sum(len(o) for o in offers)


async def test_ticks_sharing_a_timestamp_replay_in_arrival_order_one_tick_per_token_per_batch(db_pool):
    await store(db_pool, AT, [tick(RELIANCE, AT, 1), tick(TCS, AT, 2)], [tick(RELIANCE, AT, 3)],
                [tick(RELIANCE, AT, 4), tick(TCS, AT, 5), tick(SBIN, AT, 6)], [tick(TCS, AT + NS, 7)])

    got = await replay_all(ReplaySource(db_pool, [], AT - NS, AT + 2 * NS, ManualClock(0), speed=0))

    assert [[t.ltp_paise for t in batch] for batch in got] == [[1, 2], [3], [4, 5, 6], [7]]


async def test_each_replayed_batch_is_received_after_the_one_before(db_pool):
    await store(db_pool, AT, *[[tick(RELIANCE, AT, price)] for price in range(1, 40)])

    got = await replay_all(ReplaySource(db_pool, [], AT - NS, AT + NS, ManualClock(0), speed=0))

    received = [batch[0].recv_ns for batch in got]
    assert len(received) == 39 and received == sorted(set(received))  # strictly rising


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_backtest_breakout_buy_fills_at_the_ask_quoted_at_the_break_not_at_a_later_quote(database, tmp_path):
    """ORB breaks at 09:33:20 (ask 101.05); quote updates over the next seconds keep that last trade time while
    the ask walks up to 103.00. The MARKET buy fills at 101.05: the later asks were not known at the break."""
    start = ist_ns(THURSDAY, 9, 30)
    offers, volume = [], 0
    for second, price in ORB_PRICES:
        volume += 1
        offers.append([market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=start + second * NS,
                                       ltp_paise=price, ltq=1, volume=volume, bid_paise=price - 5,
                                       ask_paise=price + 5, bid_qty=100, ask_qty=100)])
        if second == 200:  # the break
            offers += [[market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=start + second * NS,
                                        ltp_paise=price, ltq=0, volume=volume, bid_paise=price - 5, ask_paise=ask,
                                        bid_qty=100, ask_qty=100)] for ask in (101_50, 102_00, 103_00)]
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        await store(pool, start, *offers)
    finally:
        await pool.close()
    config, trades = tmp_path / "orb.toml", tmp_path / "orb.csv"
    config.write_text(ORB)

    done = await backtest(database, "--config", str(config), "--to", "2026-11-19", "--trades", str(trades))

    assert done.returncode == 0, done.stderr
    buy = next(row for row in csv.DictReader(trades.read_text().splitlines()) if row["side"] == "BUY")
    assert buy["price"] == "101.05"
