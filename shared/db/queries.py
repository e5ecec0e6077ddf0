"""Read-side queries: stored ticks, 1-minute candles aggregated in SQL, orders, day P&L per strategy.

Reads market_ticks, order_ledger and order_events through an asyncpg pool; returns protos or small dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg

from shared.clock import IST, UTC
from shared.contracts import market_pb2, trading_pb2
from shared.db.orders import LEDGER_COLUMNS, enum_value, row_to_update
from shared.db.partitions import day_start
from shared.positions import PositionBook

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _ns(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000


async def ticks(pool: asyncpg.Pool, token: int | None, start_ns: int, end_ns: int,
                limit: int = 100_000) -> list[market_pb2.Tick]:
    """Ticks with start_ns <= ts < end_ns in arrival order, of one token or (None) of all (replay)."""
    # Two statements, not "$1 IS NULL OR token = $1": a generic plan of that could not use the (token, ts) key.
    if token is None:
        rows = await pool.fetch("SELECT * FROM market_ticks WHERE ts >= $1 AND ts < $2 ORDER BY ts, seq LIMIT $3",
                                _ts(start_ns), _ts(end_ns), limit)
    else:
        rows = await pool.fetch("SELECT * FROM market_ticks WHERE token = $1 AND ts >= $2 AND ts < $3 "
                                "ORDER BY ts, seq LIMIT $4", token, _ts(start_ns), _ts(end_ns), limit)
    return [_tick(r) for r in rows]


# Keyset on (ts, seq), not on ts alone: a busy second can hold more ticks than a page. "ts >= $1" repeats the
# lower bound so that old partitions are pruned.
_TICKS_AFTER = ("SELECT * FROM market_ticks WHERE ts >= $1 AND ts < $3 AND (ts, seq) > ($1, $2) "
                "ORDER BY ts, seq LIMIT $4")
TickKey = tuple[datetime, int]  # (ts, seq): where a page of ticks ended


async def ticks_page(pool: asyncpg.Pool, start_ns: int, end_ns: int, limit: int,
                     after: TickKey | None = None) -> tuple[list[market_pb2.Tick], TickKey | None]:
    """All tokens' ticks with start_ns <= ts < end_ns in (ts, seq) order, `limit` at a time from after the key
    the previous page returned; the key is None once the range is read (replay)."""
    ts, seq = after or (_ts(start_ns), -(2**63))  # seq is a bigint: the first page starts before every seq
    async with pool.acquire() as conn, conn.transaction():
        # The order must come from the (ts, seq) index (migration 0005) whatever the statistics say: on a day not
        # analysed yet the planner guesses a few rows, and sorting the rest of the range (on every page) looks cheaper.
        await conn.execute("SET LOCAL enable_sort = off")
        rows = await conn.fetch(_TICKS_AFTER, ts, seq, _ts(end_ns), limit)
    return [_tick(r) for r in rows], ((rows[-1]["ts"], rows[-1]["seq"]) if len(rows) == limit else None)


async def latest_tick_ns(pool: asyncpg.Pool, start_ns: int, end_ns: int) -> int | None:
    """The time of the newest tick stored in [start_ns, end_ns), or None."""
    ts = await pool.fetchval("SELECT max(ts) FROM market_ticks WHERE ts >= $1 AND ts < $2", _ts(start_ns), _ts(end_ns))
    return None if ts is None else _ns(ts)


async def latest_tick_day(db: asyncpg.Pool | asyncpg.Connection) -> date | None:
    """The IST day of the newest tick stored, or None when market_ticks is empty (a replay's default day)."""
    ts = await db.fetchval("SELECT max(ts) FROM market_ticks")
    return None if ts is None else ts.astimezone(IST).date()


def _tick(r: asyncpg.Record) -> market_pb2.Tick:
    return market_pb2.Tick(token=r["token"], exchange_segment=r["exchange_segment"], ts_ns=_ns(r["ts"]),
                           ltp_paise=r["ltp"], ltq=r["ltq"], volume=r["volume"], bid_paise=r["bid"],
                           ask_paise=r["ask"], bid_qty=r["bid_qty"], ask_qty=r["ask_qty"], open_paise=r["open"],
                           high_paise=r["high"], low_paise=r["low"], close_paise=r["close"],
                           open_interest=r["oi"], atp_paise=r["atp"])


# The same rules as the live CandleBuilder (services/strategy/candles.py), over the stored ticks in time order
# (ts, then seq: arrival order breaks ties). Minutes in UTC are IST minutes too (IST = UTC+05:30).
# Volume, per IST day (the cumulative day volume starts again at IST midnight), from the ticks with day volume
# taken one instant (ts) at a time: the volume held is the highest day volume of the last instant before. An
# instant whose first tick is not below it adds how far its highest day volume passes it; one whose first tick is
# below it (a feed restart ingestion passed on: newer than the held one) adds that tick's ltq (at most its day
# volume) and how far its highest day volume passes the tick's, and re-bases on it. Later ticks of an instant below
# its highest add nothing (the builder: not newer than the tick it holds). Ticks without day volume (0, lite mode)
# add their ltq until the day's first tick with day volume, and nothing after it. One intended difference: the
# first instant with day volume of each IST day in range counts from its first tick's day volume, without that
# tick's ltq (the range may start mid-day, so the volume before the tick is not known to be earlier candles');
# the builder, which sees the whole day, adds min(ltq, day volume) of the first tick. The builder also ignores
# ticks that arrive after their minute closed (late_ticks); the stored ticks include them.
_CANDLES = """
WITH t AS (
    SELECT ts, seq, ltp, ltq, volume, exchange_segment,
           bool_or(volume > 0) OVER (PARTITION BY day ORDER BY ts, seq) AS volume_seen, day
    FROM (SELECT *, floor((extract(epoch FROM ts) + 19800) / 86400) AS day
          FROM market_ticks WHERE token = $1 AND ts >= $2 AND ts < $3) AS r),
i AS (
    SELECT day, ts, (array_agg(volume ORDER BY seq))[1] AS first, (array_agg(ltq ORDER BY seq))[1] AS first_ltq,
           max(volume) AS high
    FROM t WHERE volume > 0 GROUP BY day, ts),
grew AS (
    SELECT day, date_trunc('minute', ts) AS minute,
           sum(CASE WHEN held IS NULL THEN high - first
                    WHEN first >= held THEN high - held
                    ELSE least(first_ltq, first) + high - first END) AS volume
    FROM (SELECT *, lag(high) OVER (PARTITION BY day ORDER BY ts) AS held FROM i) AS x
    GROUP BY day, minute),
m AS (
    SELECT day, date_trunc('minute', ts) AS minute, max(exchange_segment) AS segment,
           (array_agg(ltp ORDER BY ts, seq))[1] AS open, max(ltp) AS high, min(ltp) AS low,
           (array_agg(ltp ORDER BY ts DESC, seq DESC))[1] AS close, count(*) AS n,
           COALESCE(sum(ltq) FILTER (WHERE NOT volume_seen), 0) AS lite
    FROM t GROUP BY day, minute)
SELECT minute, segment, open, high, low, close, n, (lite + COALESCE(grew.volume, 0))::bigint AS volume
FROM m LEFT JOIN grew USING (day, minute)
ORDER BY minute"""


# The newest second with a day volume, and the highest of that second: what _CANDLES's `grew` holds after it.
_DAY_VOLUME = """
SELECT ts, max(volume) AS volume FROM market_ticks
WHERE token = $1 AND ts >= $2 AND ts < $3 AND volume > 0
GROUP BY ts ORDER BY ts DESC LIMIT 1"""


async def day_volume_reached(pool: asyncpg.Pool, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
    """The cumulative day volume `token`'s stored ticks with start_ns <= ts < end_ns reached, as the candle builder
    holds it after them (the highest of the newest tick time that carried one), and that time; None if none did."""
    row = await pool.fetchrow(_DAY_VOLUME, token, _ts(start_ns), _ts(end_ns))
    return (int(row["volume"]), _ns(row["ts"])) if row else None


async def price_range(pool: asyncpg.Pool, token: int, start_ns: int, end_ns: int) -> tuple[int, int] | None:
    """The highest and lowest last price (paise) of `token`'s stored ticks with start_ns <= ts < end_ns; None if it
    has none there."""
    row = await pool.fetchrow("SELECT max(ltp) AS high, min(ltp) AS low FROM market_ticks "
                              "WHERE token = $1 AND ts >= $2 AND ts < $3 AND ltp > 0",
                              token, _ts(start_ns), _ts(end_ns))
    return (int(row["high"]), int(row["low"])) if row is not None and row["high"] is not None else None


async def candles_1m(pool: asyncpg.Pool, token: int, start_ns: int, end_ns: int) -> list[market_pb2.Candle]:
    """1-minute OHLCV candles of `token` built from stored ticks, oldest first."""
    rows = await pool.fetch(_CANDLES, token, _ts(start_ns), _ts(end_ns))
    return [market_pb2.Candle(token=token, exchange_segment=r["segment"], start_ns=_ns(r["minute"]),
                              open_paise=r["open"], high_paise=r["high"], low_paise=r["low"],
                              close_paise=r["close"], volume=r["volume"], tick_count=r["n"]) for r in rows]


async def orders(pool: asyncpg.Pool, day: date, strategy_tag: str = "", status: str = "",
                 limit: int = 1000) -> list[trading_pb2.OrderUpdate]:
    """Orders created on an IST day, newest first; status is a name such as 'OPEN' or 'TRADED'."""
    rows = await pool.fetch(
        f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE created_at >= $1 AND created_at < $2 "
        "AND ($3 = '' OR strategy_tag = $3) AND ($4 = '' OR status = $4) "
        "ORDER BY created_at DESC, written_seq DESC LIMIT $5",
        day_start(day), day_start(day + timedelta(days=1)), strategy_tag, status.upper(), limit)
    return [row_to_update(r) for r in rows]


@dataclass(frozen=True)
class StrategyPnl:
    strategy: str
    realised_paise: int
    charges_paise: int
    fills: int
    open_quantity: int  # net quantity still open at the end of the day (unrealised P&L needs a price)

    @property
    def net_paise(self) -> int:
        return self.realised_paise - self.charges_paise


async def day_pnl(pool: asyncpg.Pool, day: date) -> list[StrategyPnl]:
    """Realised P&L per strategy from the day's fills (order_events), folded with shared.positions."""
    rows = await pool.fetch("""
        SELECT o.strategy_tag, o.token, o.product, o.side, e.fill_qty, e.fill_price, e.fill_charges
        FROM order_events e JOIN order_ledger o USING (internal_id)
        WHERE e.fill_qty > 0 AND e.ts >= $1 AND e.ts < $2
        ORDER BY e.ts, e.event_id""", day_start(day), day_start(day + timedelta(days=1)))
    books: dict[str, PositionBook] = {}
    fills: dict[str, int] = {}
    for r in rows:
        book = books.setdefault(r["strategy_tag"], PositionBook())
        fills[r["strategy_tag"]] = fills.get(r["strategy_tag"], 0) + 1
        book.apply_update(trading_pb2.OrderUpdate(
            last_fill_quantity=r["fill_qty"], last_fill_price_paise=r["fill_price"],
            last_fill_charges_paise=r["fill_charges"],
            request=trading_pb2.OrderRequest(token=r["token"], side=enum_value(trading_pb2.Side, "SIDE_", r["side"]),
                                             product=enum_value(trading_pb2.Product, "PRODUCT_", r["product"]))))
    return [StrategyPnl(tag, book.realised_pnl_paise(), book.charges_paise(), fills[tag],
                        sum(p.net_quantity for p in book.positions.values()))
            for tag, book in sorted(books.items())]
