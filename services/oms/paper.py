"""The paper account: what the VirtualBroker's account has to trade with, and its RMS check, as a broker's would be.

- Total: the capital (`[oms] paper_capital`) + today's realised P&L - today's charges + today's unrealised loss (a
  gain not yet realised is no margin, as a broker's RMS counts it).
- Margin, for each token and product: the largest position its working orders could leave, max(|net + buys|,
  |net - sells|) units (an exit adds none), at the token's last price (else the position's or the order's price) x
  its price factor x the product's rate: `paper_margin_mis` (20%, the exchanges' least for intraday equity),
  `paper_margin_cnc` (100%: delivery is paid in full), `paper_margin_nrml` (20%, about what futures take).
- An order that would raise the margin held above the total is refused with the broker's text ("RMS:Margin
  Exceeds,Required:..."). One that does not raise it, an exit, is never refused, however much the account lost.
- A delivery (CNC) sell sells only shares held: beyond the token's CNC position less the CNC sells already working
  it is refused ("RMS:Rule: Check holdings,..."), as Kotak's RMS refuses a retail client's short in delivery. MIS
  and NRML may sell short (against margin, above).
- Working all that out takes ~100 us with 50 positions, too long for every order of a burst. So the OMS counts
  what is left every RECOUNT_S / 2, off the order path (recount), and an order that surely fits in it, less the
  most each order since could take (all its units), goes at once. One that might not fit, or any order when the
  count is RECOUNT_S old, is worked out afresh. In between, prices may have moved the account by a second's worth,
  as a broker's RMS, which marks positions to market every few seconds, allows.

Positions are the OMS's book, and the fills the VirtualBroker has made that the OMS has not booked yet (`unbooked`:
each order's, while the ledger write of its fill is under way, milliseconds on PostgreSQL): the order has left the
working set by then, and a count in that gap that missed the fill would find its whole margin free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from shared.clock import NS
from shared.contracts import market_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.money import margin_exceeded
from shared.positions import PositionBook
from shared.price_factor import ONE, factor_of

Key = tuple[int, int]  # token, product
Unbooked = tuple[t.OrderRequest, int, int]  # an order's terms, its units filled and not booked yet, their price
RECOUNT_S = 1.0  # the longest a count of what is left is used for (the clock's seconds)
RECOUNT_NS = int(RECOUNT_S * NS)
_ENTITY = " for entity account across exchange across segment across product"  # the RMS's texts end so


@dataclass(slots=True)
class _Exposure:
    net: int = 0
    buys: int = 0
    sells: int = 0
    price_paise: int = 0
    factor: Fraction = ONE

    def units(self, side: int = 0, quantity: int = 0) -> int:
        """The largest position the key could come to, with `quantity` more on `side`."""
        buys = self.buys + (quantity if side == t.SIDE_BUY else 0)
        sells = self.sells + (quantity if side == t.SIDE_SELL else 0)
        return max(abs(self.net + buys), abs(self.net - sells))


class PaperAccount:
    def __init__(self, capital_paise: int, rates: Mapping[int, Fraction],
                 positions: Callable[[], PositionBook], now_ns: Callable[[], int]) -> None:
        self.capital_paise = capital_paise
        self.rates = dict(rates)
        self.positions = positions  # the OMS's book, rolled to today
        self.now_ns = now_ns  # the market's clock: a replay's counts age with its prices, not with the machine
        # What was left at the last count, less the most each order accepted since could take; good until then.
        self._headroom_paise = 0
        self._counted_until = 0  # ns, the clock's

    def total_paise(self, book: PositionBook) -> int:
        return (self.capital_paise + book.realised_pnl_paise() - book.charges_paise()
                + min(book.unrealised_pnl_paise(), 0))

    def funds(self, working: Iterable[tuple[t.OrderRequest, int]], last: Mapping[int, market_pb2.Tick],
              now_ns: int, unbooked: Iterable[Unbooked] = ()) -> oms_pb2.GetFundsResponse:
        book = self.positions()
        total = self.total_paise(book)
        used = self._margin(self._exposures(book, working, last, unbooked))
        return oms_pb2.GetFundsResponse(
            account="paper", available_paise=total - used, margin_used_paise=used, total_paise=total,
            realised_pnl_paise=book.realised_pnl_paise(),
            unrealised_pnl_paise=book.unrealised_pnl_paise(), as_of_ns=now_ns)

    def recount(self, working: Iterable[tuple[t.OrderRequest, int]], last: Mapping[int, market_pb2.Tick],
                unbooked: Iterable[Unbooked] = ()) -> None:
        """Count what is left now, for the orders of the next RECOUNT_S."""
        book = self.positions()
        self._headroom_paise = self.total_paise(book) - self._margin(self._exposures(book, working, last, unbooked))
        self._counted_until = self.now_ns() + RECOUNT_NS

    def forget_count(self) -> None:
        """A fill moved the account (its price is not the one its order was counted at): the next order counts
        afresh, not from what was left before it."""
        self._counted_until = 0

    def refusal(self, order: t.OrderRequest, quantity: int, working: Iterable[tuple[t.OrderRequest, int]],
                last: Mapping[int, market_pb2.Tick], replacing: tuple[t.OrderRequest, int] | None = None,
                unbooked: Iterable[Unbooked] = ()) -> str:
        """The RMS's text refusing `quantity` units of `order` (its remainder) beside the `working` orders (the order
        itself left out) and the `unbooked` fills, or "" when the account has the margin. `replacing`: the order's
        terms and remainder before a change, which its new ones replace."""
        if order.product == t.PRODUCT_CNC and order.side == t.SIDE_SELL and (replacing is None or
                                                                          quantity > replacing[1]):
            working, unbooked = list(working), list(unbooked)  # read twice: here and for the margin below
            short = self._delivery_short(order, quantity, working, unbooked)
            if short:
                return short
        if replacing is None and self.now_ns() < self._counted_until:
            rate = self.rates.get(order.product or t.PRODUCT_MIS, ONE)
            most = quantity * _order_price(order, last)  # the most it could take: all its units
            if order.HasField("price_factor"):
                most = math.ceil(most * factor_of(order.price_factor) * rate)
            else:
                most = -(-most * rate.numerator // rate.denominator)
            if most <= self._headroom_paise:
                self._headroom_paise -= most
                return ""
        book = self.positions()
        exposures = self._exposures(book, working, last, unbooked)
        key = (order.token, order.product or t.PRODUCT_MIS)
        mine = exposures.pop(key, None) or _Exposure(price_paise=_order_price(order, last),
                                                     factor=factor_of(order.price_factor))
        before = mine.units(*((replacing[0].side, replacing[1]) if replacing else ()))
        after = mine.units(order.side, quantity)
        if after <= before or not mine.price_paise:
            return ""  # an exit (or a price not known yet: a market order before the first tick) takes no more
        rate = self.rates.get(key[1], ONE)
        needed = _value(after, mine, rate) - _value(before, mine, rate)
        available = self.total_paise(book) - self._margin(exposures) - _value(before, mine, rate)
        if needed > available:
            return margin_exceeded(needed, available)
        self._headroom_paise, self._counted_until = available - needed, self.now_ns() + RECOUNT_NS
        return ""

    def _delivery_short(self, order: t.OrderRequest, quantity: int, working: Iterable[tuple[t.OrderRequest, int]],
                        unbooked: Iterable[Unbooked] = ()) -> str:
        """The RMS's text refusing a CNC sell of `quantity` beyond the shares held (the token's CNC position with its
        fills not booked yet, less the CNC sells of it already working), or "": retail clients may not sell short in
        delivery."""
        position = self.positions().positions.get((order.token, t.PRODUCT_CNC))
        net = position.net_quantity if position is not None else 0
        net += sum(filled if request.side == t.SIDE_BUY else -filled for request, filled, _ in unbooked
                   if request.token == order.token and request.product == t.PRODUCT_CNC)
        held = max(net, 0)
        selling = sum(remaining for request, remaining in working if request.token == order.token
                      and request.product == t.PRODUCT_CNC and request.side == t.SIDE_SELL)
        if quantity <= held - selling:
            return ""
        return (f"RMS:Rule: Check holdings,Sell Quantity:{quantity}, Holdings:{held}, Pending Sell:{selling}"
                f"{_ENTITY}: a delivery (CNC) sell sells only shares held; sell at most {max(held - selling, 0)}, "
                "or sell short intraday (MIS)")

    def _exposures(self, book: PositionBook, working: Iterable[tuple[t.OrderRequest, int]],
                   last: Mapping[int, market_pb2.Tick], unbooked: Iterable[Unbooked] = ()) -> dict[Key, _Exposure]:
        out: dict[Key, _Exposure] = {}
        for key, pos in book.positions.items():
            if pos.net_quantity:
                out[key] = _Exposure(net=pos.net_quantity, price_paise=pos.last_price_paise or pos.average_price_paise,
                                     factor=pos.price_factor)
        for request, filled, price_paise in unbooked:  # positions the book has not booked yet
            key = (request.token, request.product or t.PRODUCT_MIS)
            exposure = out.get(key)
            if exposure is None:
                exposure = out[key] = _Exposure(price_paise=price_paise, factor=factor_of(request.price_factor))
            exposure.net += filled if request.side == t.SIDE_BUY else -filled
        for request, remaining in working:
            key = (request.token, request.product or t.PRODUCT_MIS)
            exposure = out.get(key)
            if exposure is None:
                exposure = out[key] = _Exposure(price_paise=_order_price(request, last),
                                                factor=factor_of(request.price_factor))
            if request.side == t.SIDE_BUY:
                exposure.buys += remaining
            else:
                exposure.sells += remaining
        for (token, _), exposure in out.items():
            tick = last.get(token)
            if tick is not None and tick.ltp_paise:
                exposure.price_paise = tick.ltp_paise
        return out

    def _margin(self, exposures: Mapping[Key, _Exposure]) -> int:
        return sum(_value(e.units(), e, self.rates.get(product, ONE)) for (_, product), e in exposures.items())


def _value(units: int, exposure: _Exposure, rate: Fraction) -> int:
    """The margin `units` of the key take: whole paise, rounded up (the broker blocks no less)."""
    if exposure.factor is ONE:  # shares: whole numbers, no Fraction per key
        return -(-units * exposure.price_paise * rate.numerator // rate.denominator)
    return math.ceil(units * exposure.price_paise * exposure.factor * rate)


def _order_price(order: t.OrderRequest, last: Mapping[int, market_pb2.Tick]) -> int:
    """The price an order's units are valued at: its token's last, else its limit, else its trigger."""
    tick = last.get(order.token)
    return (tick.ltp_paise if tick is not None else 0) or order.price_paise or order.trigger_price_paise
