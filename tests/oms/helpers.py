"""Builders shared by the OMS tests: orders, ticks, candles, and a deadline poll."""

from __future__ import annotations

from shared.clock import NS
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t

TOKEN = 2885
T0 = 1_764_000_000 * NS  # a whole minute, UTC
MINUTE = 60 * NS


def order(side=t.SIDE_BUY, kind=t.ORDER_TYPE_LIMIT, quantity=10, price=100_00, trigger=0,
          validity=t.VALIDITY_DAY, client_order_id="c-1", token=TOKEN) -> t.OrderRequest:
    return t.OrderRequest(client_order_id=client_order_id, token=token, exchange_segment="nse_cm",
                          symbol="RELIANCE-EQ", side=side, quantity=quantity, order_type=kind,
                          price_paise=price, trigger_price_paise=trigger, product=t.PRODUCT_MIS,
                          validity=validity, strategy_tag="TEST")


def candle(open_, high, low, close, volume=1_000, start_ns=T0 + MINUTE, token=TOKEN) -> market_pb2.Candle:
    return market_pb2.Candle(token=token, exchange_segment="nse_cm", start_ns=start_ns, open_paise=open_,
                             high_paise=high, low_paise=low, close_paise=close, volume=volume, tick_count=10)


def tick(ltp, bid=0, ask=0, token=TOKEN, ts_ns=T0, recv_ns=0) -> market_pb2.TickBatch:
    return market_pb2.TickBatch(ticks=[market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns,
                                                       ltp_paise=ltp, bid_paise=bid, ask_paise=ask, recv_ns=recv_ns)])

