"""Charges worked by hand at the default rates: NSE and BSE cash and F&O, MCX commodities, NSE currency.

Defaults are the rates in force in 2026: STT on F&O from 1 April 2026 (Finance Act 2026), NSE charges with the
IPFT folded in from 1 March 2026 (NSE/FA/73061), BSE, MCX and currency charges from 1 October 2024.
"""

from decimal import Decimal

import pytest

from services.oms.charges import ChargeModel, Charges, Segment, segment_of
from services.oms.config import OmsSettings
from shared import config as cfg
from shared.contracts import trading_pb2 as t
from shared.errors import ConfigError

MODEL = ChargeModel.default()


def order(side, product=t.PRODUCT_MIS, segment="nse_cm", symbol="RELIANCE-EQ"):
    return t.OrderRequest(exchange_segment=segment, symbol=symbol, side=side, product=product)


def test_intraday_sell_worked_example():
    # Sell 100 RELIANCE-EQ at Rs 1,290.00, intraday. Turnover = 100 x 1,29,000 paise = 1,29,00,000 paise.
    # brokerage: 0.03% = 3,870 paise, capped by the flat Rs 20          -> 2,000
    # STT: intraday sell 0.025% = 3,225 paise                           -> 3,225
    # exchange: NSE 0.00307% (Rs 307 per crore, IPFT included) = 396.03 ->   396
    # SEBI: Rs 10 per crore = 0.0001% = 12.9 paise                      ->    13
    # stamp: buy side only                                              ->     0
    # GST: 18% of (2,000 + 396 + 13) = 433.62 paise                     ->   434
    # total                                                             -> 6,068 paise (Rs 60.68)
    charges = MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000)

    assert charges == Charges(brokerage=2000, stt=3225, exchange=396, sebi=13, stamp=0, gst=434)
    assert charges.total == 6068


def test_intraday_buy_pays_stamp_duty_and_no_stt():
    # Buy 10 at Rs 250.00: turnover 2,50,000 paise. brokerage 0.03% = 75 (below Rs 20); STT 0;
    # exchange 7.675 -> 8; SEBI 0.25 -> 0; stamp 0.003% = 7.5 -> 8; GST 18% of (75 + 8 + 0) = 14.94 -> 15.
    charges = MODEL.for_fill(order(t.SIDE_BUY), 10, 25_000)

    assert charges == Charges(brokerage=75, stt=0, exchange=8, sebi=0, stamp=8, gst=15)


def test_delivery_buy_pays_stt_and_delivery_stamp():
    # Buy 10 at Rs 1,000.00 delivery: turnover 10,00,000 paise. brokerage min(2,000, 300) = 300;
    # STT 0.1% = 1,000; exchange 30.7 -> 31; SEBI 1; stamp 0.015% = 150; GST 18% of 332 = 59.76 -> 60.
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_CNC), 10, 100_000)

    assert charges == Charges(brokerage=300, stt=1000, exchange=31, sebi=1, stamp=150, gst=60)


def test_option_sell_pays_stt_on_premium():
    # Sell 75 NIFTY CE at a premium of Rs 100.00: turnover 7,50,000 paise. brokerage min(2,000, 225) = 225;
    # STT 0.15% (from 1 April 2026) = 1,125; exchange 0.03553% = 266.475 -> 266; SEBI 0.75 -> 1;
    # GST 18% of (225 + 266 + 1) = 88.56 -> 89.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "nse_fo", "NIFTY25JAN24000CE"), 75, 10_000)

    assert charges == Charges(brokerage=225, stt=1125, exchange=266, sebi=1, stamp=0, gst=89)


def test_futures_buy_pays_no_stt():
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "NIFTY25JANFUT"), 75, 2_400_000)

    assert charges.stt == 0
    assert charges.stamp == 3600  # 0.002% of 18,00,00,000 paise


