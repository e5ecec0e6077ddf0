"""OMS settings: charge rates, PlaceOrder wait, broker polling and unknown-outcome lookups (env NEOPULSE_OMS_).

Read by the OMS module and by ChargeModel.from_settings (the VirtualBroker's charges).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings


class OmsSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_OMS_", extra="forbid", validate_default=True)
    section = "oms"

    # PlaceOrder / SquareOff wait this long for the order to reach the OMS book after risk accepts it.
    place_order_wait_s: float = Field(default=5.0, gt=0, le=120)
    # Poll the broker's order book for open orders this often (brokers without an order feed); 0 = never.
    poll_interval_s: float = Field(default=5.0, ge=0)
    # Compare the broker's positions with the book this often (a broker holding real positions, not the paper
    # VirtualBroker); a difference seen twice in a row is a critical alert. 0 = never.
    position_check_s: float = Field(default=60.0, ge=0)
    # A placement whose outcome is unknown (timeout) is looked up by tag this many times before REJECTED.
    unknown_outcome_lookups: int = Field(default=4, ge=1, le=50)
    # First backoff between those lookups, doubled each time.
    lookup_backoff_s: float = Field(default=0.5, ge=0, le=30)

    # Charges (fractions of turnover unless named _paise). Brokerage: the lower of flat and percentage, per order.
    brokerage_flat_paise: int = Field(default=2000, ge=0)
    brokerage_rate: Decimal = Field(default=Decimal("0.0003"), ge=0, lt=1)
    stt_equity_intraday_sell: Decimal = Field(default=Decimal("0.00025"), ge=0, lt=1)
    stt_equity_delivery: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    stt_futures_sell: Decimal = Field(default=Decimal("0.0002"), ge=0, lt=1)
    stt_options_sell: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    exchange_equity: Decimal = Field(default=Decimal("0.0000297"), ge=0, lt=1)
    exchange_futures: Decimal = Field(default=Decimal("0.0000173"), ge=0, lt=1)
    exchange_options: Decimal = Field(default=Decimal("0.0003503"), ge=0, lt=1)
    # Rs 10 per crore of turnover.
    sebi_fee: Decimal = Field(default=Decimal("0.000001"), ge=0, lt=1)
    stamp_equity_intraday_buy: Decimal = Field(default=Decimal("0.00003"), ge=0, lt=1)
    stamp_equity_delivery_buy: Decimal = Field(default=Decimal("0.00015"), ge=0, lt=1)
    stamp_futures_buy: Decimal = Field(default=Decimal("0.00002"), ge=0, lt=1)
    stamp_options_buy: Decimal = Field(default=Decimal("0.00003"), ge=0, lt=1)
    gst: Decimal = Field(default=Decimal("0.18"), ge=0, lt=1)
