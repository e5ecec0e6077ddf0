"""Risk and a contract with a price factor (one lot of CRUDEOIL quoted per barrel is 100 barrels): the order's value,
the factor stamped on every accepted order, the daily loss and the square-off chunks all count it."""

from __future__ import annotations

from services.risk.engine import RiskEngine
from shared.clock import ist_ns
from shared.contracts import market_pb2, risk_pb2, trading_pb2
from shared.price_factor import factor_of
from tests.risk.factories import DAY, RELIANCE, fill, instruments, limits, order

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
CRUDE = 451669
HUNDRED = market_pb2.PriceFactor(numerator=100)


def engine_with_crude(clock, **overrides) -> RiskEngine:
    book = instruments()
    book.add(market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26OCTFUT", exchange_segment="mcx_fo",
                                   tick_size_paise=100, lot_size=1, price_factor=HUNDRED))
    return RiskEngine(limits(**overrides), clock, book)


def crude_order(**fields) -> trading_pb2.OrderRequest:
    base = dict(token=CRUDE, exchange_segment="mcx_fo", symbol="CRUDEOIL26OCTFUT", quantity=1, price_paise=6000_00,
                product=trading_pb2.PRODUCT_NRML)
    return order(**{**base, **fields})


def crude_fill(side: int, quantity: int, price_paise: int, product: int = trading_pb2.PRODUCT_NRML):
    update = fill(side, quantity, price_paise, token=CRUDE, product=product)
    update.request.price_factor.CopyFrom(HUNDRED)  # as risk stamped it on the order
    return update


def test_an_accepted_order_carries_its_instruments_price_factor(clock):
    engine = engine_with_crude(clock, max_order_value_paise=10_00_000_00)

    decision = engine.decide(crude_order())

    assert decision.accepted and factor_of(decision.order.price_factor) == 100


def test_a_price_factor_the_client_sent_is_replaced_by_the_instrument_masters(clock):
    engine = engine_with_crude(clock, max_order_value_paise=10**12)
    engine.last_prices[RELIANCE] = 1290_00

    equity = engine.decide(order(price_factor=market_pb2.PriceFactor(numerator=1, denominator=1000)))
    crude = engine.decide(crude_order(price_factor=market_pb2.PriceFactor(numerator=1)))

    assert equity.accepted and not equity.order.HasField("price_factor")
    assert crude.accepted and factor_of(crude.order.price_factor) == 100


def test_an_order_whose_value_with_the_factor_is_within_max_order_value_is_accepted(clock):
    engine = engine_with_crude(clock, max_order_value_paise=6_00_000_00)

    assert engine.decide(crude_order()).accepted  # Rs 6,000 x 1 x 100 = Rs 6,00,000, at the limit


def test_the_denial_names_the_order_value_with_the_factor(clock):
    engine = engine_with_crude(clock, max_order_value_paise=5_00_000_00)

    decision = engine.decide(crude_order())

    assert decision.reason == "order value ₹6,00,000.00 exceeds max_order_value ₹5,00,000.00"


def test_the_daily_loss_of_a_contract_with_a_price_factor_counts_the_factor(clock):
    """Bought 1 lot at Rs 6,000, now Rs 5,990: Rs 10 a barrel on 100 barrels is a Rs 1,000 loss."""
    engine = engine_with_crude(clock, daily_loss_reducing_paise=500_00, daily_loss_halt_paise=5_000_00)
    engine.on_order_update(crude_fill(BUY, 1, 6000_00))

    engine.last_prices[CRUDE] = 5990_00
    engine.evaluate_loss()

    assert (engine.daily_pnl_paise(), engine.state) == (-1_000_00, risk_pb2.TRADING_STATE_REDUCING)


def test_restored_positions_keep_their_factor_for_the_loss_limit(clock):
    engine = engine_with_crude(clock, daily_loss_reducing_paise=500_00, daily_loss_halt_paise=5_000_00)

    engine.restore_positions([trading_pb2.Position(token=CRUDE, product=trading_pb2.PRODUCT_NRML, net_quantity=1,
                                                   average_price_paise=6000_00, last_price_paise=5990_00,
                                                   price_factor=HUNDRED)])

    assert engine.daily_pnl_paise() == -1_000_00


def test_square_off_chunks_keep_each_orders_value_with_the_factor_within_max_order_value(clock):
    """3 lots at Rs 6,000 with factor 100 are Rs 6,00,000 a lot: under a Rs 13,00,000 cap, 2 lots an order."""
    engine = engine_with_crude(clock, max_order_value_paise=13_00_000_00)
    engine.on_order_update(crude_fill(BUY, 3, 6000_00, product=trading_pb2.PRODUCT_MIS))
    clock.set(ist_ns(DAY, 23, 0))

    assert [o.quantity for o in engine.square_off_due()] == [2, 1]


def test_the_value_of_an_order_with_a_fractional_factor_is_exact(clock):
    book = instruments()
    book.add(market_pb2.Instrument(token=CRUDE, symbol="X", exchange_segment="mcx_fo", tick_size_paise=1, lot_size=3,
                                   price_factor=market_pb2.PriceFactor(numerator=1, denominator=3)))
    engine = RiskEngine(limits(max_order_value_paise=100), clock, book)

    # 3 x 100 paise x 1/3 = 100 paise: at the limit, not over it by a rounding.
    assert engine.decide(crude_order(quantity=3, price_paise=100, symbol="X")).accepted
