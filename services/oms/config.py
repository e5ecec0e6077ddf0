"""OMS settings: charge rates, the paper account, PlaceOrder wait, broker polling and unknown-outcome lookups (env
NEOPULSE_OMS_).

Read by the OMS module and by ChargeModel.from_settings (the VirtualBroker's charges).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings, NumbersNotBooleans, Rupees
from shared.contracts import trading_pb2 as t

MAX_STATUTORY_RATE = Decimal("0.01")  # 1%: the highest real one (STT on option sells) is 0.15%
MAX_BROKERAGE_RATE = Decimal("0.025")  # 2.5%
STATUTORY_RATES = ("stt_", "ctt_", "exchange_", "sebi_fee", "stamp_")  # the fields, by name


class Segment(enum.Enum):
    """The segments charges differ by (services.oms.charges.segment_of); here as the [oms] brokerage table's keys."""

    EQUITY_INTRADAY = "equity_intraday"
    EQUITY_DELIVERY = "equity_delivery"
    FUTURES = "futures"
    OPTIONS = "options"
    CURRENCY_FUTURES = "currency_futures"
    CURRENCY_OPTIONS = "currency_options"
    COMMODITY_FUTURES = "commodity_futures"
    COMMODITY_OPTIONS = "commodity_options"


BrokerageMode = Literal["lower", "higher", "flat", "rate"]
# The fields each mode charges by; a mode must be given those and no others, so a plan is never half read.
_MODE_FIELDS: dict[str, frozenset[str]] = {
    "lower": frozenset({"flat_paise", "rate"}), "higher": frozenset({"flat_paise", "rate"}),
    "flat": frozenset({"flat_paise"}), "rate": frozenset({"rate"})}


