"""Small helpers for the database tests: polling with a deadline, tick and order factories, an open reader."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg

from shared.contracts import market_pb2, trading_pb2
from tests.helpers import eventually


async def until(predicate, bool: float = 10.0) -> None:
    await eventually(predicate, bool)


def tick(token: int = 2885, ts_ns: int | None = None, ltp: int = 250_000, volume: int = 1_000,
         ltq: int = 10) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns or time.time_ns(), ltp_paise=ltp,
                           volume=volume, ltq=ltq, bid_paise=ltp - 5, ask_paise=ltp + 5, bid_qty=3, ask_qty=4)


def batch(n: int, token: int = 2885, start_ns: int | None = None) -> market_pb2.TickBatch:
    start = start_ns or time.time_ns()
    return market_pb2.TickBatch(ticks=[tick(token, start + i * 1000, 250_000 + i, 1_000 + i) for i in range(n)])


def new_order(internal_id: str, client_order_id: str = "sig-1", *, strategy: str = "MOMENTUM_RSI",
              side: int = trading_pb2.SIDE_BUY, quantity: int = 10, price: int = 250_000, sequence: int = 1,
              ts_ns: int | None = None, token: int = 2885) -> trading_pb2.OrderUpdate:
    req = trading_pb2.OrderRequest(client_order_id=client_order_id, token=token, exchange_segment="nse_cm",
                                   symbol="RELIANCE-EQ", side=side, quantity=quantity,
                                   order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=price,
                                   product=trading_pb2.PRODUCT_MIS, validity=trading_pb2.VALIDITY_DAY,
                                   strategy_tag=strategy, signal_id=client_order_id)
    return trading_pb2.OrderUpdate(internal_id=internal_id, client_order_id=client_order_id,
                                   status=trading_pb2.ORDER_STATUS_PENDING_NEW, request=req,
                                   ts_ns=ts_ns or time.time_ns(), sequence=sequence)


def transition(order: trading_pb2.OrderUpdate, status: int, sequence: int, *, fill: tuple[int, int, int] = (0, 0, 0),
               filled: tuple[int, int] = (0, 0), exchange_id: str = "", reason: str = "",
               reason_code: str = "") -> trading_pb2.OrderUpdate:
    u = trading_pb2.OrderUpdate()
    u.CopyFrom(order)
    u.previous_status, u.status, u.sequence = order.status, status, sequence
    u.last_fill_quantity, u.last_fill_price_paise, u.last_fill_charges_paise = fill
    if filled != (0, 0):
        u.filled_quantity, u.average_price_paise = filled
    if exchange_id:
        u.exchange_order_id = exchange_id
    u.reason, u.reason_code = reason, reason_code
    u.ts_ns = order.ts_ns + 1_000_000
    return u


@contextlib.asynccontextmanager
async def reading_market_ticks(database: str) -> AsyncIterator[int]:
    """An analyst's psql session: a read of market_ticks in a transaction left open; yields its backend pid."""
    reader = await asyncpg.connect(database)
    tx = reader.transaction()
    await tx.start()
    await reader.fetchval("SELECT count(*) FROM market_ticks WHERE ts > now() - interval '1 hour'")
    try:
        yield reader.get_server_pid()
    finally:
        await tx.rollback()
        await reader.close()
