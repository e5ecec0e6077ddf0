"""The ONE place Kotak Neo field names, statuses and reply shapes meet NeoPulse's contract types.

Pure functions over SDK replies (dicts) and protos; used by session.py, broker.py and the feed source.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from json import JSONDecodeError
from typing import Any

from neo_api_client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.oms.broker import BrokerOrderEvent
from shared.clock import IST_OFFSET_S, NS
from shared.contracts import market_pb2, oms_pb2, trading_pb2
from shared.errors import NeoPulseError, NotSent
from shared.kotak.config import HTTP_STATUS
from shared.money import to_paise, to_rupees
from shared.price_factor import price_factor as price_factor_proto
from shared.price_factor import representable

log = logging.getLogger(__name__)
S = trading_pb2
# Kotak order statuses (ordSt) as the order book, history and order feed spell them.
STATUS: dict[str, int] = {
    "put order req received": S.ORDER_STATUS_SUBMITTED,
    "validation pending": S.ORDER_STATUS_SUBMITTED,
    "open pending": S.ORDER_STATUS_SUBMITTED,
    "after market order req received": S.ORDER_STATUS_SUBMITTED,
    "modify after market order req received": S.ORDER_STATUS_SUBMITTED,
    "open": S.ORDER_STATUS_OPEN,
    "modified": S.ORDER_STATUS_OPEN,
    "trigger pending": S.ORDER_STATUS_TRIGGER_PENDING,
    "complete": S.ORDER_STATUS_TRADED,
    "traded": S.ORDER_STATUS_TRADED,
    "rejected": S.ORDER_STATUS_REJECTED,
    "cancelled": S.ORDER_STATUS_CANCELLED,
    "cancelled after market order": S.ORDER_STATUS_CANCELLED,
    "cancel pending": S.ORDER_STATUS_CANCEL_PENDING,
    "modify pending": S.ORDER_STATUS_MODIFY_PENDING,
    "modify validation pending": S.ORDER_STATUS_MODIFY_PENDING,
}
TERMINAL = {S.ORDER_STATUS_TRADED, S.ORDER_STATUS_REJECTED, S.ORDER_STATUS_CANCELLED}
ORDER_TYPE = {S.ORDER_TYPE_MARKET: "MKT", S.ORDER_TYPE_LIMIT: "L", S.ORDER_TYPE_STOP_LIMIT: "SL",
              S.ORDER_TYPE_STOP_MARKET: "SL-M"}
PRODUCT = {S.PRODUCT_MIS: "MIS", S.PRODUCT_CNC: "CNC", S.PRODUCT_NRML: "NRML"}
PRODUCT_BACK = {v: k for k, v in PRODUCT.items()}
VALIDITY = {S.VALIDITY_DAY: "DAY", S.VALIDITY_IOC: "IOC", S.VALIDITY_UNSPECIFIED: "DAY"}
SIDE = {S.SIDE_BUY: "B", S.SIDE_SELL: "S"}
ORDER_ALREADY_COMPLETE = 1021
# What the SDK's modify_order answers for any failure but an ApiException (a timeout is one; an HTML error page
# it cannot decode is another): the request may have reached Kotak.
SDK_CALL_FAILED = "Exception has been occurred while connecting to API"
# The segments Kotak's limits reply gives an MTM of: <segment>RlsMtomPrsnt, <segment>UnRlsMtomPrsnt.
MTM_SEGMENTS = ("Cash", "Fo", "Com", "Cur")
# Kotak's "no value" in text fields such as rejRsn.
NO_VALUE = frozenset({"", "--", "NA"})
_EXPIRED = re.compile(r"invalid credentials|session (has )?expired|invalid session|invalid (access )?token|"
                      r"complete the 2fa|authentication failed", re.I)
# Codes of a session Kotak no longer takes, top-level or inside an error list (kotak-neo-api #166, #207: 10020
# "Authentication Failed" for a token it stopped taking).
_EXPIRED_CODES = frozenset({"900901", "10020"})


def paise(value: Any) -> int:
    """A Kotak price field (string/number rupees, or empty) -> paise; empty means 0."""
    if value in (None, ""):
        return 0
    try:
        return to_paise(str(value))
    except (ValueError, InvalidOperation):
        return 0


def integer(value: Any) -> int:
    if value in (None, ""):
        return 0
    try:
        return int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return 0


# replies ---------------------------------------------------------------------------
def is_session_expired(reply: Any) -> bool:
    """Kotak's invalid-credentials / session-expired answers, in any of the SDK's reply shapes."""
    if not isinstance(reply, dict):
        return False
    if str(reply.get("code", "")) in _EXPIRED_CODES:
        return True
    errors = reply.get("error")
    if isinstance(errors, list) and any(isinstance(e, dict) and str(e.get("code", "")) in _EXPIRED_CODES
                                        for e in errors):
        return True
    return bool(_EXPIRED.search(error_text(reply)))


def error_text(reply: dict) -> str:
    parts = []
    for key in ("Error Message", "emsg", "errMsg", "message", "description"):
        if reply.get(key):
            parts.append(str(reply[key]))
    for key in ("error", "Error"):
        value = reply.get(key)
        if isinstance(value, list):
            parts.extend(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in value)
        elif value is not None:
            parts.append(str(getattr(value, "reason", None) or value))
    return "; ".join(dict.fromkeys(parts))


def reply_error(reply: Any) -> tuple[str, str] | None:
    """None when the reply is a success; else (kind, text), kind "unknown" (timeout, transport, an HTTP 5xx as
    KotakTransport marks it, a 5xx stCode or gateway code: the call may have happened) or "refused" (Kotak answered
    no)."""
    if not isinstance(reply, (dict, list)):
        return ("unknown", f"unexpected reply type {type(reply).__name__}")
    if isinstance(reply, list):
        return None
    for key in ("error", "Error"):
        exc = reply.get(key)
        if isinstance(exc, BaseException):
            return (_exception_kind(exc), str(getattr(exc, "reason", None) or exc))
        if exc == SDK_CALL_FAILED:
            return ("unknown", exc)
    http, st_code, code = (integer(reply.get(k)) for k in (HTTP_STATUS, "stCode", "code"))
    if http >= 500 or 500 <= st_code <= 599 or 500 <= code <= 599:
        return ("unknown", error_text(reply) or f"HTTP {http or st_code or code}")
    if _says_ok(reply, st_code):
        return None  # a "message" beside it is news, not a refusal: {"stat": "Ok", "message": "Order cancelled"}
    if str(reply.get("stat", "")).lower() == "not_ok" or error_text(reply):
        text = error_text(reply) or "refused without a reason"
        if "already exist" in text.lower():
            # "Client OrderID already exists" (stCode 5204, kotak-neo-api #150, #175; 5204 alone is Kotak's general
            # "<action> Response: <why>", a bad input too, #123): Kotak holds an order with this tag today, so a place
            # sent again after an answer that never came (an expired session's retry) did reach it. Look it up.
            return ("unknown", text)
        return ("refused", text)
    return None


def _says_ok(reply: dict, st_code: int) -> bool:
    """Kotak's success: stat "Ok" (any case), or stCode 200 with no error field. Its replies to a cancel or modify
    it carried out may add a message or description (the SDK's own tests model a cancel's as {"stat": "Ok",
    "message": "Order cancelled"})."""
    stat = str(reply.get("stat", "")).strip().lower()
    if stat == "ok":
        return True
    errors = ("errMsg", "emsg", "Error Message", "error", "Error")
    return stat != "not_ok" and st_code == 200 and not any(reply.get(k) for k in errors)


def placed_order_id(reply: Any) -> str:
    """Kotak's order number in a place_order reply ("" when none): nOrdNo, whatever else the reply says beside it
    (a message), unless it says Not_Ok. An order number is an order placed: read as a refusal, the order would be
    booked as rejected while it works at the exchange."""
    if not isinstance(reply, dict) or str(reply.get("stat", "")).lower() == "not_ok":
        return ""
    return str(reply.get("nOrdNo") or "")


def throttled(reply: Any) -> bool:
    """Kotak's answer to a request over its rate limit (HTTP 429): {"code": 429, "error": "Rate limit exceeded",
    "message": "too many request received"} (kotak-neo-python issue 35). It took nothing: the request may go again."""
    if not isinstance(reply, dict):
        return False
    if 429 in (integer(reply.get("code")), integer(reply.get("stCode")), integer(reply.get("status_code"))):
        return True
    exc = reply.get("error") or reply.get("Error")
    return isinstance(exc, ApiException) and exc.status == 429


def no_data(reply: Any) -> bool:
    """Kotak's answer to a list read with nothing to list (an order book before the day's first order):
    {"stat": "Not_Ok", "errMsg": "No Data", "stCode": 5203} (kotak-neo-api issue 103): an empty list, no error."""
    return isinstance(reply, dict) and (integer(reply.get("stCode")) == 5203
                                        or error_text(reply).strip().lower() == "no data")


def _exception_kind(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return "unknown" if status == 0 or status >= 500 else "refused"
    if isinstance(exc, (JSONDecodeError, UnicodeDecodeError)):  # a reply came back, unreadable: the call was made
        return "unknown"
    # The SDK's own input validation (ValueError/TypeError) never reached Kotak.
    return "refused" if isinstance(exc, (ValueError, TypeError, KeyError)) else "unknown"


# orders ----------------------------------------------------------------------------
def place_params(order: trading_pb2.OrderRequest) -> dict[str, str | None]:
    """OrderRequest -> NeoAPI.place_order keyword arguments (client_order_id travels as the tag). An order with no
    segment raises NotSent: risk stamps every order it accepts with its instrument's, so none means the order did
    not come through risk, and a guessed one (nse_cm) would send an F&O or BSE order to the wrong market."""
    if not order.exchange_segment:
        raise NotSent(f"order {order.client_order_id}: not sent: it has no exchange_segment (risk stamps the "
                      f"instrument's on every order it accepts); send it through risk, with token {order.token}")
    order_type = ORDER_TYPE[order.order_type]
    price = to_rupees(order.price_paise) if order_type in ("L", "SL") else Decimal("0")
    return {
        "exchange_segment": order.exchange_segment, "product": PRODUCT.get(order.product, "MIS"),
        "price": str(price), "order_type": order_type, "quantity": str(order.quantity),
        "validity": VALIDITY.get(order.validity, "DAY"), "trading_symbol": order.symbol,
        "transaction_type": SIDE[order.side], "trigger_price": str(to_rupees(order.trigger_price_paise)),
        "tag": order.client_order_id or None,  # the SDK refuses a blank tag
    }


def modify_params(current: BrokerOrderEvent, quantity: int | None, price_paise: int | None,
                  trigger_price_paise: int | None) -> dict[str, str]:
    """Kotak's modify needs the whole order: unchanged fields come from the current order-book row."""
    raw = current.raw
    return {
        "order_id": current.exchange_order_id,
        "price": str(to_rupees(price_paise if price_paise is not None else paise(raw.get("prc")))),
        "order_type": raw.get("prcTp") or "L",
        "quantity": str(quantity if quantity is not None else integer(raw.get("qty"))),
        "validity": raw.get("vldt") or "DAY",
        "trigger_price": str(to_rupees(trigger_price_paise if trigger_price_paise is not None
                                       else paise(raw.get("trgPrc")))),
    }


