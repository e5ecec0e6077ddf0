"""A price a person typed (shared.money.exact_paise): taken as given or refused, never rounded."""

import pytest

from shared.money import exact_paise


@pytest.mark.parametrize(("typed", "paise"), [("812.50", 81_250), ("812.5", 81_250), (" 812 ", 81_200),
                                              ("0.05", 5), ("1e3", 100_000)])
def test_a_price_with_at_most_two_decimals_is_taken_as_given(typed, paise):
    assert exact_paise(typed) == paise


@pytest.mark.parametrize("typed", ["812.555", "0", "-5", "0.001", "nan", "inf", "", "1,290.05", "₹812", "1e400"])
def test_anything_else_is_refused_saying_what_is_expected(typed):
    with pytest.raises(ValueError, match=r"expected rupees above 0 with at most two decimals|out of range"):
        exact_paise(typed)
