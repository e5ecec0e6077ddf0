"""The VirtualBroker's fill rules as pure functions of an order and a tick or a candle.

No state, no I/O: virtual_broker.py decides when to call them; the rules are documented there.
"""

from __future__ import annotations

from shared.clock import ist_day_number
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t


def arrival_price(side: int, tick: market_pb2.Tick | None, now_ns: int) -> int:
    """What a marketable order pays on arrival (at `now_ns`): the ask (buy) / bid (sell), else the ltp; 0 = no
    price. A tick of an earlier IST day is no price: yesterday's last quote is not where the market opens."""
    if tick is None or ist_day_number(tick.ts_ns) < ist_day_number(now_ns):
        return 0
    quote = tick.ask_paise if side == t.SIDE_BUY else tick.bid_paise
    return quote or tick.ltp_paise


def limit_marketable(side: int, limit_paise: int, price_paise: int) -> bool:
    """A limit at or through the arrival price trades at once."""
    if price_paise <= 0:
        return False
    return limit_paise >= price_paise if side == t.SIDE_BUY else limit_paise <= price_paise


def limit_price_in(side: int, limit_paise: int, candle: market_pb2.Candle, reference_paise: int = 0) -> int | None:
    """Buy fills when low < limit at min(limit, reference); sell when high > limit at max(limit, reference).

    The reference is the candle's open, or the trigger price reached inside the candle (stop-limit).
    """
    ref = reference_paise or candle.open_paise
    if side == t.SIDE_BUY:
        return min(limit_paise, ref) if candle.low_paise < limit_paise else None
    return max(limit_paise, ref) if candle.high_paise > limit_paise else None


def stop_triggered(side: int, trigger_paise: int, candle: market_pb2.Candle) -> bool:
    """A buy stop triggers when high >= trigger, a sell stop when low <= trigger."""
    if side == t.SIDE_BUY:
        return candle.high_paise >= trigger_paise
    return candle.low_paise <= trigger_paise


def tick_triggers(side: int, trigger_paise: int, ltp_paise: int) -> bool:
    """A tick triggers a buy stop when its ltp is at or above the trigger, a sell stop when at or below."""
    return ltp_paise >= trigger_paise if side == t.SIDE_BUY else ltp_paise <= trigger_paise


def stop_price_in(side: int, trigger_paise: int, candle: market_pb2.Candle) -> int:
    """Where a triggered stop trades: max(trigger, open) for a buy, min(trigger, open) for a sell (gaps)."""
    if side == t.SIDE_BUY:
        return max(trigger_paise, candle.open_paise)
    return min(trigger_paise, candle.open_paise)


def candle_price(request: t.OrderRequest, triggered: bool, candle: market_pb2.Candle) -> tuple[int | None, bool]:
    """(fill price or None, triggered after this candle) for an order working through `candle`."""
    side, kind = request.side, request.order_type
    if kind == t.ORDER_TYPE_MARKET:
        return candle.open_paise, triggered
    if kind == t.ORDER_TYPE_LIMIT:
        return limit_price_in(side, request.price_paise, candle), triggered
    if triggered:  # a stop triggered earlier: its remainder works as a market or a limit order
        if kind == t.ORDER_TYPE_STOP_MARKET:
            return candle.open_paise, True
        return limit_price_in(side, request.price_paise, candle), True
    if not stop_triggered(side, request.trigger_price_paise, candle):
        return None, False
    reached = stop_price_in(side, request.trigger_price_paise, candle)
    if kind == t.ORDER_TYPE_STOP_MARKET:
        return reached, True
    return limit_price_in(side, request.price_paise, candle, reached), True
