"""IST calendar arithmetic on integers agrees with the tz database (India keeps no daylight saving)."""

import random
from datetime import datetime

from shared.clock import NS, day_of, is_market_open, ist_datetime, ist_minute_of_day, ist_weekday


def test_integer_ist_arithmetic_matches_zoneinfo_over_two_years_of_timestamps():
    rng = random.Random(5)
    base = int(datetime(2026, 1, 1).timestamp()) * NS
    for _ in range(5_000):
        ts = base + rng.randint(0, 800 * 86_400) * NS + rng.randint(0, NS - 1)
        dt = ist_datetime(ts)
        assert (ist_minute_of_day(ts), ist_weekday(ts), day_of(ts)) == (dt.hour * 60 + dt.minute, dt.weekday(),
                                                                        dt.date())
        assert is_market_open(ts) == (dt.weekday() < 5 and (9, 15) <= (dt.hour, dt.minute) < (15, 30))


def test_the_session_opens_at_0915_and_closes_at_1530_ist():
    from shared.clock import IST

    open_ns = int(datetime(2026, 11, 25, 9, 15, tzinfo=IST).timestamp()) * NS
    close_ns = int(datetime(2026, 11, 25, 15, 30, tzinfo=IST).timestamp()) * NS
    assert (is_market_open(open_ns - 1), is_market_open(open_ns)) == (False, True)
    assert (is_market_open(close_ns - 1), is_market_open(close_ns)) == (True, False)


def test_a_configured_exchange_holiday_is_closed_all_day_and_skipped_as_a_session_day(exchange_holidays):
    from datetime import date

    from shared.clock import ist_ns, last_trading_day

    republic_day = date(2026, 1, 26)  # a Monday
    exchange_holidays(republic_day)

    assert not is_market_open(ist_ns(republic_day, 11, 0))
    assert is_market_open(ist_ns(date(2026, 1, 27), 11, 0))
    assert last_trading_day(republic_day) == date(2026, 1, 23)  # back over the weekend to Friday


def test_split_processes_started_either_side_of_midnight_ist_run_the_same_simulated_session():
    """The session day came from each process's own start: a risk or OMS restarted after midnight IST ran the next
    day's session beside an ingestion still on the last one (a market order waited for a tick of its own day)."""
    from datetime import date

    from services.app.split import SessionClock
    from shared.clock import ist_ns

    wall_start = ist_ns(date(2026, 11, 25), 23, 59, 59)  # a Wednesday, a second before midnight IST
    clock = SessionClock(wall_start, speed=60)  # this process starts now, any day after it

    assert clock.start_ns == ist_ns(date(2026, 11, 25), 9, 15)
    assert SessionClock(ist_ns(date(2026, 11, 28), 10, 0), speed=60).start_ns == ist_ns(date(2026, 11, 27), 9, 15)
