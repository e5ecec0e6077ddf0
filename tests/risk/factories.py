"""Builders for the risk tests: limits, instruments, orders and fills on a Wednesday NSE session."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from services.risk.config import Limits, RiskSettings
from services.risk.engine import RiskEngine
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

DAY = date(2026, 1, 21)  # a Wednesday
RELIANCE = 2885
NIFTY_FUT = 35001
_ids = itertools.count(1)


def limits(**overrides: Any) -> Limits:
    return load(RiskSettings, {}).limits().model_copy(update=overrides)


def instruments() -> InstrumentBook:
    book = InstrumentBook(nse_instruments(["RELIANCE-EQ", "SBIN-EQ"]))
    book.add(market_pb2.Instrument(token=NIFTY_FUT, symbol="NIFTY26JANFUT", exchange_segment="nse_fo",
                                   tick_size_paise=10, lot_size=75, freeze_quantity=1800))
    return book


def order(**fields: Any) -> trading_pb2.OrderRequest:
    base: dict[str, Any] = dict(
        client_order_id=f"c{next(_ids)}", token=RELIANCE, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
        side=trading_pb2.SIDE_BUY, quantity=10, order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=1290_00,
        product=trading_pb2.PRODUCT_MIS, validity=trading_pb2.VALIDITY_DAY, strategy_tag="TEST")
    base.update(fields)
    return trading_pb2.OrderRequest(**base)


def square_off(**fields: Any) -> trading_pb2.OrderRequest:
    """A SQUAREOFF order: market, as risk and the OMS send them (the tag on anything else is refused)."""
    return order(**{"strategy_tag": "SQUAREOFF", "order_type": trading_pb2.ORDER_TYPE_MARKET, "price_paise": 0,
                    **fields})


def fill(side: int, quantity: int, price_paise: int, token: int = RELIANCE,
         status: int = trading_pb2.ORDER_STATUS_TRADED, client_order_id: str = "",
         product: int = trading_pb2.PRODUCT_MIS) -> trading_pb2.OrderUpdate:
    """An OMS update carrying one fill of `quantity` (the whole order when status is TRADED)."""
    cid = client_order_id or f"f{next(_ids)}"
    req = trading_pb2.OrderRequest(client_order_id=cid, token=token, side=side, quantity=quantity,
                                   order_type=trading_pb2.ORDER_TYPE_MARKET, product=product)
    return trading_pb2.OrderUpdate(client_order_id=cid, status=status, request=req, filled_quantity=quantity,
                                   average_price_paise=price_paise, last_fill_quantity=quantity,
                                   last_fill_price_paise=price_paise)


def holding(clock: ManualClock, *fills: trading_pb2.OrderUpdate) -> RiskEngine:
    """A RiskEngine that has seen these fills, with RELIANCE last traded at Rs 1,290."""
    engine = RiskEngine(limits(), clock, instruments())
    for update in fills:
        engine.on_order_update(update)
    engine.last_prices[RELIANCE] = 1290_00
    return engine
