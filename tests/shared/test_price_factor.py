"""The price factor in money arithmetic and the position book: price x quantity x factor, exact, rounded once."""

from __future__ import annotations

from fractions import Fraction

import pytest

from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as T
from shared.positions import PositionBook
from shared.price_factor import factor_of, price_factor, value_paise

CRUDE = 451669


def fill(side: int, quantity: int, price_paise: int, factor: market_pb2.PriceFactor | None = None,
         token: int = CRUDE) -> T.OrderUpdate:
    req = T.OrderRequest(token=token, side=side, quantity=quantity, product=T.PRODUCT_NRML, price_factor=factor)
    return T.OrderUpdate(request=req, last_fill_quantity=quantity, last_fill_price_paise=price_paise)


@pytest.mark.parametrize(("message", "factor"), [
    (market_pb2.PriceFactor(), Fraction(1)), (market_pb2.PriceFactor(numerator=100), Fraction(100)),
    (market_pb2.PriceFactor(numerator=3, denominator=2), Fraction(3, 2)),
    (market_pb2.PriceFactor(numerator=-1, denominator=0), Fraction(1))])
def test_an_unset_or_non_positive_term_of_a_price_factor_counts_as_one(message, factor):
    assert factor_of(message) == factor


def test_a_factor_of_one_is_left_unset_and_others_round_trip_exactly():
    assert price_factor(Fraction(1)) is None
    assert factor_of(price_factor(Fraction(200, 3))) == Fraction(200, 3)


def test_one_lot_of_crude_at_6000_rupees_with_factor_100_is_worth_6_lakh():
    assert value_paise(6000_00, 1, Fraction(100)) == 6_00_000_00


def test_a_fractional_factor_rounds_the_value_once_half_to_even():
    # 3 x Rs 1.05 x 1/2 = 157.5 paise -> 158 (even); 1 x 5 paise x 1/2 = 2.5 -> 2 (even).
    assert (value_paise(1_05, 3, Fraction(1, 2)), value_paise(5, 1, Fraction(1, 2))) == (158, 2)


def test_a_short_covered_with_a_price_factor_realises_the_price_move_times_the_factor():
    book = PositionBook()
    factor = market_pb2.PriceFactor(numerator=10)

    book.apply_update(fill(T.SIDE_SELL, 3, 5000_00, factor))
    book.apply_update(fill(T.SIDE_BUY, 3, 4990_00, factor))

    assert book.realised_pnl_paise() == 3 * 10_00 * 10


def test_fills_of_a_fractional_factor_add_up_to_the_exact_pnl_not_the_sum_of_rounded_pieces():
    """Factor 1/3: three round trips each gain 1 paisa of price, a third of a paisa each: 1 paisa in all."""
    book = PositionBook()
    third = market_pb2.PriceFactor(numerator=1, denominator=3)

    for _ in range(3):
        book.apply_update(fill(T.SIDE_BUY, 1, 100_00, third))
        book.apply_update(fill(T.SIDE_SELL, 1, 100_01, third))

    assert book.realised_pnl_paise() == 1


def test_a_restored_position_keeps_its_factor_for_later_marks_and_its_average_stays_a_price():
    book = PositionBook()
    snapshot = T.Position(token=CRUDE, product=T.PRODUCT_NRML, net_quantity=2, average_price_paise=6000_00,
                          last_price_paise=6000_00, price_factor=market_pb2.PriceFactor(numerator=100))

    book.restore(snapshot)
    book.mark(CRUDE, 6005_00)

    (position,) = book.to_protos()
    assert (position.average_price_paise, position.unrealised_pnl_paise) == (6000_00, 2 * 5_00 * 100)
    assert factor_of(position.price_factor) == 100


def test_a_position_held_into_a_new_day_is_valued_by_its_factor_from_the_carried_price():
    book = PositionBook()
    book.apply_update(fill(T.SIDE_BUY, 1, 6000_00, market_pb2.PriceFactor(numerator=100)))
    book.mark(CRUDE, 6010_00)

    book.start_day()
    book.mark(CRUDE, 6003_00)

    assert book.unrealised_pnl_paise() == -7_00 * 100


def test_a_position_of_factor_one_has_no_factor_in_its_snapshot():
    book = PositionBook()
    book.apply_update(fill(T.SIDE_BUY, 1, 100_00))

    (position,) = book.to_protos()
    assert not position.HasField("price_factor")