def test_futures_sell_pays_stt_at_the_april_2026_rate():
    # Sell 75 NIFTY FUT at Rs 24,000.00: turnover 18,00,00,000 paise. STT 0.05% = 90,000;
    # exchange NSE 0.00183% (Rs 183 per crore, IPFT included) = 3,294.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "nse_fo", "NIFTY25JANFUT"), 75, 2_400_000)

    assert (charges.stt, charges.exchange) == (90_000, 3294)


def test_bse_cash_pays_the_bse_exchange_charge():
    # Sell 100 RELIANCE on BSE at Rs 1,290.00: turnover 1,29,00,000 paise. exchange 0.00375% = 483.75 -> 484;
    # GST 18% of (2,000 + 484 + 13) = 449.46 -> 449. STT and SEBI as on NSE.
    charges = MODEL.for_fill(order(t.SIDE_SELL, segment="bse_cm", symbol="RELIANCE"), 100, 129_000)

    assert charges == Charges(brokerage=2000, stt=3225, exchange=484, sebi=13, stamp=0, gst=449)


def test_bse_futures_pay_no_exchange_charge_and_bse_options_pay_bse_rate():
    future = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "bse_fo", "SENSEX25JANFUT"), 20, 8_000_000)
    # Sell 20 SENSEX CE at Rs 200.00: premium turnover 4,00,000 paise; BSE 0.0325% = 130.
    option = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "bse_fo", "SENSEX25JAN80000CE"), 20, 20_000)

    assert future.exchange == 0
    assert future.stt == 80_000  # 0.05% of 16,00,00,000 paise: STT does not depend on the exchange
    assert option.exchange == 130


def test_mcx_futures_sell_pays_ctt_and_mcx_charges():
    # Sell 100 CRUDEOIL at Rs 5,000.00: turnover 5,00,00,000 paise. brokerage Rs 20 (0.03% = 15,000 is higher);
    # CTT 0.01% = 5,000 (not the 0.05% equity futures STT); MCX 0.0021% = 1,050; SEBI 50; no stamp on a sell;
    # GST 18% of (2,000 + 1,050 + 50) = 558.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DECFUT"), 100, 500_000)

    assert charges == Charges(brokerage=2000, stt=5000, exchange=1050, sebi=50, stamp=0, gst=558)


def test_the_turnover_of_a_contract_with_a_price_factor_is_price_times_quantity_times_the_factor():
    # Sell 1 lot of CRUDEOIL quoted Rs 5,000.00 a barrel, factor 100 (100 barrels a lot): the same turnover,
    # 5,00,00,000 paise, and so the same charges as selling 100 at a factor of 1 above.
    crude = order(t.SIDE_SELL, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DECFUT")
    crude.price_factor.numerator = 100

    charges = MODEL.for_fill(crude, 1, 500_000)

    assert charges == Charges(brokerage=2000, stt=5000, exchange=1050, sebi=50, stamp=0, gst=558)


def test_a_fractional_price_factor_scales_the_turnover_exactly():
    # Sell 3 at Rs 1,000.00 with factor 1/3: turnover exactly 1,00,000 paise (not 99,999.99..).
    # brokerage 0.03% = 30; CTT 0.01% = 10; MCX 0.0021% = 2.1 -> 2; SEBI 0.1 -> 0; GST 18% of 32 = 5.76 -> 6.
    third = order(t.SIDE_SELL, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DECFUT")
    third.price_factor.numerator, third.price_factor.denominator = 1, 3

    charges = MODEL.for_fill(third, 3, 100_000)

    assert charges == Charges(brokerage=30, stt=10, exchange=2, sebi=0, stamp=0, gst=6)


def test_mcx_futures_buy_pays_commodity_stamp_duty_and_no_ctt():
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DECFUT"), 100, 500_000)

    assert charges.stt == 0
    assert charges.stamp == 1000  # 0.002% of 5,00,00,000 paise


def test_mcx_options_sell_pays_ctt_on_premium_and_mcx_option_charges():
    # Sell 100 CRUDEOIL CE at a premium of Rs 150.00: turnover 15,00,000 paise. brokerage min(2,000, 450) = 450;
    # CTT 0.05% = 750; MCX 0.0418% = 627; SEBI 1.5 -> 2; GST 18% of (450 + 627 + 2) = 194.22 -> 194.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DEC5000CE"), 100, 15_000)

    assert charges == Charges(brokerage=450, stt=750, exchange=627, sebi=2, stamp=0, gst=194)


def test_mcx_options_buy_pays_option_stamp_duty():
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DEC5000CE"), 100, 15_000)

    assert (charges.stt, charges.stamp) == (0, 45)  # 0.003% of 15,00,000 paise


def test_currency_futures_pay_no_stt_and_currency_charges():
    # Buy 10,000 USDINR at Rs 84.50: turnover 8,45,00,000 paise. brokerage Rs 20; no STT on currency;
    # NSE 0.00035% = 295.75 -> 296; SEBI 84.5 -> 85; stamp 0.0001% = 84.5 -> 85;
    # GST 18% of (2,000 + 296 + 85) = 428.58 -> 429.
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_NRML, "cde_fo", "USDINR25DECFUT"), 10_000, 8450)

    assert charges == Charges(brokerage=2000, stt=0, exchange=296, sebi=85, stamp=85, gst=429)


