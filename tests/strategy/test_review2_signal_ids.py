"""After a restart the signal ids of the OMS's orders count as issued: a stop's exit decided again at a tick of the
same second as one sent before (SFeed stamps whole seconds, a quote repeats the last trade's time) gets a new id, not
the id of an order the OMS holds (risk would refuse it as DUPLICATE_ORDER, and the token wait 3 minutes)."""

from services.strategy.engine import StrategyEngine
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from shared.clock import NS, ManualClock
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.strategy.test_price_levels import BUY, SBIN, SELL, T0930


def engine() -> StrategyEngine:
    strategy = MomentumRsi("mom", MomentumRsiParams(stop_loss_pct=1), frozenset({SBIN}))
    return StrategyEngine([strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), ManualClock(T0930))


def order(coid: str, side: trading_pb2.Side, status: trading_pb2.OrderStatus, filled: int,
          seq: int, signal_id: str = "") -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(
        internal_id=f"i-{coid}", client_order_id=coid, status=status, sequence=seq, filled_quantity=filled,
        average_price_paise=100_00 if filled else 0, ts_ns=T0930,
        request=trading_pb2.OrderRequest(client_order_id=coid, token=SBIN, side=side, quantity=10,
                                         order_type=trading_pb2.ORDER_TYPE_MARKET, strategy_tag="mom",
                                         product=trading_pb2.PRODUCT_MIS, signal_id=signal_id))


def stop_tick() -> market_pb2.Tick:
    return market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0930 + 5 * NS, ltp_paise=99_00, ltq=1)


def test_a_stop_exit_decided_again_after_a_restart_takes_the_next_id_after_those_the_oms_holds():
    first_id = f"mom-{SBIN}-{T0930 + 5 * NS}-SELL"
    after = engine()  # before the restart: exits sent at 09:30:05 as first_id and first_id-2, both refused
    after.load_orders([order("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, 10, 1),
                       order("exit", SELL, trading_pb2.ORDER_STATUS_REJECTED, 0, 2, signal_id=first_id),
                       order("exit-2", SELL, trading_pb2.ORDER_STATUS_REJECTED, 0, 3, signal_id=f"{first_id}-2")])

    (again,) = after.on_ticks([stop_tick()])[1]

    assert (again.side, again.signal_id) == (SELL, f"{first_id}-3")
