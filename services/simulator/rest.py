"""The simulator's REST endpoints, at the paths and in the shapes the Kotak Neo SDK uses.

Called by aiohttp; reads and changes the Simulator (server.py) and its Exchange.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.simulator.exchange import OrderRefused, rupees
from shared.money import to_paise
from shared.price_factor import factor_of

if TYPE_CHECKING:
    from services.simulator.server import Fault, Simulator

Handler = Callable[[web.Request, "Simulator", dict], Awaitable[Any]]
INVALID_CREDENTIALS = {"code": "900901", "message": "Invalid Credentials",
                       "description": "Invalid Credentials. Make sure you have provided the correct security"
                                      " credentials"}
SCRIP_COLUMNS = ("pSymbol", "pExchSeg", "pTrdSymbol", "pSymbolName", "pDesc", "pISIN", "pInstType", "pOptionType",
                 "dStrikePrice;", "pExpiryDate", "lLotSize", "dTickSize ", "lFreezeQty", "lPrecision", "lMultiplier ",
                 "dGenNum", "dGenDen", "dPriceNum", "dPriceDen")


# What Kotak answers a list read that has no rows (kotak-neo-api issue 103).
NO_DATA = {"stat": "Not_Ok", "errMsg": "No Data", "stCode": 5203}
# Kotak's answer over its rate limit, HTTP 429 (kotak-neo-python issue 35).
THROTTLED = {"code": 429, "error": "Rate limit exceeded", "message": "too many request received"}


def _ok(data: Any = None, **extra: Any) -> dict:
    out = {"stat": "Ok", "stCode": 200, **extra}
    if data is not None:
        out["data"] = data
    return out


def _not_ok(message: str, code: int = 1005) -> dict:
    return {"stat": "Not_Ok", "emsg": message, "errMsg": message, "stCode": code}


async def _body(request: web.Request) -> dict:
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return json.loads(str(form.get("jData") or "{}"))
    text = await request.text()
    return json.loads(text) if text else {}


def _route(sim: Simulator, name: str, handler: Handler, auth: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a handler with the session check ("trade", "consumer" or "none") and the fault knobs."""

    async def wrapped(request: web.Request) -> web.Response:
        sim.calls[name] += 1
        if sim.throttles(name):
            return web.json_response(THROTTLED, status=429)
        fault = sim.take_fault(name)
        if fault and fault.status and not fault.after_work:
            return _failed(fault)
        if auth == "trade" and not sim.session_valid(request.headers.get("Auth"), request.headers.get("Sid")):
            return web.json_response(INVALID_CREDENTIALS, status=401)
        if auth == "consumer" and request.headers.get("Authorization") != sim.creds.consumer_key:
            return web.json_response(INVALID_CREDENTIALS, status=401)
        result = await handler(request, sim, await _body(request) if request.can_read_body else {})
        if fault and fault.status:
            return _failed(fault)
        if fault and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault and fault.hang:
            await sim.stopping.wait()
        if isinstance(result, web.Response):
            return result
        return web.json_response(result)

    return wrapped


def _failed(fault: Fault) -> web.Response:
    if fault.text:
        return web.Response(text=fault.text, status=fault.status, content_type="text/html")
    return web.json_response(fault.body, status=fault.status)


# login ------------------------------------------------------------------------
async def totp_login(request: web.Request, sim: Simulator, body: dict) -> Any:
    c = sim.creds
    if body.get("mobileNumber") != c.mobile or body.get("ucc") != c.ucc:
        return web.json_response({"error": [{"code": "10522", "message": "Invalid mobile number or UCC"}]}, status=400)
    if not sim.accept_totp(str(body.get("totp", ""))):
        return web.json_response({"error": [{"code": "10520", "message": "Invalid TOTP"}]}, status=400)
    view, sid = sim.new_view_session()
    return {"data": {"token": view, "sid": sid, "ucc": c.ucc, "kType": "View", "status": "success",
                     "greetingName": "SIMULATOR"}}


async def totp_validate(request: web.Request, sim: Simulator, body: dict) -> Any:
    if str(body.get("mpin", "")) != sim.creds.mpin:
        return web.json_response({"error": [{"code": "10521", "message": "Invalid MPIN"}]}, status=400)
    sid = request.headers.get("sid", "")
    token = sim.upgrade_session(request.headers.get("Auth", ""), sid)
    if token is None:
        return web.json_response(INVALID_CREDENTIALS, status=401)
    return {"data": {"token": token, "sid": sid, "rid": sid[::-1], "ucc": sim.creds.ucc, "kType": "Trade",
                     "status": "success", "dataCenter": "SIM", "baseUrl": sim.base_url, "feedUrl": sim.feed_url,
                     "rtUrl": sim.orders_url}}


async def config_service(request: web.Request, sim: Simulator, body: dict) -> Any:
    return {"data": {"configs": {"SIM_broadcast_source": "sim", "SIM_sim_broadcast_endpoint": sim.feed_url,
                                 "SIM_sim_interactive_endpoint": sim.orders_url}}}