def test_currency_options_sell_pays_no_stt_and_the_currency_option_charge():
    # Sell 10,000 USDINR CE at a premium of Rs 0.50: turnover 5,00,000 paise. NSE 0.0311% = 155.5 -> 156.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "cde_fo", "USDINR25DEC85CE"), 10_000, 50)

    assert (charges.stt, charges.exchange) == (0, 156)


def test_flat_brokerage_is_charged_once_per_order_across_fills():
    charges = MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000, brokerage_so_far_paise=1500)

    assert charges.brokerage == 500


def test_segment_is_read_from_exchange_segment_symbol_and_product():
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_CNC)) is Segment.EQUITY_DELIVERY
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "BANKNIFTY25JAN50000PE")) is Segment.OPTIONS
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "BANKNIFTY25JANFUT")) is Segment.FUTURES


def test_commodity_and_currency_segments_are_not_equity_derivatives():
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "mcx_fo", "GOLD25DECFUT")) is Segment.COMMODITY_FUTURES
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_MIS, "mcx_fo", "GOLD25DEC130000PE")) is Segment.COMMODITY_OPTIONS
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "cde_fo", "USDINR25DECFUT")) is Segment.CURRENCY_FUTURES
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_MIS, "cde_fo", "USDINR25DEC85CE")) is Segment.CURRENCY_OPTIONS
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "bcs_fo", "USDINR25DECFUT")) is Segment.CURRENCY_FUTURES


def test_rates_come_from_settings():
    model = ChargeModel.from_settings(OmsSettings(brokerage_flat_paise=0, gst=Decimal("0")))

    assert MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000).brokerage == 2000
    assert model.for_fill(order(t.SIDE_SELL), 100, 129_000).brokerage == 0


def test_new_segment_rates_come_from_settings():
    model = ChargeModel.from_settings(OmsSettings(ctt_commodity_futures_sell=Decimal("0"),
                                                  exchange_bse_equity=Decimal("0")))

    assert model.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "mcx_fo", "CRUDEOIL25DECFUT"), 100, 500_000).stt == 0
    assert model.for_fill(order(t.SIDE_SELL, segment="bse_cm", symbol="RELIANCE"), 100, 129_000).exchange == 0


@pytest.mark.parametrize(("field", "value"), [("stt_equity_intraday_sell", "0.025"), ("exchange_options", "0.03553"),
                                              ("stamp_equity_delivery_buy", "0.015"), ("brokerage_rate", "0.03")])
def test_a_rate_typed_as_a_percent_is_refused_at_load_saying_it_is_a_fraction(field, value):
    """STT "0.025%" typed as 0.025 booked Rs 12,500 on a Rs 5 lakh sell instead of Rs 125: the loss limits tripped."""
    with pytest.raises(ConfigError, match=rf"{field} must be a fraction of turnover .* 0.025% is 0.00025"):
        cfg.load(OmsSettings, {"oms": {field: value}})
