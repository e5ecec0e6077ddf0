"""Charges worked by hand: intraday, delivery, futures and options fills at the default rates."""

from decimal import Decimal

from services.oms.charges import ChargeModel, Charges, Segment, segment_of
from services.oms.config import OmsSettings
from shared.contracts import trading_pb2 as t

MODEL = ChargeModel.default()


def order(side, product=t.PRODUCT_MIS, segment="nse_cm", symbol="RELIANCE-EQ"):
    return t.OrderRequest(exchange_segment=segment, symbol=symbol, side=side, product=product)


def test_intraday_sell_worked_example():
    # Sell 100 RELIANCE-EQ at Rs 1,290.00, intraday. Turnover = 100 x 1,29,000 paise = 1,29,00,000 paise.
    # brokerage: 0.03% = 3,870 paise, capped by the flat Rs 20          -> 2,000
    # STT: intraday sell 0.025% = 3,225 paise                           -> 3,225
    # exchange: 0.00297% = 383.13 paise                                 ->   383
    # SEBI: Rs 10 per crore = 0.0001% = 12.9 paise                      ->    13
    # stamp: buy side only                                              ->     0
    # GST: 18% of (2,000 + 383 + 13) = 431.28 paise                     ->   431
    # total                                                             -> 6,052 paise (Rs 60.52)
    charges = MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000)

    assert charges == Charges(brokerage=2000, stt=3225, exchange=383, sebi=13, stamp=0, gst=431)
    assert charges.total == 6052


def test_intraday_buy_pays_stamp_duty_and_no_stt():
    # Buy 10 at Rs 250.00: turnover 2,50,000 paise. brokerage 0.03% = 75 (below Rs 20); STT 0;
    # exchange 7.425 -> 7; SEBI 0.25 -> 0; stamp 0.003% = 7.5 -> 8; GST 18% of (75 + 7 + 0) = 14.76 -> 15.
    charges = MODEL.for_fill(order(t.SIDE_BUY), 10, 25_000)

    assert charges == Charges(brokerage=75, stt=0, exchange=7, sebi=0, stamp=8, gst=15)


def test_delivery_buy_pays_stt_and_delivery_stamp():
    # Buy 10 at Rs 1,000.00 delivery: turnover 10,00,000 paise. brokerage min(2,000, 300) = 300;
    # STT 0.1% = 1,000; exchange 29.7 -> 30; SEBI 1; stamp 0.015% = 150; GST 18% of 331 = 59.58 -> 60.
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_CNC), 10, 100_000)

    assert charges == Charges(brokerage=300, stt=1000, exchange=30, sebi=1, stamp=150, gst=60)


def test_option_sell_pays_stt_on_premium():
    # Sell 75 NIFTY CE at a premium of Rs 100.00: turnover 7,50,000 paise. brokerage min(2,000, 225) = 225;
    # STT 0.1% = 750; exchange 0.03503% = 262.725 -> 263; SEBI 0.75 -> 1; GST 18% of 489 = 88.02 -> 88.
    charges = MODEL.for_fill(order(t.SIDE_SELL, t.PRODUCT_NRML, "nse_fo", "NIFTY25JAN24000CE"), 75, 10_000)

    assert charges == Charges(brokerage=225, stt=750, exchange=263, sebi=1, stamp=0, gst=88)


def test_futures_buy_pays_no_stt():
    charges = MODEL.for_fill(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "NIFTY25JANFUT"), 75, 2_400_000)

    assert charges.stt == 0
    assert charges.stamp == 3600  # 0.002% of 18,00,00,000 paise


def test_flat_brokerage_is_charged_once_per_order_across_fills():
    charges = MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000, brokerage_so_far_paise=1500)

    assert charges.brokerage == 500


def test_segment_is_read_from_exchange_segment_symbol_and_product():
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_CNC)) is Segment.EQUITY_DELIVERY
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "BANKNIFTY25JAN50000PE")) is Segment.OPTIONS
    assert segment_of(order(t.SIDE_BUY, t.PRODUCT_NRML, "nse_fo", "BANKNIFTY25JANFUT")) is Segment.FUTURES


def test_rates_come_from_settings():
    model = ChargeModel.from_settings(OmsSettings(brokerage_flat_paise=0, gst=Decimal("0")))

    assert MODEL.for_fill(order(t.SIDE_SELL), 100, 129_000).brokerage == 2000
    assert model.for_fill(order(t.SIDE_SELL), 100, 129_000).brokerage == 0
