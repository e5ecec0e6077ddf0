"""Prices as integer paise: parsing, formatting and tick-size snapping.

Floats never enter the order path; they are converted here, at the edge.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

PAISE_PER_RUPEE = 100
# The contracts carry paise as int64: a larger amount is refused here, at the edge, not by protobuf later.
MAX_PAISE = 2**63 - 1
_PAISA = Decimal("0.01")
# Room for any amount up to MAX_PAISE: rounding to the paisa happens once, exactly, whatever the input's digits
# (the default context's 28 digits would round a long input once in the multiplication and again after it).
_EXACT = Context(prec=40, Emax=MAX_EMAX, Emin=MIN_EMIN)


def to_paise(value: str | int | float | Decimal) -> int:
    """Rupees (as text, int, float or Decimal) to integer paise, rounding half-even ("1290.055" -> 129006).

    A float goes through its shortest text form (1290.055, not its binary expansion). ValueError for anything
    else, e.g. "1,290.05", "", NaN, infinities, or more than MAX_PAISE."""
    try:
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {value!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a finite price: {value!r}")
    if dec.adjusted() > 20:  # refused before it becomes a huge int
        raise ValueError(f"price out of range: {value!r}")
    paise = int(dec.quantize(_PAISA, ROUND_HALF_EVEN, _EXACT).scaleb(2, _EXACT))
    if abs(paise) > MAX_PAISE:
        raise ValueError(f"price out of range (at most {MAX_PAISE} paise): {value!r}")
    return paise


def exact_paise(text: str) -> int:
    """A price a person typed, in rupees: above 0, with at most two decimals, taken as given (812.555 is a typo,
    not 812.56: never rounded). ValueError saying what is expected."""
    try:
        price = Decimal(text.strip())
    except InvalidOperation:
        price = Decimal("NaN")
    if not (price.is_finite() and price > 0 and int(price.as_tuple().exponent) >= -2):
        raise ValueError(f"expected rupees above 0 with at most two decimals (812.50), got {text!r}")
    return to_paise(price)


def to_rupees(paise: int) -> Decimal:
    """Integer paise to Decimal rupees with two places."""
    return (Decimal(paise) / PAISE_PER_RUPEE).quantize(Decimal("0.01"))


def fmt_inr(paise: int) -> str:
    """Display form with Indian digit grouping (lakhs, crores): ₹1,234.50, ₹12,34,567.00; negative as -₹12.00."""
    sign = "-" if paise < 0 else ""
    rupees, rest = divmod(abs(paise), PAISE_PER_RUPEE)
    digits = str(rupees)
    head, tail = digits[:-3], digits[-3:]
    groups = []
    while len(head) > 2:
        head, pair = head[:-2], head[-2:]
        groups.append(pair)
    if head:
        groups.append(head)
    grouped = ",".join([*reversed(groups), tail]) if groups else tail
    return f"{sign}₹{grouped}.{rest:02d}"


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


def margin_exceeded(required_paise: int, available_paise: int) -> str:
    """Kotak's RMS refusal of an order the account has not the margin for (its simulator's and the paper account's)."""
    return (f"RMS:Margin Exceeds,Required:{to_rupees(required_paise)}, Available:{to_rupees(max(available_paise, 0))} "
            "for entity account across exchange across segment across product")
