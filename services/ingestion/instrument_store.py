"""Keeps instrument_master in step with the source's instrument list (upsert by token and segment).

Written by ingestion with the scrip master (at start and each day's re-read); read back by a replay, and by a Kotak
start whose scrip master cannot be read. Talks to PostgreSQL through an asyncpg pool.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any

from shared.clock import IST
from shared.contracts import market_pb2
from shared.price_factor import factor_of, price_factor

_UPSERT = """
INSERT INTO instrument_master (instrument_token, exchange_segment, symbol, tick_size, lot_size, freeze_qty, name, isin,
    price_band_bps, price_factor_num, price_factor_den, is_index, expiry_ns, updated_at)
SELECT r.token, r.segment, r.symbol, r.tick, r.lot, r.freeze_qty, r.name, r.isin, r.band, r.factor_num, r.factor_den,
    r.is_index, r.expiry_ns, now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::text[],
            $9::bigint[], $10::bigint[], $11::bigint[], $12::boolean[], $13::bigint[])
    AS r(token, segment, symbol, tick, lot, freeze_qty, name, isin, band, factor_num, factor_den, is_index, expiry_ns)
ON CONFLICT (instrument_token, exchange_segment) DO UPDATE SET
    symbol = EXCLUDED.symbol, tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size,
    freeze_qty = EXCLUDED.freeze_qty, name = EXCLUDED.name, isin = EXCLUDED.isin,
    price_band_bps = EXCLUDED.price_band_bps, price_factor_num = EXCLUDED.price_factor_num,
    price_factor_den = EXCLUDED.price_factor_den, is_index = EXCLUDED.is_index, expiry_ns = EXCLUDED.expiry_ns,
    updated_at = now()"""


async def upsert_instruments(pool: Any, instruments: list[market_pb2.Instrument]) -> int:
    """Insert new instruments and update known ones in one statement; returns how many were sent."""
    pool = getattr(pool, "pool", pool)
    unique = {(i.token, i.exchange_segment): i for i in instruments}  # one row per key, the last one wins
    items = list(unique.values())
    if not items:
        return 0
    factors = [factor_of(i.price_factor) for i in items]
    await pool.execute(_UPSERT, [i.token for i in items], [i.exchange_segment for i in items],
                       [i.symbol for i in items], [i.tick_size_paise for i in items], [i.lot_size for i in items],
                       [i.freeze_quantity for i in items], [i.name for i in items], [i.isin for i in items],
                       [i.price_band_bps for i in items], [f.numerator for f in factors],
                       [f.denominator for f in factors], [i.is_index for i in items], [i.expiry_ns for i in items])
    return len(items)


async def load_instruments(pool: Any, stored_on: date | None = None) -> list[market_pb2.Instrument]:
    """Every stored instrument, by segment and symbol; with `stored_on`, those stored that IST day only (a start
    stores its instruments, from that day's scrip master)."""
    pool = getattr(pool, "pool", pool)
    if stored_on is None:
        rows = await pool.fetch("SELECT * FROM instrument_master ORDER BY exchange_segment, symbol")
    else:
        midnight = datetime.combine(stored_on, time(), IST)
        rows = await pool.fetch("SELECT * FROM instrument_master WHERE updated_at >= $1 AND updated_at < $2 "
                                "ORDER BY exchange_segment, symbol", midnight, midnight + timedelta(days=1))
    return [market_pb2.Instrument(token=r["instrument_token"], symbol=r["symbol"],
                                  exchange_segment=r["exchange_segment"], tick_size_paise=r["tick_size"],
                                  lot_size=r["lot_size"], freeze_quantity=r["freeze_qty"], name=r["name"],
                                  isin=r["isin"], price_band_bps=r["price_band_bps"],
                                  price_factor=price_factor(Fraction(r["price_factor_num"], r["price_factor_den"])),
                                  is_index=r["is_index"], expiry_ns=r["expiry_ns"])
            for r in rows]
