"""ORB, the opening range breakout, through the engine on crafted ticks: the range from the first minutes' candles,
the entry at the tick that breaks it, the stop at its other side and the target in R, one trade a token a day."""

import re
from datetime import date

import pytest
from pydantic import ValidationError

from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.orb import OpeningRangeBreakout, OrbParams
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

DAY = date(2026, 1, 20)
SBIN = 3045
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MARKET, LIMIT = trading_pb2.ORDER_TYPE_MARKET, trading_pb2.ORDER_TYPE_LIMIT
# A 3-minute range (09:15-09:18 IST): high 101.00, low 99.00.
RANGE = [("09:15:05", 100_00), ("09:15:40", 101_00), ("09:16:10", 99_00), ("09:17:30", 100_50)]


def at(hhmmss: str, day: date = DAY) -> int:
    hour, minute, second = map(int, hhmmss.split(":"))
    return ist_ns(day, hour, minute) + second * NS


class Desk:
    def __init__(self, **params):
        self.strategy = OpeningRangeBreakout("orb", OrbParams(**{"range_minutes": 3, **params}), frozenset({SBIN}))
        self.clock = ManualClock(at("09:15:00"))
        self.engine = StrategyEngine([self.strategy], InstrumentBook(nse_instruments(["SBIN-EQ"])), self.clock)
        self.sequence = 0

    def ticks(self, *timed, day: date = DAY):
        out = [market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=at(when, day), ltp_paise=price, ltq=1)
               for when, price in timed]
        self.clock.set(out[-1].ts_ns)
        return self.engine.on_ticks(out)[1]

    def filled(self, signal, price, day: date = DAY):
        self.sequence += 1
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id=signal.signal_id, status=trading_pb2.ORDER_STATUS_TRADED, sequence=self.sequence,
            last_fill_quantity=signal.quantity, last_fill_price_paise=price, filled_quantity=signal.quantity,
            ts_ns=self.clock.now_ns(), request=trading_pb2.OrderRequest(
                client_order_id=signal.signal_id, token=SBIN, side=signal.side, quantity=signal.quantity,
                strategy_tag="orb", product=trading_pb2.PRODUCT_MIS)))

    def rejected(self, signal):
        self.engine.on_decision(trading_pb2.RiskDecision(
            accepted=False, reason_code="PRICE_BAND", strategy="orb", signal_id=signal.signal_id,
            order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="orb")))

    def ended_at_the_broker(self, signal, status=trading_pb2.ORDER_STATUS_REJECTED):
        """Risk accepted it; the broker refused it (its RMS: margin), or cancelled it unfilled."""
        self.engine.on_decision(trading_pb2.RiskDecision(
            accepted=True, strategy="orb", signal_id=signal.signal_id,
            order=trading_pb2.OrderRequest(token=SBIN, strategy_tag="orb")))
        self.sequence += 1
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id=signal.signal_id, status=status, sequence=self.sequence, ts_ns=self.clock.now_ns(),
            request=trading_pb2.OrderRequest(
                client_order_id=signal.signal_id, signal_id=signal.signal_id, token=SBIN, side=signal.side,
                quantity=signal.quantity, strategy_tag="orb", product=trading_pb2.PRODUCT_MIS)))


def described(signals):
    return [(s.side, s.quantity, s.order_type, s.limit_price_paise, s.reason) for s in signals]


def test_a_tick_at_the_ranges_high_after_the_range_buys_at_the_market():
    desk = Desk()
    assert desk.ticks(*RANGE, ("09:17:50", 101_00)) == []  # inside the range's minutes: part of it

    assert desk.ticks(("09:18:02", 100_80)) == []  # closes 09:17: the range is complete
    signals = desk.ticks(("09:18:20", 100_95), ("09:18:21", 101_00), ("09:18:22", 101_20))

    assert described(signals) == [
        (BUY, 1, MARKET, 0, "broke above the opening range ₹99.00-₹101.00 (09:15-09:18 IST): tick ₹101.00")]
    assert signals[0].signal_id == f"orb-{SBIN}-{at('09:18:21')}-BUY"


def test_a_tick_at_the_ranges_low_sells_short_unless_shorts_are_not_allowed():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    assert [(s.side, s.reason) for s in desk.ticks(("09:19:00", 98_95))] == [
        (SELL, "broke below the opening range ₹99.00-₹101.00 (09:15-09:18 IST): tick ₹98.95")]

    longs_only = Desk(allow_short=False)
    longs_only.ticks(*RANGE, ("09:18:02", 100_00))
    assert longs_only.ticks(("09:19:00", 98_00)) == []


