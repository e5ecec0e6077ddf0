"""Brokerage by segment, as a broker's plan sets it: [oms] brokerage = {segment = {mode, flat_paise, rate}}.

Worked by hand against Kotak Neo's Trade Free plan as published (intraday free, delivery "0.25% or Rs 20 whichever
is higher", F&O Rs 20 per executed order) and Trade Free Pro (delivery 0.1%).
"""

from decimal import Decimal

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.virtual_broker import VirtualBroker
from shared import config as cfg
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from shared.errors import ConfigError
from tests.oms.helpers import T0, candle, order

TRADE_FREE = {"equity_intraday": {"mode": "flat", "flat_paise": 0},
              "equity_delivery": {"mode": "higher", "flat_paise": 2000, "rate": "0.0025"},
              "futures": {"mode": "flat", "flat_paise": 2000},
              "options": {"mode": "flat", "flat_paise": 2000}}
KOTAK = ChargeModel.from_settings(cfg.load(OmsSettings, {"oms": {"brokerage": TRADE_FREE}}))


def request(product=t.PRODUCT_CNC, segment="nse_cm", symbol="INFY-EQ", side=t.SIDE_BUY):
    return t.OrderRequest(exchange_segment=segment, symbol=symbol, side=side, product=product)


def model(segment, **plan):
    return ChargeModel.from_settings(OmsSettings(brokerage={segment: plan}))


def test_higher_mode_charges_the_rate_when_it_is_above_the_minimum():
    # Delivery buy of 1,000 x Rs 100 = Rs 1,00,000: 0.25% = Rs 250, above the Rs 20 minimum.
    assert KOTAK.for_fill(request(), 1000, 100_00).brokerage == 250_00


def test_higher_mode_charges_the_minimum_on_a_small_order():
    # 10 x Rs 100 = Rs 1,000: 0.25% = Rs 2.50, under the Rs 20 minimum.
    assert KOTAK.for_fill(request(), 10, 100_00).brokerage == 20_00


def test_flat_zero_makes_a_segment_free_and_its_gst_is_on_the_exchange_charges_alone():
    # Intraday buy of Rs 1,00,000: exchange 0.00307% = 307, SEBI 10; GST 18% of 317 = 57.06 -> 57.
    charges = KOTAK.for_fill(request(t.PRODUCT_MIS), 1000, 100_00)

    assert (charges.brokerage, charges.gst) == (0, 57)


def test_flat_mode_charges_the_flat_fee_whatever_the_premium():
    # 75 NIFTY CE at Rs 100: Rs 7,500 of premium, Rs 20 flat (the default "lower" rule would book 0.03% = Rs 2.25).
    option = request(t.PRODUCT_NRML, "nse_fo", "NIFTY26APR24000CE")

    assert KOTAK.for_fill(option, 75, 100_00).brokerage == 20_00


def test_flat_mode_charges_a_later_fill_of_the_same_order_nothing():
    option = request(t.PRODUCT_NRML, "nse_fo", "NIFTY26APR24000CE")

    assert KOTAK.for_fill(option, 75, 100_00, brokerage_so_far_paise=20_00).brokerage == 0


def test_rate_mode_charges_the_rate_without_a_cap():
    # Trade Free Pro delivery: 0.1% of Rs 10,00,000 = Rs 1,000, where "lower" would stop at its flat fee.
    pro = model("equity_delivery", mode="rate", rate=Decimal("0.001"))

    assert pro.for_fill(request(), 1000, 1000_00).brokerage == 1000_00


def test_a_segment_the_table_does_not_name_keeps_the_lower_of_flat_and_rate():
    # Intraday sell of 100 x Rs 1,290: 0.03% = Rs 38.70, capped at the flat Rs 20, as before the table existed.
    charges = model("equity_delivery", mode="rate", rate=Decimal("0.001")).for_fill(
        request(t.PRODUCT_MIS, side=t.SIDE_SELL), 100, 1290_00)

    assert charges.brokerage == 20_00


def test_higher_mode_makes_a_later_fill_pay_what_the_order_owes_above_what_it_paid():
    # 10 filled at Rs 100 paid the Rs 20 minimum; 990 more make Rs 1,00,000: 0.25% = Rs 250, so Rs 230 more.
    rest = KOTAK.for_fill(request(), 990, 100_00, brokerage_so_far_paise=20_00, value_so_far_paise=10 * 100_00)

    assert rest.brokerage == 230_00