def order_event(row: dict[str, Any], ts_ns: int = 0) -> BrokerOrderEvent:
    """An order-book / history / order-feed row -> BrokerOrderEvent (cumulative fill)."""
    quantity, filled = integer(row.get("qty")), integer(row.get("fldQty"))
    status = STATUS.get(str(row.get("ordSt", "")).strip().lower(), S.ORDER_STATUS_UNSPECIFIED)
    if status == S.ORDER_STATUS_OPEN and 0 < filled < quantity:
        status = S.ORDER_STATUS_PARTIALLY_FILLED
    return BrokerOrderEvent(
        exchange_order_id=str(row.get("nOrdNo", "")), client_order_id=str(row.get("GuiOrdId") or ""),
        status=status, filled_quantity=filled, average_price_paise=paise(row.get("avgPrc")) if filled else 0,
        reason=_text(row.get("rejRsn")), ts_ns=ts_ns, raw=dict(row), quantity=quantity,
        price_paise=paise(row.get("prc")), trigger_price_paise=paise(row.get("trgPrc")))


def _text(value: Any) -> str:
    text = str(value or "").strip()
    return "" if text in NO_VALUE else text


def rows(reply: Any) -> list[dict]:
    """The list of rows of a Kotak list reply ({"data": [...]}, possibly nested once)."""
    data = reply.get("data") if isinstance(reply, dict) else reply
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


