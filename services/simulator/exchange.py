"""The simulator's exchange: the market state per token, the order book and its matching model, trades, positions.

Pure state (no I/O); the server turns its Kotak-shaped dicts into REST replies and order-feed messages.

Matching model (documented contract of the simulator):
- Orders take the quantity the market shows, not more: a buy takes the asks (the depth rows of the last tick, or
  its touch), a sell the bids, best price first, each row at its own price and at most its quantity. What one order
  takes is gone for the next until the next tick shows the market again. A fill is one trade (one trade-book row);
  an order partly filled stays "open" with fldQty < qty, as Kotak shows it. A row of quantity 0 (a tick without
  sizes) is taken as deep enough for any order.
- MKT orders take what the other side shows on arrival; as on NSE, the rest becomes a limit order at the last
  traded price (an L order from then on). A market order with nothing on the other side waits for one.
- L (limit) orders take the rows at or better than their price, on arrival or at any later market update.
- SL / SL-M orders wait ("trigger pending") until the last price reaches the trigger (buy: ltp >= trigger,
  sell: ltp <= trigger), then behave as L / MKT.
- IOC orders are matched once when they enter the book; whatever did not fill is cancelled (cnlQty).
- The market is open in each segment's session (shared.clock.SESSIONS_IST, weekdays but holidays): a regular order
  (am "NO") placed while its segment is closed is rejected; an after-market order (am "YES") waits ("after market
  order req received") for the first tick of the session.
- Orders the exchange would not take are refused as it does: a quantity that is not a whole number of lots at once
  (Not_Ok, stCode 1009 "please provide valid quantity", as Kotak answers it); a price or trigger off the tick size,
  outside the day's price band (the instrument's price_band_bps around the previous close; the band SFeed sends)
  or a quantity above the freeze quantity as an order "rejected" with its reason. A modify that would break a rule
  is refused (Not_Ok) and leaves the order as it was.
- Opt-in, as real Kotak does (off by default): `late_rms_refusals`, a modify its RMS refuses (margin) is taken
  ("Ok"), then the order works on with its old terms and the reason in rejRsn (kotak-neo-api issue 36);
  `rewrite_tags`, a modified order's tag becomes "<epoch>-<number>-SIM-ADMINAPI" and a cancelled one's
  "<tag>-<epoch>" (Kotak-neo-api-v2 issue 33).
- No queue position behind other traders; DAY orders last the day.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction

from shared.clock import IST, NS, fmt_session, segment_open, session_in_force
from shared.contracts import market_pb2
from shared.money import margin_exceeded, to_paise
from shared.price_factor import factor_of

OPEN, TRIGGER_PENDING, COMPLETE, REJECTED, CANCELLED = "open", "trigger pending", "complete", "rejected", "cancelled"
CANCEL_PENDING = "cancel pending"  # a cancel on its way to the exchange: the order may still fill meanwhile
AMO_RECEIVED = "after market order req received"
TERMINAL = {COMPLETE, REJECTED, CANCELLED}


def rupees(paise: int) -> str:
    return f"{paise // 100}.{paise % 100:02d}" if paise >= 0 else "-" + rupees(-paise)


def ist_text(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS, tz=IST).strftime("%d-%b-%Y %H:%M:%S")


@dataclass
class SimOrder:
    order_no: str
    tag: str
    token: int
    segment: str
    symbol: str
    side: str  # "B" | "S"
    order_type: str  # L, MKT, SL, SL-M
    product: str
    validity: str
    quantity: int
    price: int  # paise
    trigger: int  # paise
    status: str = OPEN
    filled: int = 0
    avg_price: int = 0
    traded_value: int = 0  # paise x quantity over the order's fills, for an exact average
    cancelled: int = 0
    reason: str = ""
    ts_ns: int = 0
    history: list[dict] = field(default_factory=list)
    sent: int = 0  # history entries already sent on the order feed
    untriggered: bool = False  # a stop whose cancel is pending before it triggered: it does not trigger meanwhile

    def report(self) -> dict:
        """The order as Kotak's order book shows it (strings where Kotak sends strings)."""
        return {
            "nOrdNo": self.order_no, "GuiOrdId": self.tag, "tok": str(self.token), "exSeg": self.segment,
            "trdSym": self.symbol, "sym": self.symbol.removesuffix("-EQ"), "trnsTp": self.side,
            "prcTp": self.order_type, "prod": self.product, "vldt": self.validity, "qty": self.quantity,
            "fldQty": self.filled, "unFldSz": self.quantity - self.filled, "cnlQty": self.cancelled,
            "prc": rupees(self.price), "trgPrc": rupees(self.trigger), "avgPrc": rupees(self.avg_price),
            "ordSt": self.status, "rejRsn": self.reason, "ordDtTm": ist_text(self.ts_ns),
            "exOrdId": f"1100000{self.order_no[-8:]}",
        }