# orders -----------------------------------------------------------------------
async def place_order(request: web.Request, sim: Simulator, body: dict) -> Any:
    reason, sim.reject_reason = sim.reject_reason, ""
    if reason and sim.reject_synchronously:
        return _not_ok(reason)
    try:
        async with sim.lock:
            order = sim.exchange.place(body, sim.clock.now_ns(), reject_reason=reason)
    except OrderRefused as exc:
        return _not_ok(str(exc), exc.st_code)
    except ValueError as exc:
        return _not_ok(str(exc))
    await sim.after_place(order)
    return {"nOrdNo": order.order_no, "stat": "Ok", "stCode": 200}


async def modify_order(request: web.Request, sim: Simulator, body: dict) -> Any:
    try:
        async with sim.lock:
            order = sim.exchange.modify(str(body.get("no")), body)
    except OrderRefused as exc:
        return _not_ok(str(exc), exc.st_code)
    except KeyError:
        return _not_ok("order not found", 1009)
    except LookupError:
        return _not_ok("order is completed", 1021)
    await sim.publish_order(order)
    async with sim.lock:
        sim.exchange.match_new(order)
    await sim.publish_order(order)
    return {"nOrdNo": order.order_no, "stat": "Ok", "stCode": 200}


async def cancel_order(request: web.Request, sim: Simulator, body: dict) -> Any:
    try:
        async with sim.lock:
            order = sim.exchange.cancel(str(body.get("on")), pending=sim.cancel_pending_s > 0)
    except OrderRefused as exc:
        return _not_ok(str(exc), exc.st_code)
    except KeyError:
        return _not_ok("order not found", 1009)
    except LookupError:
        return _not_ok("order is completed", 1021)
    await sim.publish_order(order)
    if sim.cancel_pending_s > 0:
        sim.finish_cancel_later(order)
    return {"nOrdNo": order.order_no, "stat": "Ok", "stCode": 200}


def _rows_or_no_data(rows: list) -> Any:
    """Kotak answers a list read with nothing in it with an error body, not an empty list."""
    return _ok(rows) if rows else NO_DATA


async def order_book(request: web.Request, sim: Simulator, body: dict) -> Any:
    order_no = request.match_info.get("order_no")
    orders = sim.exchange.orders.values()
    rows = [o.report() for o in orders if order_no is None or o.order_no == order_no]
    return _rows_or_no_data(rows)


async def order_history(request: web.Request, sim: Simulator, body: dict) -> Any:
    """The order's states newest first, as Kotak lists them (order_history.md: complete, open, open pending...)."""
    order = sim.exchange.orders.get(str(body.get("nOrdNo")))
    return _ok(order.history[::-1] if order else [])


async def trade_report(request: web.Request, sim: Simulator, body: dict) -> Any:
    return _rows_or_no_data(sim.exchange.trades())


# account ------------------------------------------------------------------------
async def positions(request: web.Request, sim: Simulator, body: dict) -> Any:
    return _rows_or_no_data(sim.exchange.positions())


async def holdings(request: web.Request, sim: Simulator, body: dict) -> Any:
    """As Kotak answers it: the rows under "data" and nothing else (holdings.md)."""
    return {"data": list(sim.exchange.holdings)}


async def limits(request: web.Request, sim: Simulator, body: dict) -> Any:
    used = sim.exchange.margin_used_paise()
    return _ok(None, Net=rupees(sim.exchange.cash_paise - used), MarginUsed=rupees(used),
               CollateralValue=rupees(sim.exchange.cash_paise), Category="CLIENT")


async def margin(request: web.Request, sim: Simulator, body: dict) -> Any:
    qty, price = int(body.get("qty") or 0), to_paise(body.get("prc") or 0)
    token = str(body.get("tok") or "")
    required = sim.exchange.margin_paise([(int(token) if token.isdigit() else 0, qty, price)])
    return _ok(None, avlCash=rupees(sim.exchange.cash_paise), reqdMrgn=rupees(required),
               totMrgnUsd=rupees(sim.exchange.margin_used_paise()))


# market data --------------------------------------------------------------------
async def scrip_master(request: web.Request, sim: Simulator, body: dict) -> Any:
    segments = sorted({i.exchange_segment for i in sim.instruments})
    return {"data": {"filesPaths": [f"{sim.base_url}/scrip-master/{seg}-v1.csv" for seg in segments],
                     "baseFolder": f"{sim.base_url}/scrip-master"}}


