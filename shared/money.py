"""Prices as integer paise: parsing, formatting and tick-size snapping.

Floats never enter the order path; they are converted here, at the edge.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

PAISE_PER_RUPEE = 100


def to_paise(value: str | int | float | Decimal) -> int:
    """Rupees (as text, int, float or Decimal) to integer paise, rounding half-even."""
    try:
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {value!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a finite price: {value!r}")
    return int((dec * PAISE_PER_RUPEE).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_rupees(paise: int) -> Decimal:
    """Integer paise to Decimal rupees with two places."""
    return (Decimal(paise) / PAISE_PER_RUPEE).quantize(Decimal("0.01"))


def fmt_inr(paise: int) -> str:
    """Display form: ₹1,234.50 (negative as -₹12.00)."""
    sign = "-" if paise < 0 else ""
    return f"{sign}₹{abs(to_rupees(paise)):,.2f}"


def is_on_tick(price_paise: int, tick_paise: int) -> bool:
    return tick_paise <= 0 or price_paise % tick_paise == 0


def snap_to_tick(price_paise: int, tick_paise: int, *, up: bool | None = None) -> int:
    """Snap to the tick grid: nearest by default, or up/down when asked."""
    if tick_paise <= 0:
        return price_paise
    low = price_paise - price_paise % tick_paise
    if low == price_paise:
        return price_paise
    if up is True:
        return low + tick_paise
    if up is False:
        return low
    return low + tick_paise if (price_paise - low) * 2 >= tick_paise else low
