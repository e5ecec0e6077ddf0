"""Seeded synthetic NSE market: real instrument tokens, tick sizes and lot sizes, random-walk prices.

Feeds the synthetic ingestion source and the Kotak simulator alike.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from shared.contracts import market_pb2
from shared.money import snap_to_tick, to_paise

# symbol, NSE token, reference price (rupees). NSE cash: tick 0.05, lot 1, no freeze quantity.
NSE_EQUITIES: tuple[tuple[str, int, float], ...] = (
    ("RELIANCE-EQ", 2885, 1290.0), ("TCS-EQ", 11536, 3450.0), ("INFY-EQ", 1594, 1540.0),
    ("HDFCBANK-EQ", 1333, 1720.0), ("SBIN-EQ", 3045, 810.0), ("ICICIBANK-EQ", 4963, 1310.0),
    ("ITC-EQ", 1660, 430.0), ("LT-EQ", 11483, 3620.0), ("AXISBANK-EQ", 5900, 1150.0),
    ("KOTAKBANK-EQ", 1922, 2080.0), ("BHARTIARTL-EQ", 10604, 1860.0), ("HINDUNILVR-EQ", 1394, 2380.0),
    ("BAJFINANCE-EQ", 317, 890.0), ("MARUTI-EQ", 10999, 12400.0), ("ASIANPAINT-EQ", 236, 2310.0),
    ("TATAMOTORS-EQ", 3456, 690.0), ("WIPRO-EQ", 3787, 250.0), ("SUNPHARMA-EQ", 3351, 1700.0),
    ("TITAN-EQ", 3506, 3400.0), ("ULTRACEMCO-EQ", 11532, 11800.0), ("NTPC-EQ", 11630, 340.0),
    ("POWERGRID-EQ", 14977, 300.0), ("ONGC-EQ", 2475, 245.0), ("TATASTEEL-EQ", 3499, 150.0),
    ("HCLTECH-EQ", 7229, 1620.0), ("TECHM-EQ", 13538, 1530.0), ("NESTLEIND-EQ", 17963, 2260.0),
    ("ADANIENT-EQ", 25, 2450.0), ("ADANIPORTS-EQ", 15083, 1380.0), ("COALINDIA-EQ", 20374, 390.0),
    ("JSWSTEEL-EQ", 11723, 1010.0), ("HINDALCO-EQ", 1363, 690.0), ("GRASIM-EQ", 1232, 2700.0),
    ("CIPLA-EQ", 694, 1510.0), ("DRREDDY-EQ", 881, 1250.0), ("EICHERMOT-EQ", 910, 5600.0),
    ("HEROMOTOCO-EQ", 1348, 4300.0), ("BAJAJ-AUTO-EQ", 16669, 8400.0), ("BRITANNIA-EQ", 547, 5600.0),
    ("DIVISLAB-EQ", 10940, 6000.0), ("APOLLOHOSP-EQ", 157, 7100.0), ("INDUSINDBK-EQ", 5258, 780.0),
    ("BPCL-EQ", 526, 320.0), ("SBILIFE-EQ", 21808, 1800.0), ("HDFCLIFE-EQ", 467, 760.0),
    ("TATACONSUM-EQ", 3432, 1100.0), ("M&M-EQ", 2031, 3100.0), ("BAJAJFINSV-EQ", 16675, 2000.0),
    ("SHRIRAMFIN-EQ", 4306, 620.0), ("LTIM-EQ", 17818, 5300.0),
)
NSE_TICK_PAISE = 5


def nse_instruments(symbols: list[str] | None = None) -> list[market_pb2.Instrument]:
    """The bundled NSE equity universe (all, or the named symbols in that order)."""
    table = {sym: (tok, px) for sym, tok, px in NSE_EQUITIES}
    chosen = symbols or [s for s, _, _ in NSE_EQUITIES]
    out = []
    for sym in chosen:
        if sym not in table:
            raise KeyError(sym)
        tok, _ = table[sym]
        out.append(market_pb2.Instrument(token=tok, symbol=sym, exchange_segment="nse_cm",
                                         tick_size_paise=NSE_TICK_PAISE, lot_size=1, freeze_quantity=0,
                                         name=sym.removesuffix("-EQ"), price_band_bps=2000))
    return out


def reference_price_paise(symbol: str) -> int:
    for sym, _, px in NSE_EQUITIES:
        if sym == symbol:
            return to_paise(px)  # exact: int(1234.05 * 100) would be 123404
    raise KeyError(symbol)


@dataclass
class _Walk:
    inst: market_pb2.Instrument
    price: float  # paise, unsnapped
    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    volume: int = 0
    turnover: int = 0


class SyntheticMarket:
    """A seeded random walk per instrument; each call yields the next ticks.

    Volatility is annualised-style per tick (`vol_bps` per tick, default 1 bp) with a
    slow mean-reverting drift so RSI swings through overbought and oversold.
    """

    def __init__(self, instruments: list[market_pb2.Instrument], seed: int = 7, vol_bps: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.vol = vol_bps / 10_000
        self.walks = []
        for inst in instruments:
            try:
                px = reference_price_paise(inst.symbol)
            except KeyError:
                px = 100_00
            close = snap_to_tick(px, inst.tick_size_paise or NSE_TICK_PAISE)
            self.walks.append(_Walk(inst, float(px), open=close, high=close, low=close, close=close))
        self._phase = [self.rng.random() * 2 * math.pi for _ in self.walks]
        self._i = 0

    @property
    def instruments(self) -> list[market_pb2.Instrument]:
        return [w.inst for w in self.walks]

    def next_ticks(self, ts_ns: int, count: int) -> list[market_pb2.Tick]:
        """`count` ticks, instruments round-robin, all stamped ts_ns."""
        rng, vol, walks = self.rng, self.vol, self.walks
        n = len(walks)
        out = []
        for _ in range(count):
            i = self._i % n
            self._i += 1
            w = walks[i]
            # Sine drift on a ~20-minute cycle makes trends that momentum strategies can see.
            drift = math.sin(self._phase[i] + ts_ns / 1e9 / 1200 * 2 * math.pi) * vol * 0.6
            w.price *= math.exp(drift + rng.gauss(0.0, vol))
            tick = w.inst.tick_size_paise or NSE_TICK_PAISE
            ltp = max(tick, snap_to_tick(int(w.price), tick))
            ltq = rng.choice((1, 1, 2, 5, 10, 25, 50, 100))
            w.volume += ltq
            w.turnover += ltq * ltp
            w.high = max(w.high, ltp)
            w.low = min(w.low, ltp)
            spread = tick * rng.choice((1, 1, 2))
            out.append(market_pb2.Tick(
                token=w.inst.token, exchange_segment=w.inst.exchange_segment, ts_ns=ts_ns, ltp_paise=ltp,
                ltq=ltq, volume=w.volume, bid_paise=ltp - spread, ask_paise=ltp + spread,
                bid_qty=rng.randint(1, 500), ask_qty=rng.randint(1, 500), open_paise=w.open,
                high_paise=w.high, low_paise=w.low, close_paise=w.close, atp_paise=w.turnover // w.volume))
        return out