def test_a_buffer_asks_the_break_to_go_that_far_past_the_range():
    desk = Desk(buffer_pct=0.5)  # 101.00 + 0.5% = 101.505: 101.51
    desk.ticks(*RANGE, ("09:18:02", 100_00))

    assert desk.ticks(("09:18:10", 101_50)) == []
    assert len(desk.ticks(("09:18:11", 101_51))) == 1


def test_the_stop_is_the_ranges_other_side_and_the_target_twice_the_risk():
    stopped = Desk()
    stopped.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = stopped.ticks(("09:18:10", 101_00))
    stopped.filled(entry, 101_00)
    assert stopped.ticks(("09:18:30", 99_05), ("09:18:40", 104_95)) == []
    assert described(stopped.ticks(("09:19:00", 99_00))) == [
        (SELL, 1, MARKET, 0, "stop at the range's low ₹99.00: tick ₹99.00")]

    taken = Desk(order_type="LIMIT")
    taken.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = taken.ticks(("09:18:10", 101_10))
    assert (entry.order_type, entry.limit_price_paise) == (LIMIT, 101_15)  # limit_slippage_pct 0.05 over the tick
    taken.filled(entry, 101_00)
    assert described(taken.ticks(("09:20:00", 105_05))) == [  # risk 2.00 from the fill at 101.00: target 105.00
        (SELL, 1, LIMIT, 105_00, "target 2R ₹105.00: tick ₹105.05")]  # 0.05% under the tick: 104.9975, to 105.00
    at_the_tick = Desk(order_type="LIMIT", limit_slippage_pct=0)
    at_the_tick.ticks(*RANGE, ("09:18:02", 100_00))
    assert [e.limit_price_paise for e in at_the_tick.ticks(("09:18:10", 101_10))] == [101_10]


def test_a_shorts_stop_is_the_ranges_high_and_stop_loss_pct_puts_it_nearer():
    short = Desk(target_r=0)
    short.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = short.ticks(("09:18:10", 99_00))
    short.filled(entry, 99_00)
    assert short.ticks(("09:18:20", 90_00)) == []  # no target
    assert [s.reason for s in short.ticks(("09:18:30", 101_00))] == ["stop at the range's high ₹101.00: tick ₹101.00"]

    tight = Desk(stop_loss_pct=1)  # from 101.00: 99.99; the target 2R: 103.02
    tight.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = tight.ticks(("09:18:10", 101_00))
    tight.filled(entry, 101_00)
    assert tight.ticks(("09:18:20", 100_00), ("09:18:21", 103_01)) == []
    assert [s.reason for s in tight.ticks(("09:18:30", 103_02))] == ["target 2R ₹103.02: tick ₹103.02"]


def test_the_stop_is_watched_while_a_limit_order_works_a_target_exit_moved_to_it_an_entrys_rest_cancelled():
    """Before, nothing was watched while an order of ORB's worked: a LIMIT target exit left resting as the market
    turned let the position run through its stop, as did a LIMIT entry part of which had filled."""
    desk = Desk(order_type="LIMIT")
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:18:10", 101_00))
    desk.filled(entry, 101_00)
    (target,) = desk.ticks(("09:18:20", 105_00))
    working(desk, target, trading_pb2.ORDER_STATUS_OPEN)  # resting at 105.00: the market fell back
    assert desk.ticks(("09:18:30", 100_00)) == []

    assert desk.ticks(("09:18:40", 98_95)) == []
    (moved,) = desk.engine.orders.take_changes()
    assert (moved.request.order_id, moved.request.price_paise, moved.reason) == (
        target.signal_id, 98_95, "stop at the range's low ₹99.00: tick ₹98.95; the working exit moved to it")

    part = Desk(order_type="LIMIT")
    part.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = part.ticks(("09:18:10", 101_00))
    working(part, entry, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, quantity=10, filled=4)
    assert part.ticks(("09:18:40", 99_00)) == []
    (cancel,) = part.engine.orders.take_changes()
    assert (cancel.request.order_id, cancel.reason) == (
        entry.signal_id, "stop at the range's low ₹99.00: tick ₹99.00; the rest of the entry cancelled, then the "
        "position exits")
    working(part, entry, trading_pb2.ORDER_STATUS_CANCELLED, quantity=10, filled=0)
    assert described(part.ticks(("09:18:50", 99_50))) == [
        (SELL, 4, MARKET, 0, "stop at the range's low ₹99.00: tick ₹99.00")]