@dataclass
class Fill:
    order: SimOrder
    quantity: int
    price: int
    fill_id: str
    ts_ns: int


_DEEP = 2**62  # a row that shows no quantity: deep enough for any order


def _rows(tick: market_pb2.Tick) -> dict[str, list[list[int]]]:
    """The rows a buy ("B") and a sell ("S") can take from a tick: its depth, or else its touch."""
    asks = [(r.price_paise, r.quantity) for r in tick.asks] or [(tick.ask_paise, tick.ask_qty)]
    bids = [(r.price_paise, r.quantity) for r in tick.bids] or [(tick.bid_paise, tick.bid_qty)]
    return {"B": [[p, q or _DEEP] for p, q in asks if p > 0], "S": [[p, q or _DEEP] for p, q in bids if p > 0]}


class OrderRefused(ValueError):
    """Refused at once (a Not_Ok reply, no order), with Kotak's stCode."""

    def __init__(self, message: str, st_code: int = 1005) -> None:
        super().__init__(message)
        self.st_code = st_code


class Exchange:
    """Markets, orders and the account of the one simulated client."""

    def __init__(self, instruments: list[market_pb2.Instrument], cash_paise: int = 10_000_000_00) -> None:
        self.instruments = {i.token: i for i in instruments}
        self.by_symbol = {i.symbol: i for i in instruments}
        self.market: dict[int, market_pb2.Tick] = {}
        # What the last tick of each token shows and our orders have not taken yet: side of the order ->
        # [price, quantity] rows, best first (a buy takes the asks).
        self.liquidity: dict[int, dict[str, list[list[int]]]] = {}
        self.orders: dict[str, SimOrder] = {}
        self.fills: list[Fill] = []
        # portfolio/v1/holdings rows: seeded with hold(), or appended raw by a test (a malformed row). Settled
        # delivery of earlier days only: a fill today stays in positions() (settlement is overnight).
        self.holdings: list[dict] = []
        self.cash_paise = cash_paise
        self._ids = itertools.count(1)
        self.late_rms_refusals = False  # see the module docstring: real Kotak's ways, off by default
        self.rewrite_tags = False

    # market ----------------------------------------------------------------
    def update_market(self, ticks: list[market_pb2.Tick]) -> list[SimOrder]:
        """Record the latest tick per token and match every resting order against it, oldest first; the orders
        that changed (filled, triggered) are returned."""
        for t in ticks:
            self.market[t.token] = t
            self.liquidity[t.token] = _rows(t)
        ticked = {t.token for t in ticks}
        changed = []
        for order in list(self.orders.values()):
            released = order.status == AMO_RECEIVED and order.token in ticked
            if released:
                self._enter_book(order)
            if order.status not in TERMINAL | {AMO_RECEIVED} and (
                    self._try_match(order, order.ts_ns if not ticks else ticks[-1].ts_ns) or released):
                changed.append(order)
        return changed

    # orders ----------------------------------------------------------------
    def new_order_no(self) -> str:
        return f"2511250{next(self._ids):08d}"

    def place(self, body: dict, ts_ns: int, reject_reason: str = "") -> SimOrder:
        """An order from the place-order body (Kotak field names); raises ValueError on a bad field."""
        inst = self.by_symbol.get(body.get("ts", ""))
        if inst is None:
            raise ValueError(f"invalid trading symbol {body.get('ts')!r}")
        quantity = int(body.get("qt") or 0)
        if quantity <= 0 or quantity % (inst.lot_size or 1):
            raise OrderRefused("please provide valid quantity", 1009)
        order = SimOrder(
            order_no=self.new_order_no(), tag=body.get("ig") or "", token=inst.token, segment=inst.exchange_segment,
            symbol=inst.symbol, side=body.get("tt", "B"), order_type=body.get("pt", "MKT"),
            product=body.get("pc", "MIS"),
            validity=body.get("rt", "DAY"), quantity=quantity, price=to_paise(body.get("pr") or "0"),
            trigger=to_paise(body.get("tp") or "0"), ts_ns=ts_ns)
        self.orders[order.order_no] = order
        self._log(order, "put order req received")
        self._log(order, "validation pending")
        closed = not segment_open(inst.exchange_segment, ts_ns)
        reject_reason = reject_reason or self.refusal(order) or self.rms_refusal(order)
        if reject_reason:
            order.status, order.reason = REJECTED, reject_reason
        elif closed and str(body.get("am", "NO")).upper() != "YES":
            order.status, order.reason = REJECTED, (
                f"market is closed: {inst.exchange_segment} trades "
                f"{fmt_session(session_in_force(inst.exchange_segment, ts_ns))} IST on trading days; place it then, or "
                "as an AMO (am YES)")
        elif closed:
            order.status = AMO_RECEIVED
        else:
            self._enter_book(order)
            return order
        self._log(order, order.status)
        return order

    def _enter_book(self, order: SimOrder) -> None:
        order.status = TRIGGER_PENDING if order.order_type in ("SL", "SL-M") else OPEN
        self._log(order, order.status)

    def match_new(self, order: SimOrder) -> bool:
        """Match an order that just arrived (or was modified); True when it changed."""
        return order.status not in TERMINAL | {AMO_RECEIVED} and self._try_match(order, order.ts_ns)

    def refusal(self, order: SimOrder) -> str:
        """Why the exchange would reject the order ("" when it would take it): tick size, price band, freeze."""
        inst = self.instruments[order.token]
        tick, band = inst.tick_size_paise, inst.price_band_bps
        close = self.market[order.token].close_paise if order.token in self.market else 0
        prices = ([("price", order.price)] if order.order_type in ("L", "SL") else []) + (
            [("trigger price", order.trigger)] if order.order_type in ("SL", "SL-M") else [])
        for name, price in prices:
            if tick > 0 and price % tick:
                return f"{name} {rupees(price)} is not a multiple of the tick size {rupees(tick)}"
            low, high = close * (10_000 - band) // 10_000, close * (10_000 + band) // 10_000
            if band and close and not low <= price <= high:
                return f"{name} {rupees(price)} is outside the price band {rupees(low)}-{rupees(high)}"
        if inst.freeze_quantity and order.quantity > inst.freeze_quantity:
            return f"quantity {order.quantity} exceeds the freeze quantity {inst.freeze_quantity}"
        return ""

    def rms_refusal(self, order: SimOrder, instead_of: SimOrder | None = None) -> str:
        """Kotak's RMS: an order that would take more margin than the account has left is rejected, with its
        reason ("" when there is margin enough). A buy takes margin for what is left to fill; a sell only for what
        it sells beyond the token's long position (a short). What is left: the cash, less the margin of the
        positions held (margin_used_paise, as the limits report it) and of the buys still working. `instead_of`:
        the order a change would replace (its own margin is not counted twice)."""
        price = order.price if order.order_type in ("L", "SL") else order.trigger or self._last_price(order.token)
        held = sum(f.quantity if f.order.side == "B" else -f.quantity
                   for f in self.fills if f.order.token == order.token)
        rest = order.quantity - order.filled
        adding = rest if order.side == "B" else max(0, rest - max(0, held))
        if not adding or not price:
            return ""
        needed = self.margin_paise([(order.token, adding, price)])
        working = self.margin_paise(
            (o.token, o.quantity - o.filled - o.cancelled, o.price or self._last_price(o.token))
            for o in self.orders.values()
            if o is not order and o is not instead_of and o.side == "B" and o.status not in TERMINAL)
        available = self.cash_paise - self.margin_used_paise() - working
        if needed <= available:
            return ""
        return margin_exceeded(needed, available)

    def _last_price(self, token: int) -> int:
        tick = self.market.get(token)
        return tick.ltp_paise if tick is not None else 0

    def modify(self, order_no: str, body: dict) -> SimOrder:
        order = self._live(order_no)
        if order.status == CANCEL_PENDING:
            raise OrderRefused("order is cancel pending; it cannot be modified", 1021)
        changed = replace(order, history=[])
        if body.get("qt"):
            changed.quantity = int(body["qt"])
        if body.get("pr") not in (None, ""):
            changed.price = to_paise(body["pr"])
        if body.get("tp") not in (None, ""):
            changed.trigger = to_paise(body["tp"])
        if body.get("pt"):
            changed.order_type = body["pt"]
        lot = self.instruments[order.token].lot_size or 1
        if changed.quantity <= order.filled or changed.quantity % lot:
            raise OrderRefused("please provide valid quantity", 1009)
        reason = self.refusal(changed)
        rms = "" if reason else self.rms_refusal(changed, instead_of=order)
        if rms and self.late_rms_refusals:
            order.reason = rms  # taken, then refused: the old terms, the reason in rejRsn
            self._log(order, order.status)
            return order
        if reason or rms:
            raise OrderRefused(f"modification rejected: {reason or rms}")
        order.quantity, order.price, order.trigger, order.order_type = (
            changed.quantity, changed.price, changed.trigger, changed.order_type)
        if self.rewrite_tags:
            order.tag = f"{self._stamp(order)}-{order.order_no[-6:]}-SIM-ADMINAPI"
        self._log(order, "modified")
        self._log(order, order.status)
        return order

    def cancel(self, order_no: str, pending: bool = False) -> SimOrder:
        """Cancel the order's rest; `pending`: only ask the exchange (CANCEL_PENDING, still filling meanwhile), as
        Kotak's cancel does, and `finish_cancel` later. A second cancel while one is pending is refused."""
        order = self._live(order_no)
        if order.status == CANCEL_PENDING:
            raise OrderRefused("order is already cancel pending", 1021)
        if self.rewrite_tags:
            order.tag = f"{order.tag}-{self._stamp(order)}"
        if pending:
            order.untriggered = order.status == TRIGGER_PENDING
            order.status = CANCEL_PENDING
            self._log(order, CANCEL_PENDING)
            return order
        order.status, order.cancelled = CANCELLED, order.quantity - order.filled
        self._log(order, CANCELLED)
        return order

    def finish_cancel(self, order: SimOrder, refuse: str = "") -> bool:
        """The exchange cancels a pending cancel's order (what it has not filled meanwhile), or with `refuse`
        refuses the cancel: the order works on as before, the reason in its row. False if it is done already."""
        if order.status != CANCEL_PENDING:
            return False
        if refuse:
            order.status, order.reason = (TRIGGER_PENDING if order.untriggered else OPEN), refuse
        else:
            order.status, order.cancelled = CANCELLED, order.quantity - order.filled
        self._log(order, order.status)
        return True

    @staticmethod
    def _stamp(order: SimOrder) -> str:
        """Epoch seconds, as Kotak stamps a rewritten tag (the order's own time: the exchange keeps no clock)."""
        return f"{order.ts_ns // NS:010d}"

    def _live(self, order_no: str) -> SimOrder:
        order = self.orders.get(order_no)
        if order is None:
            raise KeyError(order_no)
        if order.status in TERMINAL:
            raise LookupError(f"order is {order.status}")
        return order

    def _log(self, order: SimOrder, status: str) -> None:
        entry = order.report()
        entry["ordSt"] = status
        order.history.append(entry)

    def _try_match(self, order: SimOrder, ts_ns: int) -> bool:
        """Trigger, fill and (IOC) cancel what the market allows; True when the order changed."""
        tick = self.market.get(order.token)
        if tick is None:
            return self._expire_ioc(order)
        buy = order.side == "B"
        changed = False
        if order.untriggered and order.status == CANCEL_PENDING:
            return False
        if order.status == TRIGGER_PENDING:
            hit = tick.ltp_paise >= order.trigger if buy else tick.ltp_paise <= order.trigger
            if not hit:
                return False
            order.status, changed = OPEN, True
            self._log(order, OPEN)
        limit = order.price if order.order_type in ("L", "SL") else None
        last_price = 0
        for row in self.liquidity.get(order.token, {}).get(order.side, []):
            remaining = order.quantity - order.filled
            price, size = row
            if not remaining or (limit is not None and (price > limit if buy else price < limit)):
                break
            take = min(remaining, size)
            if take <= 0:
                continue
            row[1] -= take
            self._fill(order, take, price, ts_ns or tick.ts_ns)
            last_price, changed = price, True
        if last_price and order.status == OPEN and order.validity != "IOC" and limit is None:
            # NSE: the unfilled rest of a market order becomes a limit order at the last traded price.
            order.order_type, order.price = ("SL" if order.order_type == "SL-M" else "L"), last_price
        return self._expire_ioc(order) or changed

    def _fill(self, order: SimOrder, quantity: int, price: int, ts_ns: int) -> None:
        order.filled += quantity
        order.traded_value += quantity * price
        order.avg_price = round(order.traded_value / order.filled)
        if order.filled == order.quantity:
            order.status = COMPLETE
        self._log(order, order.status)
        self.fills.append(Fill(order, quantity, price, f"{len(self.fills) + 1:010d}", ts_ns))

    def _expire_ioc(self, order: SimOrder) -> bool:
        """An IOC order in the book does not rest: what it did not fill on entering is cancelled."""
        if order.validity != "IOC" or order.status != OPEN:
            return False
        order.status, order.cancelled = CANCELLED, order.quantity - order.filled
        self._log(order, CANCELLED)
        return True

    # account ---------------------------------------------------------------
    def trades(self) -> list[dict]:
        return [{
            "nOrdNo": f.order.order_no, "flId": f.fill_id, "fldQty": f.quantity, "avgPrc": rupees(f.price),
            "trdSym": f.order.symbol, "tok": str(f.order.token), "exSeg": f.order.segment, "trnsTp": f.order.side,
            "prod": f.order.product, "GuiOrdId": f.order.tag, "flDt": ist_text(f.ts_ns)[:11],
            "flTm": ist_text(f.ts_ns)[12:]} for f in self.fills]

    def positions(self) -> list[dict]:
        books: dict[tuple[int, str], dict] = {}
        for f in self.fills:
            key = (f.order.token, f.order.product)
            row = books.setdefault(key, {"buy_qty": 0, "sell_qty": 0, "buy_amt": 0, "sell_amt": 0, "order": f.order})
            side = "buy" if f.order.side == "B" else "sell"
            row[f"{side}_qty"] += f.quantity
            row[f"{side}_amt"] += f.quantity * f.price * self.price_factor(f.order.token)
        out = []
        for (token, product), row in books.items():
            tick, factor = self.market.get(token), self.price_factor(token)
            # Kotak's amounts include the price factor, its prices do not (positions.md).
            out.append({
                "tok": str(token), "exSeg": row["order"].segment, "trdSym": row["order"].symbol,
                "sym": row["order"].symbol.removesuffix("-EQ"), "prod": product, "flBuyQty": str(row["buy_qty"]),
                "flSellQty": str(row["sell_qty"]), "buyAmt": rupees(round(row["buy_amt"])),
                "sellAmt": rupees(round(row["sell_amt"])), "cfBuyQty": "0", "cfSellQty": "0", "cfBuyAmt": "0.00",
                "cfSellAmt": "0.00", "lotSz": "1", "multiplier": str(factor.numerator), "genNum": "1", "genDen": "1",
                "prcNum": "1", "prcDen": str(factor.denominator), "precision": "2",
                "ltp": rupees(tick.ltp_paise) if tick else "0.00"})
        return out

    def hold(self, token: int, quantity: int, average_price_paise: int, *, closing_price_paise: int | None = None,
             alternate_token: int | None = None) -> None:
        """Seed a delivery holding as Kotak's holdings read lists it (docs/functions/portfolio/holdings.md of
        kotak-neo-python; docs/Holdings.md of kotak-neo-api): prices in rupees as JSON numbers, the exchange token
        as `exchangeIdentifier` (`instrumentToken` is another id), the previous close as `closingPrice` (default:
        the market's close). With `alternate_token`, the same shares listed again on BSE, flagged
        isAlternateScrip, as Kotak lists a scrip traded on both exchanges."""
        inst = self.instruments[token]
        tick = self.market.get(token)
        close = closing_price_paise if closing_price_paise is not None else (
            tick.close_paise if tick is not None and tick.close_paise else average_price_paise)
        row = {
            "symbol": inst.symbol.removesuffix("-EQ"), "displaySymbol": inst.symbol.removesuffix("-EQ"),
            "averagePrice": average_price_paise / 100, "quantity": quantity, "exchangeSegment": inst.exchange_segment,
            "exchangeIdentifier": str(token), "holdingCost": quantity * average_price_paise / 100,
            "mktValue": quantity * close / 100, "scripId": f"{token:040x}",
            "instrumentToken": 7000 + len(self.holdings), "instrumentType": "Equity", "isAlternateScrip": False,
            "closingPrice": close / 100, "sellableQuantity": quantity}
        self.holdings.append(row)
        if alternate_token is not None:
            self.holdings.append({**row, "exchangeSegment": "bse_cm", "exchangeIdentifier": str(alternate_token),
                                  "instrumentToken": 7000 + len(self.holdings), "isAlternateScrip": True})

    def price_factor(self, token: int) -> Fraction:
        inst = self.instruments.get(token)
        return factor_of(inst.price_factor) if inst is not None else Fraction(1)

    def margin_paise(self, trades: Iterable[tuple[int, int, int]]) -> int:
        """The simulator's flat margin on (token, quantity, price) trades: a fifth of what they are worth together
        (a contract's lot at its price factor: 100 barrels, not 1)."""
        return int(sum(quantity * price * self.price_factor(token) for token, quantity, price in trades) / 5)

    def margin_used_paise(self) -> int:
        """The margin today's positions hold: each token's net quantity at the average price of its fills on that
        side (a position bought and sold again holds none)."""
        fills: dict[int, list[Fill]] = {}
        for f in self.fills:
            fills.setdefault(f.order.token, []).append(f)
        held = []
        for token, token_fills in fills.items():
            net = sum(f.quantity if f.order.side == "B" else -f.quantity for f in token_fills)
            side = [f for f in token_fills if (f.order.side == "B") == (net > 0)]
            if net and side:
                held.append((token, abs(net), sum(f.quantity * f.price for f in side) // sum(f.quantity for f in side)))
        return self.margin_paise(held)
