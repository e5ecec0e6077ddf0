"""A run-time change of ORB's range (session_start_ist) keeps today's complete range, which gives the held
positions their stops and targets, and applies from the next day's range."""

from datetime import date

from tests.strategy.test_orb import RANGE, SELL, Desk


def test_a_changed_session_start_keeps_the_held_positions_stop_and_it_exits_there():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:18:10", 101_00))
    desk.filled(entry, 101_00)  # long 1 at 101.00: stop 99.00, the range's low
    desk.engine.set_params("orb", {"session_start_ist": "09:30"})
    desk.ticks(("09:45:10", 100_50), ("09:46:01", 100_40))  # a candle closes under the new params

    out = desk.ticks(("09:47:00", 98_00))

    assert [(s.side, s.reason) for s in out] == [
        (SELL, "stop at the range's low ₹99.00: tick ₹98.00")]


def test_a_changed_session_start_does_not_widen_todays_complete_range_with_the_new_minutes():
    desk = Desk(allow_short=False)
    desk.ticks(*RANGE, ("09:18:02", 100_00))  # 99.00-101.00, complete
    desk.engine.set_params("orb", {"session_start_ist": "09:30"})
    desk.ticks(("09:30:10", 98_00), ("09:31:01", 100_00))  # a low of the new range's first minute

    (entry,) = desk.ticks(("09:31:10", 101_00))

    assert entry.reason == "broke above the opening range ₹99.00-₹101.00 (09:15-09:18 IST): tick ₹101.00"


def test_a_changed_session_start_makes_the_next_days_range():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    desk.engine.set_params("orb", {"session_start_ist": "09:30"})
    nextday = date(2026, 1, 21)
    desk.ticks(("09:30:05", 200_00), ("09:31:05", 202_00), ("09:32:05", 199_00), ("09:33:01", 200_00), day=nextday)

    (entry,) = desk.ticks(("09:33:10", 202_00), day=nextday)

    assert entry.reason == "broke above the opening range ₹199.00-₹202.00 (09:30-09:33 IST): tick ₹202.00"
