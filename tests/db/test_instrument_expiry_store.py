"""A contract's expiry in instrument_master: a start from today's stored rows (a scrip master that cannot be read)
and a replay read it back, so risk and the strategies still know an expired contract. Embedded PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime

from services.ingestion.instrument_store import load_instruments, upsert_instruments
from shared.clock import IST, day_of, ist_ns
from shared.contracts import market_pb2

NIFTY_FUT = 52_168
EXPIRY = date(2026, 1, 27)


def nifty_future(expiry: date) -> market_pb2.Instrument:
    return market_pb2.Instrument(token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo",
                                 tick_size_paise=10, lot_size=65, expiry_ns=ist_ns(expiry, 0, 0))


async def test_todays_stored_rows_give_back_each_contracts_expiry(db_pool):
    reliance = market_pb2.Instrument(token=2885, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=10,
                                     lot_size=1)
    await upsert_instruments(db_pool, [nifty_future(EXPIRY), reliance])

    stored = await load_instruments(db_pool, stored_on=datetime.now(IST).date())

    assert {i.symbol: day_of(i.expiry_ns) if i.expiry_ns else None for i in stored} == {
        "NIFTY26JANFUT": EXPIRY, "RELIANCE-EQ": None}


async def test_a_token_listed_again_with_another_expiry_is_stored_with_the_new_one(db_pool):
    """The exchange hands an expired contract's token to a new one: the day's re-read of the scrip master rewrites
    the row, its expiry with it."""
    await upsert_instruments(db_pool, [nifty_future(EXPIRY)])
    await upsert_instruments(db_pool, [nifty_future(date(2026, 2, 24))])

    stored = await load_instruments(db_pool)

    assert [day_of(i.expiry_ns) for i in stored] == [date(2026, 2, 24)]
