"""Orders risk builds itself: a Signal turned into an OrderRequest, a manual order completed, and the intraday
square-off orders.

Pure functions over contracts and positions; the engine checks whatever they produce like any order.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, cast

from shared.bus import Sequencer
from shared.contracts import market_pb2, trading_pb2
from shared.errors import InvalidInput
from shared.ids import MAX_REASON_CHARS
from shared.instruments import InstrumentBook, not_tradable
from shared.money import fmt_inr
from shared.order_terms import LIMIT_SHORT_OF_TRIGGER, PRICED, stop_fault
from shared.positions import SQUAREOFF_TAG, PositionState, chunks, exit_side, whole_lots
from shared.price_factor import factor_of, price_factor

if TYPE_CHECKING:
    from services.risk.config import Limits

TRIGGERED = (trading_pb2.ORDER_TYPE_STOP_LIMIT, trading_pb2.ORDER_TYPE_STOP_MARKET)


def order_prices(order: trading_pb2.OrderRequest) -> list[tuple[str, int]]:
    """The (field, price) pairs an order type uses: limit price, trigger price, both or none."""
    prices = []
    if order.order_type in PRICED:
        prices.append(("price_paise", order.price_paise))
    if order.order_type in TRIGGERED:
        prices.append(("trigger_price_paise", order.trigger_price_paise))
    return prices


def stop_waits(order: trading_pb2.OrderRequest, last: int) -> bool:
    """A stop whose trigger is not reached at `last` (a sell stop at or under it, a buy stop at or over it): it waits,
    as a position's protective stop does, rather than trading at once."""
    if order.order_type not in TRIGGERED:
        return False
    trigger = order.trigger_price_paise
    return trigger > 0 and (trigger <= last if order.side == trading_pb2.SIDE_SELL else trigger >= last)


def stop_side_denial(order: trading_pb2.OrderRequest, last: int) -> tuple[str, str] | None:
    """(reason_code, reason) for a stop's terms Kotak/NSE refuse (shared.order_terms.stop_fault), None for any other
    order; `last`: today's last price (0: unknown, not judged). A stop through the market would trade at once on
    paper and be refused live."""
    trigger, price = order.trigger_price_paise, order.price_paise
    fault = stop_fault(order.side, order.order_type, price, trigger, last)
    if not fault:
        return None
    side, over, under = ("buy", "above", "below") if order.side == trading_pb2.SIDE_BUY else ("sell", "below", "above")
    if fault == LIMIT_SHORT_OF_TRIGGER:
        return "INVALID_PRICE", (f"limit price {fmt_inr(price)} is {under} the trigger {fmt_inr(trigger)}: a {side} "
                                 f"stop-limit (SL) needs its limit at or {over} its trigger, or once triggered it "
                                 f"rests behind the market; set the limit at or {over} {fmt_inr(trigger)}, or send "
                                 "a STOP_MARKET (SL-M) order")
    return "INVALID_TRIGGER", (f"trigger {fmt_inr(trigger)} is at or {under} the last price {fmt_inr(last)}: a "
                               f"{side} stop must trigger {over} the market (the exchange refuses it); to {side} "
                               f"now send a MARKET or LIMIT order, or set the trigger {over} {fmt_inr(last)}")


def signal_client_order_id(signal_id: str) -> str:
    """Deterministic idempotency key: a replayed signal maps to the same order, never a new one.

    FNV-1a (64-bit) in plain Python: stable across processes (unlike hash()), and unlike hashlib it never
    runs cold on the order path. The key is an idempotency tag, not a security boundary."""
    h = 0xCBF29CE484222325
    for byte in signal_id.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"sig-{h:016x}"


def order_from_signal(signal: trading_pb2.Signal) -> trading_pb2.OrderRequest:
    """The order a signal asks for. Prices are taken as they are: an off-tick price is rejected, not snapped."""
    return trading_pb2.OrderRequest(
        client_order_id=signal_client_order_id(signal.signal_id), token=signal.token,
        exchange_segment=signal.exchange_segment, symbol=signal.symbol, side=signal.side,
        quantity=signal.quantity, order_type=signal.order_type, price_paise=signal.limit_price_paise,
        trigger_price_paise=signal.trigger_price_paise, product=signal.product or trading_pb2.PRODUCT_MIS,
        validity=trading_pb2.VALIDITY_DAY, strategy_tag=signal.strategy, signal_id=signal.signal_id,
        tick_recv_ns=signal.tick_recv_ns, reason=signal.reason[:MAX_REASON_CHARS])


