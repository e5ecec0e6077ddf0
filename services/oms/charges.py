"""Indian equity and F&O trading charges per fill: brokerage, STT, exchange, SEBI, stamp duty, GST.

Rates come from OmsSettings; Decimal math, each component rounded to paise. Used by the VirtualBroker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from services.oms.config import OmsSettings
from shared.contracts import trading_pb2


class Segment(enum.Enum):
    EQUITY_INTRADAY = "equity_intraday"
    EQUITY_DELIVERY = "equity_delivery"
    FUTURES = "futures"
    OPTIONS = "options"


def segment_of(order: trading_pb2.OrderRequest) -> Segment:
    """F&O by exchange segment (nse_fo, bse_fo, mcx_fo, cde_fo), options by a CE/PE symbol; cash by product."""
    if order.exchange_segment.lower().endswith("_fo"):
        return Segment.OPTIONS if order.symbol.upper().endswith(("CE", "PE")) else Segment.FUTURES
    if order.product == trading_pb2.PRODUCT_CNC:
        return Segment.EQUITY_DELIVERY
    return Segment.EQUITY_INTRADAY


@dataclass(frozen=True)
class Charges:
    """One fill's charges in paise."""

    brokerage: int = 0
    stt: int = 0
    exchange: int = 0
    sebi: int = 0
    stamp: int = 0
    gst: int = 0

    @property
    def total(self) -> int:
        return self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.gst


def _paise(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class ChargeModel:
    """Rates as fractions of turnover (brokerage_flat_paise is per executed order)."""

    brokerage_flat_paise: int
    brokerage_rate: Decimal
    stt: dict[Segment, tuple[Decimal, Decimal]]  # (buy rate, sell rate)
    exchange: dict[Segment, Decimal]
    sebi_fee: Decimal
    stamp_buy: dict[Segment, Decimal]
    gst: Decimal

    @classmethod
    def from_settings(cls, s: OmsSettings) -> ChargeModel:
        zero = Decimal(0)
        return cls(
            brokerage_flat_paise=s.brokerage_flat_paise, brokerage_rate=s.brokerage_rate,
            stt={Segment.EQUITY_INTRADAY: (zero, s.stt_equity_intraday_sell),
                 Segment.EQUITY_DELIVERY: (s.stt_equity_delivery, s.stt_equity_delivery),
                 Segment.FUTURES: (zero, s.stt_futures_sell), Segment.OPTIONS: (zero, s.stt_options_sell)},
            exchange={Segment.EQUITY_INTRADAY: s.exchange_equity, Segment.EQUITY_DELIVERY: s.exchange_equity,
                      Segment.FUTURES: s.exchange_futures, Segment.OPTIONS: s.exchange_options},
            sebi_fee=s.sebi_fee,
            stamp_buy={Segment.EQUITY_INTRADAY: s.stamp_equity_intraday_buy,
                       Segment.EQUITY_DELIVERY: s.stamp_equity_delivery_buy,
                       Segment.FUTURES: s.stamp_futures_buy, Segment.OPTIONS: s.stamp_options_buy},
            gst=s.gst)

    @classmethod
    def default(cls) -> ChargeModel:
        return cls.from_settings(OmsSettings())

    def for_fill(self, order: trading_pb2.OrderRequest, quantity: int, price_paise: int,
                 brokerage_so_far_paise: int = 0) -> Charges:
        """Charges of one fill of `order`. Option turnover is the premium (price x quantity).

        The flat brokerage is per executed order: later fills of the same order pay only what
        is left of it (pass the brokerage already charged to the order).
        """
        seg = segment_of(order)
        turnover = Decimal(quantity) * Decimal(price_paise)
        buy = order.side == trading_pb2.SIDE_BUY
        flat_left = max(0, self.brokerage_flat_paise - brokerage_so_far_paise)
        brokerage = min(flat_left, _paise(turnover * self.brokerage_rate))
        stt_buy, stt_sell = self.stt[seg]
        stt = _paise(turnover * (stt_buy if buy else stt_sell))
        exchange = _paise(turnover * self.exchange[seg])
        sebi = _paise(turnover * self.sebi_fee)
        stamp = _paise(turnover * self.stamp_buy[seg]) if buy else 0
        gst = _paise(Decimal(brokerage + exchange + sebi) * self.gst)
        return Charges(brokerage=brokerage, stt=stt, exchange=exchange, sebi=sebi, stamp=stamp, gst=gst)
