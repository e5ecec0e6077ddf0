"""Indian trading charges per fill: brokerage, STT/CTT, exchange charges, SEBI fee, stamp duty, GST.

Rates come from OmsSettings; exact rational math. Used by the VirtualBroker, and by the OMS to estimate live fills
(Kotak bills charges only on the contract note). Each component is rounded to paise per fill, the contract note rounds
once per note (STT to the rupee): the two differ by at most about 3 paise a fill, and by under a rupee a note.

Where the default rates come from (each a fraction of turnover; option turnover is the premium):
- STT: delivery 0.1% both sides, intraday 0.025% sell (unchanged since 2013); futures 0.05% and options 0.15% of
  the premium, sell side, from 1 April 2026 (Finance Act 2026, clause 143; NSE/FATAX/73524 of 31 March 2026).
  None on currency derivatives. Exercised options pay 0.15% of the intrinsic value: not modelled (no exercise fills).
- CTT (mcx_fo): 0.01% on non-agricultural futures sold, 0.05% of the premium on options sold.
- Exchange: NSE transaction charge + IPFT Rs 307 / 183 / 3,553 per crore for cash / futures / options (Rs 297 / 173
  / 3,503 + IPFT Rs 10 / 10 / 50 from 1 October 2024; NSE/FA/73061 moved the IPFT into the charge from
  1 March 2026, same total). BSE Rs 375 per crore for group A/B scrips, nil on futures, Rs 3,250 per crore of
  premium on SENSEX/BANKEX options. NSE currency Rs 35 per crore on futures, Rs 3,110 on option premium; MCX
  Rs 210 per crore on futures, Rs 4,180 on option premium (exchange circulars effective 1 October 2024).
  BSE currency (bcs_fo) is charged at NSE's currency rates.
- SEBI fee Rs 10 per crore; stamp duty on the buy side from 1 July 2020: delivery 0.015%, intraday and options
  0.003%, futures 0.002%, currency 0.0001%; GST 18% on brokerage + exchange charges + SEBI fee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from services.oms.config import Brokerage, OmsSettings, Segment
from shared.contracts import trading_pb2
from shared.price_factor import ONE, factor_of

_ONE = Decimal(1)
_CURRENCY = ("cde_fo", "bcs_fo")


def segment_of(order: trading_pb2.OrderRequest) -> Segment:
    """mcx_fo is commodities, cde_fo (and bcs_fo) currency, other *_fo equity F&O; options by a CE/PE symbol;
    cash by product."""
    exchange_segment = order.exchange_segment.lower()
    option = order.symbol.upper().endswith(("CE", "PE"))
    if exchange_segment == "mcx_fo":
        return Segment.COMMODITY_OPTIONS if option else Segment.COMMODITY_FUTURES
    if exchange_segment in _CURRENCY:
        return Segment.CURRENCY_OPTIONS if option else Segment.CURRENCY_FUTURES
    if exchange_segment.endswith("_fo"):
        return Segment.OPTIONS if option else Segment.FUTURES
    if order.product == trading_pb2.PRODUCT_CNC:
        return Segment.EQUITY_DELIVERY
    return Segment.EQUITY_INTRADAY


@dataclass(frozen=True)
class Charges:
    """One fill's charges in paise (stt is the CTT on MCX)."""

    brokerage: int = 0
    stt: int = 0
    exchange: int = 0
    sebi: int = 0
    stamp: int = 0
    gst: int = 0

    @property
    def total(self) -> int:
        return self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.gst


def _paise(amount: Fraction | int, rate: Decimal) -> int:
    """amount x rate to whole paise, half up, exactly; amounts are not negative. An int amount (shares: factor 1)
    stays in Decimal, exact at these sizes and several times faster than Fraction on every fill."""
    if isinstance(amount, int):
        return int((amount * rate).quantize(_ONE, rounding=ROUND_HALF_UP))
    return math.floor(amount * Fraction(rate) + Fraction(1, 2))


