"""Indicator values against hand-checked series: Wilder RSI (his 14-period worked example), EMA, SMA."""

import pytest

from services.strategy.indicators import EMA, RSI, SMA

# The 14-period Wilder RSI worked example as published by StockCharts ("RSI" chart school article,
# cs-rsi.xls): closes shown to two decimals, and the published RSI from the 15th close on. The
# publisher computed from closes with four decimals, so two-decimal closes agree within 0.1.
WILDER_CLOSES = [44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03, 45.61,
                 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45, 45.78, 45.35,
                 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13]
WILDER_RSI = [70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38, 54.71, 50.42, 39.99,
              41.46, 41.87, 45.46, 37.30, 33.08, 37.77]


def test_rsi_first_values_of_wilders_example_match_the_hand_computation():
    # First 14 changes: gains 0.06+0.72+0.50+0.27+0.32+0.42+0.24+0.14+0.67 = 3.34, losses
    # 0.25+0.54+0.19+0.42 = 1.40 -> avg 0.238571 / 0.1 -> RS 2.38571 -> RSI 70.46.
    # Next change -0.28: gain 0.238571*13/14 = 0.221531, loss (0.1*13 + 0.28)/14 = 0.112857
    # -> RS 1.96294 -> RSI 66.25.
    rsi = RSI(14)
    values = [rsi.update(x) for x in WILDER_CLOSES[:16]]
    assert values[:14] == [None] * 14
    assert [round(v, 2) for v in values[14:]] == [70.46, 66.25]


def test_rsi_follows_wilders_published_fourteen_period_example():
    rsi = RSI(14)
    values = [rsi.update(x) for x in WILDER_CLOSES][14:]
    assert values == [pytest.approx(expected, abs=0.1) for expected in WILDER_RSI]


def test_rsi_of_a_small_series_matches_the_hand_computation():
    # Period 3. Changes: +2, -1, +2 -> seed avg gain 4/3, avg loss 1/3 -> RS 4 -> RSI 80.
    # Next change -3: gain (4/3*2 + 0)/3 = 8/9, loss (1/3*2 + 3)/3 = 11/9 -> RS 8/11
    # -> RSI 100 - 100/(19/11) = 42.105...
    rsi = RSI(3)
    values = [rsi.update(x) for x in [10, 12, 11, 13, 10]]
    assert values[:3] == [None, None, None]
    assert values[3] == pytest.approx(80.0)
    assert values[4] == pytest.approx(100 - 100 / (19 / 11))


def test_rsi_is_100_without_losses_and_50_without_movement():
    rising, flat = RSI(2), RSI(2)
    assert [rising.update(x) for x in [1, 2, 3]][-1] == 100.0
    assert [flat.update(x) for x in [5, 5, 5]][-1] == 50.0


def test_ema_is_seeded_with_the_sma_then_smoothed_with_two_over_n_plus_one():
    # Period 3, alpha 0.5: seed (2+4+6)/3 = 4; then 4 + 0.5*(10-4) = 7; then 7 + 0.5*(3-7) = 5.
    ema = EMA(3)
    assert [ema.update(x) for x in [2, 4, 6, 10, 3]] == [None, None, 4.0, 7.0, 5.0]


def test_sma_is_the_mean_of_the_last_period_values():
    sma = SMA(3)
    assert [sma.update(x) for x in [1, 2, 3, 4, 10]] == [None, None, 2.0, 3.0, pytest.approx(17 / 3)]


def test_a_period_below_one_is_refused():
    with pytest.raises(ValueError, match="period must be >= 1"):
        RSI(0)