class Brokerage(NumbersNotBooleans):
    """One segment's brokerage, per executed order: "lower" of flat_paise and rate x turnover (a cap), "higher" of
    them (a minimum: "0.25% or Rs 20 whichever is higher"), "flat" flat_paise alone (0: free), "rate" alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: BrokerageMode
    flat_paise: int = Field(default=0, ge=0)
    rate: Decimal = Field(default=Decimal(0), ge=0)  # a fraction of turnover; capped in OmsSettings

    @model_validator(mode="after")
    def _the_fields_of_its_mode(self) -> Brokerage:
        wanted = _MODE_FIELDS[self.mode]
        for name in sorted(wanted - self.model_fields_set):
            raise ValueError(f'mode "{self.mode}" charges by ' + " and ".join(sorted(wanted)) + f": set {name}")
        for name in sorted(self.model_fields_set - wanted - {"mode"}):
            raise ValueError(f'{name} is not used by mode "{self.mode}"; remove it, or use mode "lower" or '
                             '"higher" to charge by both flat_paise and rate')
        return self


class OmsSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_OMS_", extra="forbid", validate_default=True)
    section = "oms"

    # PlaceOrder / SquareOff wait this long for the order to reach the OMS book after risk accepts it.
    place_order_wait_s: float = Field(default=5.0, gt=0, le=120)
    # An accepted decision whose signal came from a tick older than this (wall clock, from the tick's arrival; for a
    # manual or square-off order, from risk's decision) is not placed: recorded REJECTED NOT_SENT. Decisions reach the
    # OMS in milliseconds; older ones waited out an OMS restart (split mode resumes risk's decisions where the ledger
    # stopped) or a stalled ledger. 0 = no limit.
    max_decision_age_s: float = Field(default=10.0, ge=0)
    # Poll the broker's order book for open orders this often (a safety net for a broker's order feed, or the only
    # way for a broker without one; never the paper VirtualBroker, whose events cannot go missing); 0 = never.
    poll_interval_s: float = Field(default=5.0, ge=0)
    # Compare the broker's positions with the book this often (a broker holding real positions, not the paper
    # VirtualBroker); a difference still there this long after it was first seen is a critical alert (one that
    # goes away sooner was a fill the broker counted before its event reached the book). 0 = never.
    position_check_s: float = Field(default=60.0, ge=0)
    position_grace_s: float = Field(default=5.0, gt=0, le=600)
    # Take the account's settled delivery (CNC) holdings into the book at start (with the position check on): a
    # sale of held shares then reduces a position instead of looking like a short to risk. Off by default: the
    # holdings' price moves from the previous close would then count against the daily loss limit, which is
    # meant for what NeoPulse trades, not for a portfolio; set the loss limits with the portfolio in mind.
    take_holdings: bool = False
    # A placement whose outcome is unknown (timeout) is looked up by tag this many times before REJECTED.
    unknown_outcome_lookups: int = Field(default=4, ge=1, le=50)
    # First backoff between those lookups, doubled each time.
    lookup_backoff_s: float = Field(default=0.5, ge=0, le=30)

    # The paper account (mode paper, the VirtualBroker; services/oms/paper.py): its capital, and the margin each
    # product takes as a fraction of what its positions and working orders are worth. An order needing more margin
    # than is left is REJECTED, as the broker's RMS would ("RMS:Margin Exceeds"); an exit never is.
    paper_capital: Rupees = Decimal("1000000")
    paper_margin_mis: Decimal = Field(default=Decimal("0.2"), gt=0, le=1)
    paper_margin_cnc: Decimal = Field(default=Decimal("1"), gt=0, le=1)
    paper_margin_nrml: Decimal = Field(default=Decimal("0.2"), gt=0, le=1)
    # Read the account's funds this often (the gauge neopulse_funds_rupees; live, one read of the broker's limits)
    # and warn once, until it recovers, when what is available falls under low_funds_pct of the total. 0 = never.
    funds_check_s: float = Field(default=60.0, ge=0)
    low_funds_pct: float = Field(default=10.0, ge=0, le=100)
    # A MARKET order still working with nothing filled this long (the broker's seconds) is a CRITICAL notice, once per
    # order: Kotak turns a market order into a limit at the last price +/- its market protection, which can rest while
    # the price runs away (a stop's exit, a square-off). 0 = never.
    market_order_alert_s: float = Field(default=10.0, ge=0)

    # Charges (fractions of turnover unless named _paise; option turnover is the premium). Defaults: rates in force
    # in 2026 (sources in services/oms/charges.py). Brokerage: the lower of flat and percentage, per executed order,
    # in every segment the `brokerage` table does not name (segment name -> Brokerage: a plan's own rule there).
    brokerage_flat_paise: int = Field(default=2000, ge=0)
    brokerage_rate: Decimal = Field(default=Decimal("0.0003"), ge=0, lt=1)
    brokerage: dict[Segment, Brokerage] = Field(default_factory=dict)
    # STT (Finance Act 2026 F&O rates, from 1 April 2026); cde_fo pays none.
    stt_equity_intraday_sell: Decimal = Field(default=Decimal("0.00025"), ge=0, lt=1)
    stt_equity_delivery: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    stt_futures_sell: Decimal = Field(default=Decimal("0.0005"), ge=0, lt=1)
    stt_options_sell: Decimal = Field(default=Decimal("0.0015"), ge=0, lt=1)
    # CTT on mcx_fo sells (non-agricultural futures; agricultural ones pay none: set 0 if you trade only those).
    ctt_commodity_futures_sell: Decimal = Field(default=Decimal("0.0001"), ge=0, lt=1)
    ctt_commodity_options_sell: Decimal = Field(default=Decimal("0.0005"), ge=0, lt=1)
    # NSE (nse_cm, nse_fo): transaction charge + IPFT, Rs 307 / 183 / 3,553 per crore (NSE/FA/73061, 1 March 2026).
    exchange_equity: Decimal = Field(default=Decimal("0.0000307"), ge=0, lt=1)
    exchange_futures: Decimal = Field(default=Decimal("0.0000183"), ge=0, lt=1)
    exchange_options: Decimal = Field(default=Decimal("0.0003553"), ge=0, lt=1)
    # BSE (bse_cm group A/B scrips, bse_fo SENSEX/BANKEX options; SENSEX 50 and stock options pay 0.00005).
    exchange_bse_equity: Decimal = Field(default=Decimal("0.0000375"), ge=0, lt=1)
    exchange_bse_futures: Decimal = Field(default=Decimal("0"), ge=0, lt=1)
    exchange_bse_options: Decimal = Field(default=Decimal("0.000325"), ge=0, lt=1)
    # NSE currency derivatives (cde_fo) and MCX (mcx_fo), from 1 October 2024.
    exchange_currency_futures: Decimal = Field(default=Decimal("0.0000035"), ge=0, lt=1)
    exchange_currency_options: Decimal = Field(default=Decimal("0.000311"), ge=0, lt=1)
    exchange_mcx_futures: Decimal = Field(default=Decimal("0.000021"), ge=0, lt=1)
    exchange_mcx_options: Decimal = Field(default=Decimal("0.000418"), ge=0, lt=1)
    # Rs 10 per crore of turnover, every segment.
    sebi_fee: Decimal = Field(default=Decimal("0.000001"), ge=0, lt=1)
    # Stamp duty, buy side only (Indian Stamp Act as amended from 1 July 2020).
    stamp_equity_intraday_buy: Decimal = Field(default=Decimal("0.00003"), ge=0, lt=1)
    stamp_equity_delivery_buy: Decimal = Field(default=Decimal("0.00015"), ge=0, lt=1)
    stamp_futures_buy: Decimal = Field(default=Decimal("0.00002"), ge=0, lt=1)
    stamp_options_buy: Decimal = Field(default=Decimal("0.00003"), ge=0, lt=1)
    stamp_currency_buy: Decimal = Field(default=Decimal("0.000001"), ge=0, lt=1)
    stamp_commodity_futures_buy: Decimal = Field(default=Decimal("0.00002"), ge=0, lt=1)
    stamp_commodity_options_buy: Decimal = Field(default=Decimal("0.00003"), ge=0, lt=1)
    # GST on brokerage + exchange charges + SEBI fee (never on STT/CTT or stamp duty).
    gst: Decimal = Field(default=Decimal("0.18"), ge=0, lt=1)

    @field_validator("brokerage", mode="before")
    @classmethod
    def _known_segments(cls, value: Any) -> Any:
        """A misspelt segment (equity_delvery) would leave that segment on the default rule without a word."""
        names = [segment.value for segment in Segment]
        for key in value if isinstance(value, dict) else ():
            if key not in names:
                raise ValueError(f"unknown segment {key!r}; the segments are " + ", ".join(names))
        return value

    @model_validator(mode="after")
    def _rates_are_fractions_not_percents(self) -> OmsSettings:
        """Rates are fractions of turnover; one typed as the percent a contract note prints (STT "0.025%" as 0.025)
        would book 100 times the charges and trip the daily loss limits. No real rate is near these caps."""
        rates = {field: getattr(self, field) for field in type(self).model_fields
                 if field == "brokerage_rate" or field.startswith(STATUTORY_RATES)}
        rates |= {f"brokerage.{segment.value}.rate": plan.rate for segment, plan in self.brokerage.items()}
        for field, value in rates.items():
            cap = MAX_BROKERAGE_RATE if field.startswith("brokerage") else MAX_STATUTORY_RATE
            if value > cap:
                raise ValueError(f"{field} must be a fraction of turnover at most {cap} (got {value}, a rate of "
                                 f"{value * 100}%): 0.025% is 0.00025")
        return self

    def brokerage_by_segment(self) -> dict[Segment, Brokerage]:
        """Every segment's brokerage: the table's, else the lower of brokerage_flat_paise and brokerage_rate."""
        default = Brokerage(mode="lower", flat_paise=self.brokerage_flat_paise, rate=self.brokerage_rate)
        return {segment: self.brokerage.get(segment, default) for segment in Segment}

    def paper_rates(self) -> dict[int, Fraction]:
        """Product -> the paper account's margin rate."""
        return {t.PRODUCT_MIS: Fraction(self.paper_margin_mis), t.PRODUCT_CNC: Fraction(self.paper_margin_cnc),
                t.PRODUCT_NRML: Fraction(self.paper_margin_nrml)}