def square_off_orders(pos: PositionState, inst: market_pb2.Instrument | None, quantity: int, max_chunk: int,
                      day: date, attempt: int = 0, run: str = "") -> list[trading_pb2.OrderRequest]:
    """Market orders closing `quantity` of an intraday position, in chunks of at most `max_chunk`.

    The client_order_id is deterministic per day, risk run, attempt, token and chunk: a replayed attempt is
    idempotent, a later attempt (after a rejection) is a new order, and so is the first attempt of a restarted
    risk module (`run` differs), which would otherwise reuse an id the OMS already holds and be ignored.
    """
    side = exit_side(pos.net_quantity)
    segment = pos.exchange_segment or (inst.exchange_segment if inst else "")
    symbol = pos.symbol or (inst.symbol if inst else "")
    orders = []
    for n, qty in enumerate(chunks(quantity, max_chunk)):
        order = trading_pb2.OrderRequest(
            client_order_id=(f"SQ-{day:%Y%m%d}-{pos.token}-{pos.product}-{n}" + (f"-{run}" if run else "")
                             + (f"-r{attempt}" if attempt else "")),
            token=pos.token,
            exchange_segment=segment, symbol=symbol, side=side, quantity=qty,
            order_type=trading_pb2.ORDER_TYPE_MARKET, validity=trading_pb2.VALIDITY_DAY, strategy_tag=SQUAREOFF_TAG,
            reason="intraday square-off")
        order.product = cast("trading_pb2.Product", pos.product)  # PositionState keeps a plain int
        orders.append(order)
    return orders


def held_instrument(pos: PositionState) -> market_pb2.Instrument:
    """A stand-in for the instrument of a position in a token the instrument book does not list, to judge an order
    that only reduces it: the position's segment, symbol and price factor; lot 1 and no tick size or freeze quantity,
    which are not known here and so not checked (Kotak's own checks still apply)."""
    return market_pb2.Instrument(token=pos.token, symbol=pos.symbol, exchange_segment=pos.exchange_segment,
                                 lot_size=1, price_factor=price_factor(pos.price_factor))


def square_off_chunk(limits: Limits, inst: market_pb2.Instrument | None, price_paise: int) -> int:
    """Largest square-off order the checks allow: max quantity, freeze quantity and order value, in whole lots."""
    lot = (inst.lot_size if inst else 0) or 1
    chunk = limits.max_order_quantity
    if inst is not None and inst.freeze_quantity:
        chunk = min(chunk, inst.freeze_quantity)
    if price_paise > 0:  # each order's value, price x quantity x factor, within max_order_value
        factor = factor_of(inst.price_factor) if inst is not None else 1
        chunk = min(chunk, int(limits.max_order_value_paise // (price_paise * factor)))
    return whole_lots(chunk, lot)


def manual_order(order: trading_pb2.OrderRequest, instruments: InstrumentBook,
                 ids: Sequencer) -> trading_pb2.OrderRequest:
    """A manual order (SubmitOrder) checked for its shape (InvalidInput names the field) and completed: what may be
    defaulted, the instrument's symbol and segment, a client_order_id from `ids` when it has none."""
    if order.quantity <= 0:
        raise InvalidInput("order.quantity", f"must be positive, got {order.quantity}")
    if order.side == trading_pb2.SIDE_UNSPECIFIED:
        raise InvalidInput("order.side", "is unspecified; use SIDE_BUY or SIDE_SELL")
    if order.order_type == trading_pb2.ORDER_TYPE_UNSPECIFIED:
        raise InvalidInput("order.order_type", "is unspecified; use MARKET, LIMIT, STOP_LIMIT or STOP_MARKET")
    if order.order_type in (trading_pb2.ORDER_TYPE_LIMIT, trading_pb2.ORDER_TYPE_STOP_LIMIT) \
            and order.price_paise <= 0:
        raise InvalidInput("order.price_paise", f"must be positive for a limit order, got {order.price_paise}")
    if order.order_type in (trading_pb2.ORDER_TYPE_STOP_LIMIT, trading_pb2.ORDER_TYPE_STOP_MARKET) \
            and order.trigger_price_paise <= 0:
        raise InvalidInput("order.trigger_price_paise",
                           f"must be positive for a stop order, got {order.trigger_price_paise}")
    inst = instruments.get(order.token)
    if inst is None:  # the engine decides: an order reducing a position held in it passes, any other is refused
        return _completed(order, ids)
    if inst.is_index:
        raise InvalidInput("order.token", not_tradable(inst))
    # Risk checks the token's instrument; the broker places the symbol on the segment: they must be one.
    if order.symbol and order.symbol.upper() != inst.symbol.upper():
        raise InvalidInput("order.symbol", f"{order.symbol} is not token {order.token}, which is {inst.symbol}; "
                           "send the token and symbol of one instrument, or the token alone")
    if order.exchange_segment and order.exchange_segment.lower() != inst.exchange_segment.lower():
        raise InvalidInput("order.exchange_segment", f"{order.exchange_segment} is not where token {order.token} "
                           f"({inst.symbol}) trades: {inst.exchange_segment}")
    out = _completed(order, ids)
    out.exchange_segment = inst.exchange_segment
    out.symbol = inst.symbol
    return out


def _completed(order: trading_pb2.OrderRequest, ids: Sequencer) -> trading_pb2.OrderRequest:
    """A copy of the order with what may be defaulted filled in."""
    out = trading_pb2.OrderRequest()
    out.CopyFrom(order)
    out.client_order_id = out.client_order_id or f"man-{ids.next()}"
    out.product = out.product or trading_pb2.PRODUCT_MIS
    out.validity = out.validity or trading_pb2.VALIDITY_DAY
    out.strategy_tag = out.strategy_tag or "MANUAL"
    return out
