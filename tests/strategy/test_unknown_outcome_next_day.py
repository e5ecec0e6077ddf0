"""An order given up with its outcome unknown blocks its token for the day; a DAY order ends at its day's close, so
the next day the token trades again, said in a warning (it used to stay blocked for good, silently)."""

import logging
from datetime import date

from services.strategy.engine import StrategyEngine
from services.strategy.orb import OpeningRangeBreakout, OrbParams
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, trading_pb2
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

SBIN = 3045
DAY1, DAY2 = date(2026, 1, 20), date(2026, 1, 21)  # Tuesday, Wednesday


class Desk:
    """ORB on SBIN in a StrategyEngine, fed ticks and its order's updates as the OMS would send them."""

    def __init__(self) -> None:
        self.clock = ManualClock(ist_ns(DAY1, 9, 14))
        self.engine = StrategyEngine([OpeningRangeBreakout("orb", OrbParams(quantity=1))],
                                     InstrumentBook(nse_instruments(["SBIN-EQ"])), self.clock)
        self.strategy = self.engine.strategies["orb"]

    def tick(self, day: date, hh: int, mm: int, ss: int, price: int) -> list[trading_pb2.Signal]:
        ts = ist_ns(day, hh, mm, ss)
        self.clock.set(ts)
        signals = self.engine.on_ticks([market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=ts,
                                                        ltp_paise=price, ltq=1)])[1]
        return signals + self.engine.close_due(ts - 2 * NS)[1]

    def breakout(self, day: date) -> list[trading_pb2.Signal]:
        """A 09:15-09:30 range of 100.00-101.00, then a tick at 102.00 that breaks it."""
        signals = []
        for minute in range(15, 31):
            signals += self.tick(day, 9, minute, 0, 100_00 if minute % 2 else 101_00)
        return signals + self.tick(day, 9, 31, 5, 102_00)

    def given_up(self, validity: trading_pb2.Validity = trading_pb2.VALIDITY_DAY) -> str:
        """Day 1's breakout entry, placed and given up (the placement's answer lost, its tag not found)."""
        (entry,) = self.breakout(DAY1)
        coid = "sig-" + entry.signal_id
        for sequence, (status, code) in enumerate([(trading_pb2.ORDER_STATUS_PENDING_NEW, ""),
                                                   (trading_pb2.ORDER_STATUS_REJECTED, "OUTCOME_UNKNOWN")], 1):
            self.engine.on_order_update(trading_pb2.OrderUpdate(
                internal_id=f"i-{coid}", client_order_id=coid, status=status, sequence=sequence, reason_code=code,
                ts_ns=self.clock.now_ns(), request=trading_pb2.OrderRequest(
                    client_order_id=coid, token=SBIN, side=entry.side, quantity=entry.quantity, strategy_tag="orb",
                    signal_id=entry.signal_id, validity=validity, product=trading_pb2.PRODUCT_MIS)))
        return coid


def test_a_day_order_of_unknown_outcome_keeps_its_token_blocked_for_the_rest_of_its_day():
    desk = Desk()
    desk.given_up()

    desk.tick(DAY1, 23, 59, 59, 101_00)

    assert desk.strategy.is_pending(SBIN, desk.clock.now_ns())


def test_the_next_days_breakout_trades_the_token_a_day_order_of_unknown_outcome_blocked():
    desk = Desk()
    desk.given_up()

    signals = desk.tick(DAY2, 0, 0, 30, 101_00) + desk.breakout(DAY2)

    assert [(s.side, s.quantity) for s in signals] == [(trading_pb2.SIDE_BUY, 1)]


def test_an_ioc_order_of_unknown_outcome_is_released_the_next_day_as_a_day_order_is():
    desk = Desk()
    desk.given_up(trading_pb2.VALIDITY_IOC)

    desk.tick(DAY2, 0, 0, 30, 101_00)

    assert not desk.strategy.is_pending(SBIN, desk.clock.now_ns())


def test_the_release_names_the_order_its_token_and_its_day_for_the_trader_to_check(caplog):
    desk = Desk()
    coid = desk.given_up()

    with caplog.at_level(logging.WARNING, logger="services.strategy.plugins"):
        desk.breakout(DAY2)

    (release,) = [r for r in caplog.records if "released" in r.getMessage()]
    assert ((release.levelname, release.order_id, release.token, release.day, release.strategy)
            == ("WARNING", coid, SBIN, "2026-01-20", "orb"))
    assert "check that day's order book and positions" in release.getMessage()


def test_the_release_is_handed_to_the_module_to_tell_the_trader_once():
    desk = Desk()
    coid = desk.given_up()

    desk.breakout(DAY2)
    desk.tick(DAY2, 9, 45, 0, 102_50)

    assert [(name, token, coid in text and "20 Jan" in text) for name, token, text in desk.engine.released] == [
        ("orb", SBIN, True)]