# account ---------------------------------------------------------------------------
def price_factor(row: dict[str, Any], terms: tuple[str, str, str, str, str] = (
        "multiplier", "genNum", "genDen", "prcNum", "prcDen")) -> Fraction:
    """multiplier x genNum/genDen x prcNum/prcDen of a Kotak row: what one unit of quantity at a price of 1 is
    worth. Kotak's amounts include it, its prices do not (docs/functions/portfolio/positions.md). A blank, zero,
    negative (the scrip master's -1) or unreadable term counts as 1."""
    def term(key: str) -> Fraction:
        try:
            value = Fraction(Decimal(str(row.get(key) or "").strip()))
        except (InvalidOperation, ValueError, OverflowError):
            return Fraction(1)
        return value if value > 0 else Fraction(1)

    multiplier, gen_num, gen_den, prc_num, prc_den = (term(k) for k in terms)
    return multiplier * gen_num / gen_den * prc_num / prc_den


def position(row: dict[str, Any]) -> trading_pb2.Position:
    """A portfolio/v2/positions row -> Position, as Kotak documents the arithmetic (positions.md): averages are
    amount / (quantity x price factor), P&L is (sell amount - buy amount) + net quantity x LTP x price factor.
    Exact until the one rounding to paise; realised is the closed quantity's share, unrealised the rest. The
    Position carries the factor, so a book that takes it in values later prices by it.

    buy_quantity and sell_quantity are the day's (flBuyQty, flSellQty), as the book's Position has them: the net
    holds the quantity carried from earlier days (cfBuyQty - cfSellQty) besides, told apart by what they leave
    (services/oms/reconcile.py `carried_quantity`): a restart takes it back into the book under today's fills on
    the instrument, which the book has from the ledger."""
    buy_qty = integer(row.get("flBuyQty")) + integer(row.get("cfBuyQty"))
    sell_qty = integer(row.get("flSellQty")) + integer(row.get("cfSellQty"))
    buy_amt = paise(row.get("buyAmt")) + paise(row.get("cfBuyAmt"))
    sell_amt = paise(row.get("sellAmt")) + paise(row.get("cfSellAmt"))
    factor = price_factor(row)
    net = buy_qty - sell_qty
    buy_cost = Fraction(buy_amt, buy_qty) if buy_qty else Fraction(0)  # money per unit of quantity
    sell_cost = Fraction(sell_amt, sell_qty) if sell_qty else Fraction(0)
    open_cost = buy_cost if net > 0 else sell_cost if net < 0 else Fraction(0)
    closed = min(buy_qty, sell_qty)
    realised = round(closed * (sell_cost - buy_cost))
    ltp = paise(row.get("ltp"))
    unrealised = round(sell_amt - buy_amt + net * ltp * factor) - realised if ltp and net else 0
    return trading_pb2.Position(
        token=integer(row.get("tok")), exchange_segment=str(row.get("exSeg", "")), symbol=str(row.get("trdSym", "")),
        product=PRODUCT_BACK.get(str(row.get("prod", "")), S.PRODUCT_UNSPECIFIED), net_quantity=net,
        average_price_paise=round(open_cost / factor), realised_pnl_paise=realised, last_price_paise=ltp,
        unrealised_pnl_paise=unrealised, buy_quantity=integer(row.get("flBuyQty")),
        sell_quantity=integer(row.get("flSellQty")), price_factor=price_factor_proto(factor))


