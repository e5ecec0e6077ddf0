"""ORB takes no opening range no wider than the instrument's tick (every trade of its minutes at one price, or at two
adjacent ones: an illiquid contract, a stock locked at its circuit): a tick at its own high is no breakout, and its
stop would sit at the entry, or a tick off it."""

from tests.strategy.test_orb import Desk, described


def test_a_zero_width_range_is_no_breakout_at_its_own_price():
    desk = Desk()
    desk.ticks(("09:15:05", 100_00), ("09:16:10", 100_00), ("09:17:30", 100_00), ("09:18:02", 100_00))

    signals = desk.ticks(("09:18:20", 100_00), ("09:18:30", 100_00))

    assert signals == [], described(signals)


def test_a_range_one_tick_wide_is_no_breakout_either():
    desk = Desk()  # SBIN-EQ: a tick of 0.05
    desk.ticks(("09:15:05", 100_00), ("09:16:10", 100_05), ("09:17:30", 100_00), ("09:18:02", 100_00))

    signals = desk.ticks(("09:18:20", 100_05), ("09:18:30", 100_00))

    assert signals == [], described(signals)


def test_a_range_two_ticks_wide_is_one():
    desk = Desk()
    desk.ticks(("09:15:05", 100_00), ("09:16:10", 100_10), ("09:17:30", 100_00), ("09:18:02", 100_00))

    signals = desk.ticks(("09:18:20", 100_10))

    assert [s.reason for s in signals] == ["broke above the opening range ₹100.00-₹100.10 (09:15-09:18 IST): "
                                           "tick ₹100.10"]