def working(desk, signal, status, quantity=1, filled=0):
    """An update of the order of `signal` (a LIMIT at its price): `filled` more of it filled at that price."""
    desk.sequence += 1
    desk.engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id=signal.signal_id, status=status, sequence=desk.sequence, last_fill_quantity=filled,
        last_fill_price_paise=signal.limit_price_paise, filled_quantity=filled, ts_ns=desk.clock.now_ns(),
        request=trading_pb2.OrderRequest(
            client_order_id=signal.signal_id, token=SBIN, side=signal.side, quantity=quantity, order_type=LIMIT,
            price_paise=signal.limit_price_paise, strategy_tag="orb", product=trading_pb2.PRODUCT_MIS)))


def test_one_trade_a_token_a_day_and_a_new_range_the_next_day():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:18:10", 101_00))
    desk.filled(entry, 101_00)
    (exit_,) = desk.ticks(("09:18:30", 99_00))
    desk.filled(exit_, 99_00)

    assert desk.ticks(("09:19:10", 101_50), ("09:20:10", 98_00), ("09:21:10", 102_00)) == []

    tomorrow = date(2026, 1, 21)
    desk.ticks(("09:15:05", 200_00), ("09:17:05", 202_00), ("09:18:02", 201_00), day=tomorrow)
    assert [s.side for s in desk.ticks(("09:18:10", 202_00), day=tomorrow)] == [BUY]


def test_no_entry_after_entry_until_nor_on_a_range_wider_than_max_range_pct():
    late = Desk(entry_until_ist="09:20")
    late.ticks(*RANGE, ("09:18:02", 100_00))
    assert late.ticks(("09:20:00", 101_00)) == []

    wide = Desk(max_range_pct=2)  # 99.00 to 101.00 is 2.02% of 99.00
    wide.ticks(*RANGE, ("09:18:02", 100_00))
    assert wide.ticks(("09:18:10", 101_00)) == []


@pytest.mark.parametrize("refused_by", ["risk", "broker", "broker-cancel"])
def test_a_rejected_entry_goes_again_after_the_tokens_next_close_not_at_every_tick(refused_by):
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (first,) = desk.ticks(("09:18:10", 101_00))
    if refused_by == "risk":
        desk.rejected(first)
    else:
        desk.ended_at_the_broker(first, trading_pb2.ORDER_STATUS_REJECTED if refused_by == "broker"
                                 else trading_pb2.ORDER_STATUS_CANCELLED)

    assert desk.ticks(("09:18:20", 101_10), ("09:18:30", 101_20)) == []
    assert desk.ticks(("09:19:01", 100_90)) == []  # closes 09:18: the breaks are watched again
    assert [s.side for s in desk.ticks(("09:19:02", 101_05))] == [BUY]


def test_no_range_from_a_start_after_it_and_a_warm_start_gives_it_back_from_the_stored_candles():
    late = Desk()
    late.ticks(("09:20:05", 100_00), ("09:21:05", 102_00), ("09:22:05", 95_00))
    assert late.ticks(("09:23:05", 110_00)) == []

    desk = Desk()
    stored = [market_pb2.Candle(token=SBIN, start_ns=at(f"09:{m}:00"), open_paise=100_00, high_paise=high,
                                low_paise=low, close_paise=100_00, volume=10, tick_count=3)
              for m, high, low in ((15, 100_50, 99_50), (16, 101_00, 99_00), (17, 100_20, 99_80), (18, 100_40, 99_90))]
    desk.clock.set(at("09:19:00"))
    desk.engine.warm_up(stored, [SBIN], at("09:19:00"))

    assert [s.reason for s in desk.ticks(("09:19:10", 101_00))] == [
        "broke above the opening range ₹99.00-₹101.00 (09:15-09:18 IST): tick ₹101.00"]


def test_a_restart_after_the_days_trade_trades_no_more_that_day():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    desk.engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id="o-1", sequence=3, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=1,
        average_price_paise=101_00, ts_ns=at("09:18:10"), request=trading_pb2.OrderRequest(
            token=SBIN, side=BUY, quantity=1, strategy_tag="orb", product=trading_pb2.PRODUCT_MIS)),
        trading_pb2.OrderUpdate(
        client_order_id="o-2", sequence=4, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=1,
        average_price_paise=99_00, ts_ns=at("09:18:40"), request=trading_pb2.OrderRequest(
            token=SBIN, side=SELL, quantity=1, strategy_tag="orb", product=trading_pb2.PRODUCT_MIS))])

    assert desk.ticks(("09:19:10", 101_50), ("09:20:10", 98_00)) == []


def test_order_value_sizes_the_entry_at_the_breaking_ticks_price():
    desk = Desk(order_value=1_000)
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    assert [s.quantity for s in desk.ticks(("09:18:10", 101_00))] == [9]