@dataclass(frozen=True)
class ChargeModel:
    """Rates as fractions of turnover (a brokerage's flat_paise is per executed order).

    `exchange` holds the NSE rates (MCX for commodities, NSE for currency); `bse_exchange` the BSE ones for
    bse_cm and bse_fo.
    """

    brokerage: dict[Segment, Brokerage]
    stt: dict[Segment, tuple[Decimal, Decimal]]  # (buy rate, sell rate); CTT for commodities
    exchange: dict[Segment, Decimal]
    bse_exchange: dict[Segment, Decimal]
    sebi_fee: Decimal
    stamp_buy: dict[Segment, Decimal]
    gst: Decimal

    @classmethod
    def from_settings(cls, s: OmsSettings) -> ChargeModel:
        zero = Decimal(0)
        return cls(
            brokerage=s.brokerage_by_segment(),
            stt={Segment.EQUITY_INTRADAY: (zero, s.stt_equity_intraday_sell),
                 Segment.EQUITY_DELIVERY: (s.stt_equity_delivery, s.stt_equity_delivery),
                 Segment.FUTURES: (zero, s.stt_futures_sell), Segment.OPTIONS: (zero, s.stt_options_sell),
                 Segment.CURRENCY_FUTURES: (zero, zero), Segment.CURRENCY_OPTIONS: (zero, zero),
                 Segment.COMMODITY_FUTURES: (zero, s.ctt_commodity_futures_sell),
                 Segment.COMMODITY_OPTIONS: (zero, s.ctt_commodity_options_sell)},
            exchange={Segment.EQUITY_INTRADAY: s.exchange_equity, Segment.EQUITY_DELIVERY: s.exchange_equity,
                      Segment.FUTURES: s.exchange_futures, Segment.OPTIONS: s.exchange_options,
                      Segment.CURRENCY_FUTURES: s.exchange_currency_futures,
                      Segment.CURRENCY_OPTIONS: s.exchange_currency_options,
                      Segment.COMMODITY_FUTURES: s.exchange_mcx_futures,
                      Segment.COMMODITY_OPTIONS: s.exchange_mcx_options},
            bse_exchange={Segment.EQUITY_INTRADAY: s.exchange_bse_equity,
                          Segment.EQUITY_DELIVERY: s.exchange_bse_equity,
                          Segment.FUTURES: s.exchange_bse_futures, Segment.OPTIONS: s.exchange_bse_options},
            sebi_fee=s.sebi_fee,
            stamp_buy={Segment.EQUITY_INTRADAY: s.stamp_equity_intraday_buy,
                       Segment.EQUITY_DELIVERY: s.stamp_equity_delivery_buy,
                       Segment.FUTURES: s.stamp_futures_buy, Segment.OPTIONS: s.stamp_options_buy,
                       Segment.CURRENCY_FUTURES: s.stamp_currency_buy,
                       Segment.CURRENCY_OPTIONS: s.stamp_currency_buy,
                       Segment.COMMODITY_FUTURES: s.stamp_commodity_futures_buy,
                       Segment.COMMODITY_OPTIONS: s.stamp_commodity_options_buy},
            gst=s.gst)

    @classmethod
    def default(cls) -> ChargeModel:
        return cls.from_settings(OmsSettings())

    def for_fill(self, order: trading_pb2.OrderRequest, quantity: int, price_paise: int,
                 brokerage_so_far_paise: int = 0, value_so_far_paise: int | None = None) -> Charges:
        """Charges of one fill of `order`. Turnover is price x quantity x the order's price factor (exact: a lot of a
        contract quoted per barrel is worth its 100 barrels); option turnover is the premium.

        Brokerage is per executed order: pass the brokerage already charged to the order's earlier fills, and
        their price x quantity (filled quantity x average price), and this fill pays what the order's brokerage
        comes to with it, less what they paid (see _brokerage).
        """
        seg = segment_of(order)
        turnover = _turnover(order, quantity, price_paise)
        buy = order.side == trading_pb2.SIDE_BUY
        before = None if value_so_far_paise is None else _turnover(order, value_so_far_paise, 1)
        brokerage = _brokerage(self.brokerage[seg], turnover, brokerage_so_far_paise, before)
        stt_buy, stt_sell = self.stt[seg]
        stt = _paise(turnover, stt_buy if buy else stt_sell)
        exchange_rates = self.bse_exchange if order.exchange_segment.lower().startswith("bse") else self.exchange
        exchange = _paise(turnover, exchange_rates[seg])
        sebi = _paise(turnover, self.sebi_fee)
        stamp = _paise(turnover, self.stamp_buy[seg]) if buy else 0
        gst = _paise(brokerage + exchange + sebi, self.gst)
        return Charges(brokerage=brokerage, stt=stt, exchange=exchange, sebi=sebi, stamp=stamp, gst=gst)

    def brokerage_paid(self, order: trading_pb2.OrderRequest, filled_quantity: int, average_price_paise: int) -> int:
        """The brokerage an order's fills so far have paid, rebuilt from its cumulative fill (after a restart, to
        pass to for_fill): the segment's rule on the filled value, as the fills paid it, to within their rounding."""
        if filled_quantity <= 0:
            return 0
        plan = self.brokerage[segment_of(order)]
        return _brokerage(plan, _turnover(order, filled_quantity, average_price_paise), 0, 0)


def _brokerage(plan: Brokerage, turnover: Fraction | int, paid: int, turnover_before: Fraction | int | None) -> int:
    """One fill's brokerage: the order's brokerage with this fill (flat_paise once per order, the rate on all its
    turnover) less the `paid` by its earlier fills. "lower" and "rate" charge the rate fill by fill, as before.

    "higher" needs the earlier fills' turnover: without it (None), they are taken to have paid the minimum to the
    paisa, so this fill pays at least its rate, at most the minimum's shortfall more than exact (an estimate a
    part-filled order's contract note can only come in under)."""
    on_fill = _paise(turnover, plan.rate)
    flat_left = max(0, plan.flat_paise - paid)
    if plan.mode == "flat":
        return flat_left
    if plan.mode == "rate":
        return on_fill
    if plan.mode == "lower":
        return min(flat_left, on_fill)
    if turnover_before is None:
        return max(flat_left, on_fill)
    return max(0, max(plan.flat_paise, _paise(turnover_before + turnover, plan.rate)) - paid)


def _turnover(order: trading_pb2.OrderRequest, quantity: int, price_paise: int) -> Fraction | int:
    factor = factor_of(order.price_factor)
    return quantity * price_paise if factor is ONE else quantity * price_paise * factor
