"""The /limits confirmation shows money in rupees, as /limits does: the screen meant to catch a slipped digit or a
paise/rupee mix-up (100x) shows a number a trader reads at a glance."""

from __future__ import annotations

from tests.notifier.test_commands import ask


async def test_the_limits_prompt_shows_money_limits_in_rupees(notifier, fake_api, standins):
    prompt = await ask(fake_api, "/limits max_order_value_paise=100000000 max_gross_exposure_paise=0 "
                                 "max_order_quantity=200")

    assert prompt == ("Change these risk limits?\nmax_order_value_paise: ₹0.00 → ₹10,00,000.00\n"
                      "max_gross_exposure_paise: ₹5,00,000.00 → no limit\nmax_order_quantity: 500 → 200")