def test_risk_per_trade_sizes_the_entry_by_its_distance_to_the_stop():
    """A break at 101.00 of the range 99.00-101.00: 2.00 a share to the range's low; Rs 1,000 risks 500 shares.
    With stop_loss_pct 0.5 the stop is 100.49: 0.51 a share, 1,960 shares; capped by Rs 1,00,000 of value: 990."""
    for params, quantity in (({}, 500), ({"stop_loss_pct": 0.5}, 1960),
                             ({"stop_loss_pct": 0.5, "order_value": 100_000}, 990)):
        desk = Desk(risk_per_trade=1_000, **params)
        desk.ticks(*RANGE, ("09:18:02", 100_00))
        (entry,) = desk.ticks(("09:18:10", 101_00))
        assert entry.quantity == quantity, params
    assert entry.reason.endswith("tick ₹101.00; sized to risk ₹1,000.00 to the stop ₹100.49")
    # A LIMIT entry may fill 0.05% over the tick (101.05): 2.05 a share to the range's low, 487 shares, not 500.
    limit = Desk(risk_per_trade=1_000, order_type="LIMIT")
    limit.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = limit.ticks(("09:18:10", 101_00))
    assert (entry.limit_price_paise, entry.quantity) == (101_05, 487)


def test_its_position_is_listed_with_the_ranges_other_side_as_its_stop_and_its_target():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:18:10", 101_00))
    desk.filled(entry, 101_00)

    (held,) = desk.engine.info(desk.strategy).positions
    assert (held.net_quantity, held.entry_price_paise, held.stop_paise, held.target_paise) == (1, 101_00, 99_00, 105_00)


def test_from_exit_at_ist_its_position_exits_at_the_market_at_the_tokens_first_close():
    desk = Desk(exit_at_ist="14:45", target_r=0)
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:18:10", 101_00))
    desk.filled(entry, 101_00)

    assert desk.ticks(("14:44:30", 102_00)) == []
    assert described(desk.ticks(("14:45:01", 102_10))) == [(SELL, 1, MARKET, 0, "time exit at 14:45 IST")]
    with pytest.raises(ValidationError, match="exit_at_ist 14:00 must not be before entry_until_ist 14:30"):
        OrbParams(exit_at_ist="14:00")


@pytest.mark.parametrize(("params", "said"), [
    ({"entry_until_ist": "09:18"}, "entry_until_ist 09:18 must be after the range ends (09:18"),
    ({"session_start_ist": "9h15"}, "HH:MM"),
    ({"range_minutes": 0}, "greater than or equal to 1")])
def test_bad_params_are_refused_naming_them(params, said):
    with pytest.raises(ValidationError, match=re.escape(said)):
        OrbParams(**{"range_minutes": 3, **params})


def test_orb_is_configured_by_its_kind():
    settings_strategies = [{"name": "orb", "kind": "ORB", "symbols": ["SBIN-EQ"], "params": {"range_minutes": 30}}]
    from services.strategy.config import StrategySettings
    from shared import config as cfg

    (strategy,) = build_strategies(cfg.load(StrategySettings, {"strategy": {"strategies": settings_strategies}}),
                                   InstrumentBook(nse_instruments(["SBIN-EQ"])))

    assert isinstance(strategy, OpeningRangeBreakout) and strategy.params.range_minutes == 30


def test_the_range_starts_at_each_tokens_exchange_open_unless_session_start_ist_says_otherwise():
    crude = market_pb2.Instrument(token=4321, exchange_segment="mcx_fo", symbol="CRUDEOIL", lot_size=1,
                                  tick_size_paise=100)
    strategy = OpeningRangeBreakout("orb", OrbParams(range_minutes=3))
    clock = ManualClock(at("09:00:00"))
    engine = StrategyEngine([strategy], InstrumentBook([crude]), clock)

    def ticks(*timed):
        out = [market_pb2.Tick(token=4321, exchange_segment="mcx_fo", ts_ns=at(when), ltp_paise=price, ltq=1)
               for when, price in timed]
        clock.set(out[-1].ts_ns)
        return engine.on_ticks(out)[1]

    ticks(("09:00:05", 5_000_00), ("09:01:05", 5_020_00), ("09:02:05", 4_990_00), ("09:03:01", 5_000_00))
    assert [s.reason for s in ticks(("09:03:10", 5_020_00))] == [
        "broke above the opening range ₹4,990.00-₹5,020.00 (09:00-09:03 IST): tick ₹5,020.00"]

    later = Desk(session_start_ist="09:16")  # NSE's would be 09:15: 09:15's candle is no part of it
    later.ticks(*RANGE, ("09:18:30", 100_50), ("09:19:02", 100_00))
    assert [s.reason for s in later.ticks(("09:19:10", 100_50))] == [
        "broke above the opening range ₹99.00-₹100.50 (09:16-09:19 IST): tick ₹100.50"]
