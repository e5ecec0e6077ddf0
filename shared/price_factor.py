"""A contract's price factor: money = price x quantity x factor, exact (a Fraction), rounded to paise once.

The factor travels as market_pb2.PriceFactor on Instrument, OrderRequest and Position; used by risk, positions,
charges and the Kotak mapping.
"""

from __future__ import annotations

from fractions import Fraction

from shared.contracts import market_pb2

ONE = Fraction(1)
_INT64_MAX = 2**63 - 1


def factor_of(message: market_pb2.PriceFactor) -> Fraction:
    """The factor a PriceFactor carries; a numerator or denominator that is not positive (unset) counts as 1."""
    numerator = message.numerator if message.numerator > 0 else 1
    denominator = message.denominator if message.denominator > 0 else 1
    if numerator == denominator:  # shares (the field unset): no Fraction built on the order path
        return ONE
    return Fraction(numerator, denominator)


def representable(factor: Fraction) -> bool:
    """Whether a PriceFactor can carry the factor: positive, numerator and denominator within int64."""
    return 0 < factor and factor.numerator <= _INT64_MAX and factor.denominator <= _INT64_MAX


def price_factor(factor: Fraction) -> market_pb2.PriceFactor | None:
    """A positive factor as a PriceFactor; None for 1 (the field is left unset). ValueError for a factor that is
    not representable."""
    if not representable(factor):
        raise ValueError(f"price factor {factor} must be positive with numerator and denominator within int64")
    if factor == ONE:
        return None
    return market_pb2.PriceFactor(numerator=factor.numerator, denominator=factor.denominator)


def value_paise(price_paise: int, quantity: int, factor: Fraction = ONE) -> int:
    """price x quantity x factor to the nearest paisa (half to even), the one rounding: 1 lot of a contract
    quoted Rs 6,000.00 with factor 100 is 6_000_00 x 1 x 100 = 6_00_000_00 paise (Rs 6,00,000)."""
    if factor is ONE:  # exact already, and an int multiply costs a fraction of a Fraction one (order path)
        return price_paise * quantity
    return round(price_paise * quantity * factor)