def test_higher_mode_without_the_earlier_value_charges_a_later_fill_at_least_its_rate():
    # Unknown earlier turnover: they are taken to have paid the minimum exactly; 990 x Rs 100 at 0.25% = Rs 247.50.
    rest = KOTAK.for_fill(request(), 990, 100_00, brokerage_so_far_paise=20_00)

    assert rest.brokerage == 247_50


@pytest.mark.parametrize("plan", [{"mode": "lower", "flat_paise": 2000, "rate": "0.0025"},
                                  {"mode": "higher", "flat_paise": 2000, "rate": "0.0025"},
                                  {"mode": "flat", "flat_paise": 2000}, {"mode": "rate", "rate": "0.0025"}],
                         ids=lambda plan: plan["mode"])
def test_the_brokerage_rebuilt_after_a_restart_is_what_the_fills_paid(plan):
    # Three fills of one delivery order (Rs 300, Rs 5,000, Rs 1,00,000); after a restart only its cumulative fill
    # is known: 1,053 at an average of Rs 100.
    plan_model = model("equity_delivery", **plan)
    paid = value = 0
    for quantity in (3, 50, 1000):
        paid += plan_model.for_fill(request(), quantity, 100_00, paid, value).brokerage
        value += quantity * 100_00

    assert plan_model.brokerage_paid(request(), 1053, 100_00) == paid


async def test_a_paper_delivery_fill_books_the_plans_brokerage():
    vb = VirtualBroker(None, KOTAK, ManualClock(T0 + 1))
    req = order(price=1000_00, quantity=100)
    req.product = t.PRODUCT_CNC
    ack = await vb.place_order(req)

    await vb.on_candle(candle(open_=1001_00, high=1002_00, low=999_00, close=1000_00))

    assert vb.book[ack.exchange_order_id].brokerage_paise == 250_00  # 0.25% of Rs 1,00,000


@pytest.mark.parametrize(("plan", "message"), [
    ({"equity_delvery": {"mode": "flat", "flat_paise": 0}},
     r"\[oms\]\.brokerage .*unknown segment 'equity_delvery'; the segments are equity_intraday, equity_delivery"),
    ({"equity_delivery": {"mode": "higher", "flat_paise": 2000}},
     r'\[oms\]\.brokerage\.equity_delivery .*mode "higher" charges by flat_paise and rate: set rate'),
    ({"options": {"mode": "flat", "flat_paise": 2000, "rate": "0.0003"}},
     r'\[oms\]\.brokerage\.options .*rate is not used by mode "flat"'),
    ({"options": {"mode": "fixed", "flat_paise": 2000}},
     r"\[oms\]\.brokerage\.options\.mode .*'lower', 'higher', 'flat' or 'rate'"),
    ({"options": {"mode": "flat", "flat_paise": True}},
     r"\[oms\]\.brokerage\.options\.flat_paise .*must be a number, not true/false"),
], ids=["unknown segment", "missing field", "unused field", "unknown mode", "boolean"])
def test_a_bad_brokerage_table_is_refused_at_load_naming_the_field(plan, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load(OmsSettings, {"oms": {"brokerage": plan}})


def test_a_brokerage_rate_typed_as_a_percent_is_refused_at_load_saying_it_is_a_fraction():
    """0.25% typed as 0.25 would book Rs 25,000 brokerage on a Rs 1 lakh delivery buy."""
    with pytest.raises(ConfigError, match=r"brokerage\.equity_delivery\.rate must be a fraction of turnover .* "
                                          r"0\.025% is 0\.00025"):
        cfg.load(OmsSettings, {"oms": {"brokerage": {"equity_delivery": {"mode": "higher", "flat_paise": 2000,
                                                                         "rate": "0.25"}}}})


def test_the_brokerage_table_is_read_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("NEOPULSE_OMS_BROKERAGE", '{"options": {"mode": "flat", "flat_paise": 2000}}')
    charges = ChargeModel.from_settings(cfg.load(OmsSettings, {}))

    assert charges.for_fill(request(t.PRODUCT_NRML, "nse_fo", "NIFTY26APR24000CE"), 75, 100_00).brokerage == 20_00