class HoldingRow(BaseModel):
    """One row of Kotak's portfolio/v1/holdings (holdings.md): prices in rupees, usually JSON numbers.
    `exchangeIdentifier` is the exchange token (positions' `tok`); `instrumentToken` is another id, not used."""

    model_config = ConfigDict(extra="ignore")
    token: int = Field(alias="exchangeIdentifier", gt=0)
    exchange_segment: str = Field(alias="exchangeSegment", min_length=1)
    symbol: str = ""
    display_symbol: str = Field("", alias="displaySymbol")
    quantity: int = Field(ge=0)
    average_price: Decimal = Field(alias="averagePrice", ge=0, allow_inf_nan=False)
    closing_price: Decimal | None = Field(None, alias="closingPrice", ge=0, allow_inf_nan=False)
    alternate: bool = Field(False, alias="isAlternateScrip")

    @field_validator("closing_price", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


def holdings(reply_rows: list[dict[str, Any]]) -> list[trading_pb2.Position]:
    """Holdings rows -> CNC Positions (long, at the holding's average price; last price the previous close).

    A scrip listed on both exchanges comes twice, the second row flagged isAlternateScrip: the same shares, left
    out. Rows with no quantity are left out; a malformed row (no token, a quantity or price that is not a number)
    is left out and counted in one warning, never raised: the other rows still count."""
    out, malformed = [], []
    for raw in reply_rows:
        try:
            row = HoldingRow.model_validate(raw)
            last = to_paise(row.closing_price) if row.closing_price is not None else 0
            average = to_paise(row.average_price)
            factor = price_factor_proto(price_factor(raw))  # equity's is 1; Kotak's rows carry no terms today
        except ValidationError as exc:
            bad = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
            malformed.append(f"{raw.get('exchangeSegment', '?')}:{raw.get('exchangeIdentifier', '?')} ({bad})")
            continue
        except ValueError as exc:  # a price past what paise hold, a price factor past int64
            malformed.append(f"{raw.get('exchangeSegment', '?')}:{raw.get('exchangeIdentifier', '?')} ({exc})")
            continue
        if row.alternate or not row.quantity:
            continue
        out.append(trading_pb2.Position(
            token=row.token, exchange_segment=row.exchange_segment, symbol=row.display_symbol or row.symbol,
            product=S.PRODUCT_CNC, net_quantity=row.quantity, buy_quantity=row.quantity,
            average_price_paise=average, last_price_paise=last, price_factor=factor))
    if malformed:
        log.warning("kotak holdings: malformed rows left out", extra={"count": len(malformed),
                                                                       "examples": malformed[:5]})
    return out


def limits(reply: dict[str, Any]) -> dict[str, Any]:
    return {"net_paise": paise(reply.get("Net")), "margin_used_paise": paise(reply.get("MarginUsed")),
            "collateral_paise": paise(reply.get("CollateralValue")), "raw": reply}


def funds(reply: dict[str, Any], now_ns: int) -> oms_pb2.GetFundsResponse:
    """Kotak's limits (all segments, exchanges and products): CollateralValue is what the account trades on, Net
    what is left of it, MarginUsed what positions and orders hold. A reply without Net is not read as no money."""
    if reply.get("Net") in (None, ""):
        raise NeoPulseError(f"Kotak's limits reply carries no Net: {sorted(reply)[:20]}")
    return oms_pb2.GetFundsResponse(
        account="kotak", available_paise=paise(reply.get("Net")), margin_used_paise=paise(reply.get("MarginUsed")),
        total_paise=paise(reply.get("CollateralValue")), realised_pnl_paise=_mtm(reply, "RealizedMtomPrsnt", "Rls"),
        unrealised_pnl_paise=_mtm(reply, "UnrealizedMtomPrsnt", "UnRls"), as_of_ns=now_ns)


def _mtm(reply: dict[str, Any], total: str, kind: str) -> int:
    """The account's realised ("Rls") or unrealised ("UnRls") MTM in paise: the top-level field, or, when that is
    zero or absent, the sum of the per-segment ones (Cash, Fo, Com, Cur). Kotak's sample limits reply (limits.md)
    has UnrealizedMtomPrsnt "0" beside CashUnRlsMtomPrsnt "-0.24": the segments carry what the top level leaves out."""
    return paise(reply.get(total)) or sum(paise(reply.get(f"{seg}{kind}MtomPrsnt")) for seg in MTM_SEGMENTS)


def margin_params(order: trading_pb2.OrderRequest) -> dict[str, str]:
    """OrderRequest -> NeoAPI.margin_required keyword arguments."""
    placed = place_params(order)
    return {"exchange_segment": str(placed["exchange_segment"]), "price": str(placed["price"]),
            "order_type": str(placed["order_type"]), "product": str(placed["product"]),
            "quantity": str(placed["quantity"]), "instrument_token": str(order.token),
            "transaction_type": str(placed["transaction_type"]), "trigger_price": str(placed["trigger_price"])}


def margin(reply: dict[str, Any]) -> dict[str, Any]:
    """Kotak's check-margin reply (the SDK nests it under "data"): needed vs available, in paise."""
    nested = reply.get("data")
    body: dict[str, Any] = nested if isinstance(nested, dict) else reply
    required, available = paise(body.get("reqdMrgn")), paise(body.get("avlCash"))
    return {"required_paise": required, "available_paise": available, "sufficient": required <= available,
            "used_paise": paise(body.get("totMrgnUsd")), "raw": reply}


def quote_tick(row: dict[str, Any]) -> market_pb2.Tick:
    ohlc, depth = row.get("ohlc") or {}, row.get("depth") or {}
    buy, sell = (depth.get("buy") or [{}])[0], (depth.get("sell") or [{}])[0]
    return market_pb2.Tick(
        token=integer(row.get("exchange_token")), exchange_segment=str(row.get("exchange", "")),
        ltp_paise=paise(row.get("ltp")), ltq=integer(row.get("last_traded_quantity")),
        volume=integer(row.get("last_volume")), open_paise=paise(ohlc.get("open")), high_paise=paise(ohlc.get("high")),
        low_paise=paise(ohlc.get("low")), close_paise=paise(ohlc.get("close")), bid_paise=paise(buy.get("price")),
        bid_qty=integer(buy.get("quantity")), ask_paise=paise(sell.get("price")), ask_qty=integer(sell.get("quantity")))


SCRIP_FACTOR_TERMS = ("lMultiplier", "dGenNum", "dGenDen", "dPriceNum", "dPriceDen")
# lExpiryDate of these segments counts seconds from 1980 (NSE's files, passed on as they are): the SDK's scrip_search
# adds this to read it as unix time. mcx_fo and bse_fo give unix time; the cash segments carry no expiry.
KOTAK_1980_EPOCH_S = 315_511_200
EXPIRY_FROM_1980 = frozenset({"nse_fo", "cde_fo"})
EXPIRY_UNIX = frozenset({"mcx_fo", "bse_fo"})


def instruments_from_csv(text: str) -> list[market_pb2.Instrument]:
    """A scrip-master CSV -> Instruments. dTickSize is in paise in every segment (5.0 = Rs 0.05, 100 = Rs 1); the
    price factor (lMultiplier x dGenNum/dGenDen x dPriceNum/dPriceDen, by which order value and P&L are
    price x quantity x factor) is kept exactly on the Instrument, and a derivative's expiry (expiry_ns).

    Left out, with one warning: a contract whose tick is not a whole number of paise or whose prices have more
    than 2 decimals (currency derivatives: Rs 0.0025), which integer paise cannot price, and one whose price factor
    does not fit an int64 ratio."""
    reader = csv.DictReader(io.StringIO(text))
    out, left_out = [], []
    for raw in reader:
        row = {k.strip().rstrip(";"): (v or "").strip() for k, v in raw.items() if k}
        token = integer(row.get("pSymbol"))
        symbol = row.get("pTrdSymbol", "")
        if not token or not symbol:
            continue
        tick = _tick_paise(row.get("dTickSize"))
        factor = price_factor(row, SCRIP_FACTOR_TERMS)
        if tick is None or integer(row.get("lPrecision")) > 2 or not representable(factor):
            left_out.append(f"{row.get('pExchSeg', '')}:{symbol} (tick {row.get('dTickSize')!r} paise, "
                            f"precision {row.get('lPrecision')!r}, price factor {factor})")
            continue
        out.append(market_pb2.Instrument(
            token=token, symbol=symbol, exchange_segment=row.get("pExchSeg", ""),
            tick_size_paise=tick, lot_size=integer(row.get("lLotSize")) or 1,
            freeze_quantity=integer(row.get("lFreezeQty")), name=row.get("pSymbolName", ""),
            isin=row.get("pISIN", ""), price_factor=price_factor_proto(factor),
            expiry_ns=expiry_ns(row.get("pExchSeg", ""), row.get("lExpiryDate"))))
    if left_out:
        log.warning("scrip master: contracts NeoPulse cannot price in whole paise left out",
                    extra={"count": len(left_out), "examples": left_out[:5]})
    return out


def expiry_ns(segment: str, value: Any) -> int:
    """A scrip-master lExpiryDate -> the expiry day (Instrument.expiry_ns: 00:00 IST of it); 0 for none (a cash
    segment, blank, -1). The day is the UTC date of the seconds, as the SDK's scrip_search reads it: nse_fo's land at
    08:30 UTC of the day, but mcx_fo's at 23:59:59 UTC, already the next day in IST."""
    seconds = integer(value)
    segment = segment.lower()
    if seconds <= 0 or segment not in EXPIRY_FROM_1980 | EXPIRY_UNIX:
        return 0
    day = (seconds + (KOTAK_1980_EPOCH_S if segment in EXPIRY_FROM_1980 else 0)) // 86_400
    return (day * 86_400 - IST_OFFSET_S) * NS


def _tick_paise(value: Any) -> int | None:
    """dTickSize -> whole paise; blank or not positive (index rows) means the cash-market 5 paise, as before;
    None for a tick below or between paise, or unreadable."""
    try:
        tick = Decimal(str(value or "0"))
    except InvalidOperation:
        return None
    if not tick.is_finite():
        return None
    if tick <= 0:
        return 5
    return int(tick) if tick == tick.to_integral_value() else None
