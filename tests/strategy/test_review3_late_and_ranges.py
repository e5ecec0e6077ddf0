"""Late ticks reach a held position's stop only when no older than its entry, and never enter; a saved opening range
comes back only for the range's own start."""

from tests.strategy.test_orb import RANGE, SBIN, Desk, at, described


def test_a_late_tick_older_than_the_entry_does_not_stop_the_position():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))
    (entry,) = desk.ticks(("09:19:10", 101_00))      # breaks above at 09:19:10
    desk.filled(entry, 101_00)                       # long 1 @ 101.00, stop 99.00
    # a tick stamped 09:18:30 (before the entry) arrives late, at a price under the stop
    signals = desk.ticks(("09:18:30", 98_90))
    assert described(signals) == [], "stop fired on a tick older than the position"


def test_a_late_tick_of_the_ranges_own_minutes_is_no_breakout():
    desk = Desk()
    desk.ticks(*RANGE, ("09:18:02", 100_00))         # 09:17 closes: range 99.00-101.00 complete
    signals = desk.ticks(("09:17:59", 101_50))       # a range-minute tick arriving after the close
    assert described(signals) == [], "a tick inside the range's minutes 'broke' the range"


def test_a_saved_range_of_another_session_start_is_not_restored():
    before = Desk()                                   # range 09:15-09:18
    before.ticks(*RANGE, ("09:18:02", 100_00))
    after = Desk(session_start_ist="09:30")           # restarted at 10:00 with the range from 09:30
    after.clock.set(at("10:00:00"))
    after.engine.restore_state("orb", before.engine.durable_state("orb"), at("10:00:00"))
    r = after.strategy._ranges.get(SBIN)
    assert r is None or r.start == 9 * 60 + 30, f"restored the 09:15 range: {r}"
