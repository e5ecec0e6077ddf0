"""An entry is never sized past the instrument's freeze quantity: risk would refuse it (FREEZE_QUANTITY) and nothing
splits an entry, so the setup's trade would be lost every time it fired."""

import logging
from decimal import Decimal

from services.risk.engine import RiskEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from services.strategy.plugins import StrategyContext
from shared.clock import ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from tests.risk.factories import DAY, limits

OPT = 40001
# An index option: lot 65, freeze 1801 (NSE's), so one order takes at most 27 lots, 1755 units.
OPTION = market_pb2.Instrument(token=OPT, symbol="NIFTY2612724000CE", exchange_segment="nse_fo",
                               tick_size_paise=5, lot_size=65, freeze_quantity=1801)
CAP = 1755
LOGGED = "an entry capped: more than the freeze quantity, all the exchange takes in one order"


def make() -> MomentumRsi:
    return MomentumRsi("mom", MomentumRsiParams(rsi_period=3, ema_period=3))


def test_a_risk_sized_option_entry_is_cut_to_the_whole_lots_within_the_freeze_quantity_and_risk_accepts_it():
    ctx = StrategyContext(InstrumentBook([OPTION]))
    engine = RiskEngine(limits(max_order_quantity=100_000, max_position_quantity=100_000),
                        ManualClock(ist_ns(DAY, 10, 0)), InstrumentBook([OPTION]))
    engine.last_prices[OPT] = 12_00

    # Rs 12.00 premium, stop Rs 11.00: Rs 10,000 of risk_per_trade asks for 153 lots (9945 units).
    quantity = make().entry_quantity(OPT, ctx, 12_00, 1, Decimal(200_000), Decimal(10_000), 11_00)
    decision = engine.decide(trading_pb2.OrderRequest(
        client_order_id="entry", token=OPT, side=trading_pb2.SIDE_BUY, quantity=quantity,
        order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=12_00, product=trading_pb2.PRODUCT_MIS,
        validity=trading_pb2.VALIDITY_DAY, strategy_tag="mom"))

    assert (quantity, decision.reason_code) == (CAP, "")


def test_a_fixed_quantity_past_the_freeze_quantity_is_cut_to_it_too():
    ctx = StrategyContext(InstrumentBook([OPTION]))

    assert make().entry_quantity(OPT, ctx, 12_00, 2000, Decimal(0)) == CAP


def test_the_cut_is_logged_once_per_token_with_what_was_asked_and_what_was_sent(caplog):
    caplog.set_level(logging.INFO, logger="services.strategy.plugins")
    strategy, ctx = make(), StrategyContext(InstrumentBook([OPTION]))

    for _ in range(2):
        strategy.entry_quantity(OPT, ctx, 12_00, 1, Decimal(0), Decimal(10_000), 11_00)

    said = [r for r in caplog.records if r.getMessage() == LOGGED]
    assert [(r.strategy, r.token, r.sized, r.freeze_quantity, r.capped_to) for r in said] == [
        ("mom", OPT, 9945, 1801, CAP)]
