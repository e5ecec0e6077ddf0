"""max_reprices moves a resting LIMIT entry after the market; with order_value its quantity is cut to what the budget
buys at the new price (a ceiling the order that fills keeps too), and it is not moved when that is no more than has
filled."""

from decimal import Decimal

from services.strategy.engine import StrategyEngine
from shared.clock import NS, ManualClock
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.strategy.test_momentum_rsi import FALLING_THEN_JUMP, SBIN, T0915, make


class Budgeted:
    """MOMENTUM_RSI (RSI 3, EMA 3, LIMIT at the close, order_value Rs 10,000, max_reprices 3) in an engine: its
    BUY LIMIT of 100 at 100.00 rests, `filled` of it filled."""

    def __init__(self, filled: int = 0) -> None:
        self.strategy = make(order_value=Decimal(10_000), max_reprices=3, limit_slippage_pct=0)
        self.engine = StrategyEngine([self.strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])),
                                     ManualClock(T0915))
        self.minute = 0
        (entry,) = [self.candle(close) for close in FALLING_THEN_JUMP][-1]
        assert (entry.quantity, entry.limit_price_paise) == (100, 100_00)
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id="c-1", status=trading_pb2.ORDER_STATUS_OPEN, filled_quantity=filled,
            last_fill_quantity=filled, last_fill_price_paise=100_00, request=trading_pb2.OrderRequest(
                client_order_id="c-1", token=SBIN, side=trading_pb2.SIDE_BUY, quantity=100,
                order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=100_00, strategy_tag="mom",
                product=trading_pb2.PRODUCT_MIS)))

    def candle(self, close: int) -> list[trading_pb2.Signal]:
        start = T0915 + self.minute * 60 * NS
        self.minute += 1
        candle = market_pb2.Candle(token=SBIN, start_ns=start, open_paise=close, high_paise=close, low_paise=close,
                                   close_paise=close)
        return self.engine.on_closed([(candle, 0)])[1]

    def changes(self) -> list[tuple[int, int]]:
        return [(c.request.quantity, c.request.price_paise) for c in self.engine.orders.take_changes()]


def test_a_repriced_entry_is_cut_to_what_order_value_buys_at_its_new_price():
    desk = Budgeted()
    desk.candle(102_00)

    assert desk.changes() == [(98, 102_00)]  # 98 x 102.00 = Rs 9,996; 100 would be Rs 10,200


def test_an_entry_is_not_repriced_when_its_filled_part_already_takes_the_budget_at_the_new_price():
    desk = Budgeted(filled=99)
    desk.candle(102_00)

    assert desk.changes() == []
