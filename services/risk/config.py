"""Risk settings (env NEOPULSE_RISK_, TOML [risk]) and the Limits the engine enforces, in paise.

Config speaks rupees; Limits speaks paise and converts to and from the RiskLimits contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.clock import SESSIONS_IST, Session, fmt_hhmm, fmt_session, parse_hhmm, parse_session, shortest_session
from shared.config import ModuleSettings, Rupees, RupeesOrOff
from shared.contracts import risk_pb2
from shared.errors import InvalidInput
from shared.money import MAX_PAISE, to_paise


def _by_segment(value: dict[str, str], parse: Callable[[str], Any]) -> dict[str, str]:
    """Check every segment's value with `parse`; the error names the segment. Segments are named as the feed names
    them, in lower case: `MCX_FO` is taken as mcx_fo, not as a segment of its own that nothing trades."""
    out: dict[str, str] = {}
    for segment, text in value.items():
        name = segment.strip().lower()
        if name in out:
            raise ValueError(f"{segment}: named twice ({name})")
        try:
            parse(text)
        except ValueError as exc:
            raise ValueError(f"{segment}: {exc}") from None
        out[name] = text
    return out


def _check_hhmm(value: str) -> str:
    parse_hhmm(value)  # raises ValueError("expected HH:MM, got ...")
    return value


SQUARE_OFF_TIMES_IST = {"mcx_fo": "23:00", "cde_fo": "16:45"}  # segments trading past 15:30 square off at their own


def square_off_problem(default: tuple[int, int], by_segment: Mapping[str, tuple[int, int]],
                       sessions: Mapping[str, Session]) -> str:
    """Why MIS square-off would never happen in some segment ("" when it would): its time (the segment's own, else
    square_off_time_ist) must fall inside the segment's session, as risk refuses its own square-off order outside
    market hours."""
    for segment, session in sessions.items():
        opens, closes = shortest_session(session)  # MCX: its summer close
        at = by_segment.get(segment, default)
        if not opens < at < closes:
            setting = f"square_off_times_ist.{segment}" if segment in by_segment else "square_off_time_ist"
            return (f"{setting} {fmt_hhmm(at)} is outside {segment}'s market hours {fmt_session((opens, closes))}: "
                    "risk would refuse its own square-off orders there and MIS positions would stay open")
    return ""


class Limits(BaseModel):
    """The limits one RiskEngine enforces. Money in paise; replaced whole, never field by field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_quantity: int = Field(gt=0)
    max_order_value_paise: int = Field(gt=0)
    max_position_quantity: int = Field(gt=0)
    max_open_orders: int = Field(gt=0)
    max_orders_per_second: float = Field(gt=0, le=10_000)
    daily_loss_reducing_paise: int = Field(gt=0)
    daily_loss_halt_paise: int = Field(gt=0)
    # 0 turns the band off.
    price_band_bps: int = Field(ge=0, le=10_000)
    square_off_time_ist: str
    enforce_market_hours: bool
    # Rupees at stake in one instrument and in all of them (RiskEngine.check_position_value/_gross_exposure);
    # 0 = no limit.
    max_position_value_paise: int = Field(ge=0, le=MAX_PAISE)
    max_gross_exposure_paise: int = Field(ge=0, le=MAX_PAISE)

    _hhmm = field_validator("square_off_time_ist")(_check_hhmm)

    @field_validator("daily_loss_halt_paise")
    @classmethod
    def _halt_not_below_reducing(cls, value: int, info: ValidationInfo) -> int:
        reducing = info.data.get("daily_loss_reducing_paise")
        if reducing is not None and value < reducing:
            raise ValueError(f"must be >= daily_loss_reducing_paise ({reducing}), got {value}")
        return value

    @property
    def square_off_hhmm(self) -> tuple[int, int]:
        return parse_hhmm(self.square_off_time_ist)

    def to_proto(self) -> risk_pb2.RiskLimits:
        return risk_pb2.RiskLimits(**self.model_dump())

    @classmethod
    def from_proto(cls, proto: risk_pb2.RiskLimits) -> Limits:
        """Validate a whole RiskLimits message; InvalidInput names the first bad field."""
        values: dict[str, Any] = {name: getattr(proto, name) for name in cls.model_fields}
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "limits"
            if err["type"] == "value_error":  # our validators already quote the value
                message = str(err["msg"]).removeprefix("Value error, ")
            else:
                message = f"{err['msg']} (got {values.get(field)!r})"
            raise InvalidInput(f"limits.{field}", message) from None


class RiskSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_RISK_", extra="forbid", validate_default=True)
    section = "risk"

    max_order_quantity: int = Field(default=1_000, gt=0)
    # Rupees (converted to paise for the engine).
    max_order_value: Rupees = Decimal("1000000")
    # Per instrument, net across products.
    max_position_quantity: int = Field(default=5_000, gt=0)
    # Rupees: most one instrument's position (with working orders on its side) may be worth, and most all of them
    # together may be worth (each instrument at its larger side with working orders). 0 = no limit.
    max_position_value: RupeesOrOff = Decimal(0)
    max_gross_exposure: RupeesOrOff = Decimal(0)
    max_open_orders: int = Field(default=50, gt=0)
    max_orders_per_second: float = Field(default=10.0, gt=0, le=10_000)
    # Daily loss in rupees (realised + mark-to-market - charges) that moves the state to REDUCING / HALTED.
    daily_loss_reducing: Rupees = Decimal("25000")
    daily_loss_halt: Rupees = Decimal("50000")
    # Allowed distance of limit/trigger prices from the last traded price; 0 = no band.
    price_band_bps: int = Field(default=500, ge=0, le=10_000)
    square_off_time_ist: str = "15:15"
    # Segments whose MIS positions are squared off at their own time (MCX and currency trade past 15:30), over
    # SQUARE_OFF_TIMES_IST. Every segment's time must fall inside its market hours.
    square_off_times_ist: dict[str, str] = Field(default_factory=dict)
    # Market hours by exchange segment, over the built-in ones (shared.clock.SESSIONS_IST, where MCX's close follows
    # US daylight time), e.g. {mcx_fo = "09:00-17:00"} for MCX agri contracts only.
    sessions: dict[str, str] = Field(default_factory=dict)
    # After square_off_time, retry this often (clock seconds) while an MIS position is left unclosed, until its
    # segment's close (then one CRITICAL alert that it was left open, and no more retries that day).
    square_off_retry_s: float = Field(default=30.0, gt=0)
    enforce_market_hours: bool = True
    # How often the loss limit is re-evaluated from marks, and how often run() looks at the clock (real ms).
    loss_check_interval_ms: float = Field(default=100.0, ge=0)
    timer_interval_ms: float = Field(default=200.0, gt=0)
    # Kill-switch cancels the OMS refuses (an order the broker has not acknowledged yet) are retried, the
    # delay doubling from cancel_retry_backoff_ms up to 2 s, for at most cancel_retry_window_ms (real ms).
    cancel_retry_backoff_ms: float = Field(default=200.0, gt=0)
    cancel_retry_window_ms: float = Field(default=10_000.0, ge=0)

    _hhmm = field_validator("square_off_time_ist")(_check_hhmm)

    _segment_times = field_validator("square_off_times_ist")(lambda value: _by_segment(value, parse_hhmm))
    _sessions = field_validator("sessions")(lambda value: _by_segment(value, parse_session))

    def market_sessions(self) -> dict[str, Session]:
        return {**SESSIONS_IST, **{segment: parse_session(text) for segment, text in self.sessions.items()}}

    def square_off_hhmm_by_segment(self) -> dict[str, tuple[int, int]]:
        return {segment: parse_hhmm(hhmm) for segment, hhmm in {**SQUARE_OFF_TIMES_IST,
                                                                  **self.square_off_times_ist}.items()}

    @model_validator(mode="after")
    def _square_off_in_market_hours(self) -> RiskSettings:
        sessions = self.market_sessions()
        unknown = sorted(set(self.square_off_times_ist) - set(sessions))
        if unknown:
            raise ValueError(f"square_off_times_ist: unknown exchange segment {unknown[0]!r}; the segments are "
                             + ", ".join(sessions) + " (more through [risk] sessions)")
        problem = square_off_problem(parse_hhmm(self.square_off_time_ist), self.square_off_hhmm_by_segment(), sessions)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("daily_loss_halt")
    @classmethod
    def _halt_not_below_reducing(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        reducing = info.data.get("daily_loss_reducing")
        if reducing is not None and value < reducing:
            raise ValueError(f"must be >= daily_loss_reducing ({reducing}), got {value}")
        return value

    def limits(self) -> Limits:
        return Limits(
            max_order_quantity=self.max_order_quantity, max_order_value_paise=to_paise(self.max_order_value),
            max_position_quantity=self.max_position_quantity, max_open_orders=self.max_open_orders,
            max_orders_per_second=self.max_orders_per_second,
            daily_loss_reducing_paise=to_paise(self.daily_loss_reducing),
            daily_loss_halt_paise=to_paise(self.daily_loss_halt), price_band_bps=self.price_band_bps,
            square_off_time_ist=self.square_off_time_ist, enforce_market_hours=self.enforce_market_hours,
            max_position_value_paise=to_paise(self.max_position_value),
            max_gross_exposure_paise=to_paise(self.max_gross_exposure))