async def scrip_file(request: web.Request, sim: Simulator, body: dict) -> Any:
    segment = request.match_info["name"].removesuffix("-v1.csv")
    lines = [",".join(SCRIP_COLUMNS)]
    for i in sim.instruments:
        if i.exchange_segment == segment:
            factor = factor_of(i.price_factor)  # as Kotak writes it: lMultiplier -1 for none
            multiplier = str(factor.numerator) if factor.numerator != 1 else "-1"
            lines.append(",".join(str(v) for v in (
                i.token, i.exchange_segment, i.symbol, i.name, i.name, i.isin, "", "XX", "-1", "0", i.lot_size,
                f"{i.tick_size_paise:.6f}", i.freeze_quantity, 2, multiplier, 1, 1, 1, factor.denominator)))
    return web.Response(text="\n".join(lines) + "\n", content_type="text/csv")


async def quotes(request: web.Request, sim: Simulator, body: dict) -> Any:
    out = []
    for item in request.match_info["symbols"].split(","):
        segment, _, token = item.partition("|")
        tick = sim.exchange.market.get(int(token)) if token.isdigit() else None
        inst = sim.exchange.instruments.get(int(token)) if token.isdigit() else None
        if tick is None or inst is None:
            continue
        out.append({
            "exchange_token": token, "display_symbol": inst.symbol, "exchange": segment, "ltp": rupees(tick.ltp_paise),
            "last_traded_quantity": str(tick.ltq), "last_volume": str(tick.volume),
            "lstup_time": str(tick.ts_ns // 10**9),
            "ohlc": {"open": rupees(tick.open_paise), "high": rupees(tick.high_paise), "low": rupees(tick.low_paise),
                     "close": rupees(tick.close_paise)},
            "depth": {"buy": [{"price": rupees(tick.bid_paise), "quantity": str(tick.bid_qty), "orders": "1"}],
                      "sell": [{"price": rupees(tick.ask_paise), "quantity": str(tick.ask_qty), "orders": "1"}]}})
    return web.json_response(out)


ROUTES: tuple[tuple[str, str, str, Handler, str], ...] = (
    ("POST", "/login/1.0/tradeApiLogin", "totp_login", totp_login, "none"),
    ("POST", "/api/1.0/login/v6/totp/login", "totp_login", totp_login, "none"),
    ("POST", "/login/1.0/tradeApiValidate", "totp_validate", totp_validate, "none"),
    ("POST", "/api/1.0/login/v6/totp/validate", "totp_validate", totp_validate, "none"),
    ("GET", "/5config/config", "config", config_service, "none"),
    ("POST", "/quick/order/rule/ms/place", "place_order", place_order, "trade"),
    ("POST", "/quick/order/vr/modify", "modify_order", modify_order, "trade"),
    ("POST", "/quick/order/cancel", "cancel_order", cancel_order, "trade"),
    ("GET", "/quick/user/orders", "order_book", order_book, "trade"),
    ("GET", "/quick/user/orders/{order_no}", "order_book", order_book, "trade"),
    ("POST", "/quick/order/history", "order_history", order_history, "trade"),
    ("GET", "/quick/user/trades", "trade_report", trade_report, "trade"),
    ("GET", "/portfolio/v2/positions", "positions", positions, "trade"),
    ("GET", "/portfolio/v1/holdings", "holdings", holdings, "trade"),
    ("POST", "/quick/user/limits", "limits", limits, "trade"),
    ("POST", "/quick/user/check-margin", "margin", margin, "trade"),
    ("GET", "/script-details/1.0/masterscrip/file-paths", "scrip_master", scrip_master, "consumer"),
    ("GET", "/scrip-master/{name}", "scrip_file", scrip_file, "none"),
    ("GET", "/script-details/1.0/quotes/neosymbol/{symbols}/{quote_type}", "quotes", quotes, "consumer"),
)


# test knobs over HTTP, for a simulator in another process (`neopulse sim`); not part of Kotak's API ---------------
async def set_fault(request: web.Request, sim: Simulator) -> web.Response:
    """POST /_sim/faults/{endpoint} {"hang": true}, {"delay_s": 2.5} or {"throttle": 3}: the next call (or calls)
    of that endpoint."""
    endpoint, body = request.match_info["endpoint"], await _body(request)
    if body.get("throttle"):
        sim.throttle_next(endpoint, int(body["throttle"]))
    elif body.get("hang"):
        sim.hang_next(endpoint)
    else:
        sim.delay_next(endpoint, float(body.get("delay_s", 0.0)))
    return web.json_response({"endpoint": endpoint, **body})


async def call_counts(request: web.Request, sim: Simulator) -> web.Response:
    """GET /_sim/calls: how often each endpoint was called (an order sent twice shows here)."""
    return web.json_response(dict(sim.calls))


def add_routes(app: web.Application, sim: Simulator) -> None:
    for method, path, name, handler, auth in ROUTES:
        app.router.add_route(method, path, _route(sim, name, handler, auth))

    async def faults(request: web.Request) -> web.Response:  # aiohttp deprecates plain functions as handlers
        return await set_fault(request, sim)

    async def calls(request: web.Request) -> web.Response:
        return await call_counts(request, sim)

    app.router.add_post("/_sim/faults/{endpoint}", faults)
    app.router.add_get("/_sim/calls", calls)
