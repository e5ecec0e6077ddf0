"""Clocks: the real one for live data, and a simulated NSE session clock for paper runs.

Everything that needs "now" (ticks, candles, risk hours, square-off) asks a Clock.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
UTC = timezone.utc  # noqa: UP017 - kept as the name other modules import
NS = 1_000_000_000
MARKET_OPEN_IST = (9, 15)
MARKET_CLOSE_IST = (15, 30)
Session = tuple[tuple[int, int], tuple[int, int]]  # (open, close) IST, close excluded


class UsDaylightSession(tuple):  # type: ignore[type-arg]
    """A session whose close follows New York's clock, as MCX's non-agricultural contracts (priced off US markets)
    do: 23:30 IST while the US keeps daylight time (second Sunday of March to first Sunday of November), 23:55
    otherwise (MCX circulars each March and November). Holds the longer, winter, session; session_at() gives a
    day's."""

    summer_close = (23, 30)


NEW_YORK = ZoneInfo("America/New_York")
# Normal trading sessions by exchange segment (Kotak's names), IST; pre-open and post-close sessions are not
# trading time here. The built-in table: the process trades by _sessions, these with the `[risk] sessions` setting
# over them (set_sessions; MCX's agricultural contracts close at 17:00, or 21:00 for cotton, CPO and kapas). An
# unknown segment gets the NSE cash session.
SESSIONS_IST: dict[str, Session] = {
    "nse_cm": (MARKET_OPEN_IST, MARKET_CLOSE_IST), "bse_cm": (MARKET_OPEN_IST, MARKET_CLOSE_IST),
    "nse_fo": (MARKET_OPEN_IST, MARKET_CLOSE_IST), "bse_fo": (MARKET_OPEN_IST, MARKET_CLOSE_IST),
    "cde_fo": ((9, 0), (17, 0)),  # NSE currency derivatives
    "mcx_fo": UsDaylightSession(((9, 0), (23, 55))),
}


class Clock(Protocol):
    def now_ns(self) -> int:
        """Current time, UTC nanoseconds since the epoch."""
        ...


class RealClock:
    def now_ns(self) -> int:
        return time.time_ns()


class SimClock:
    """Runs an NSE session at `speed` times real time, starting at 09:15 IST of `day`.

    With speed 60 a whole minute candle closes every real second, so a short
    run shows trading at any hour of the day.
    """

    def __init__(self, day: date | None = None, speed: float = 1.0, start_ist: tuple[int, int] = MARKET_OPEN_IST):
        day = last_trading_day(day or datetime.now(IST).date())
        start = datetime(day.year, day.month, day.day, *start_ist, tzinfo=IST)
        self.start_ns = int(start.timestamp()) * NS
        self.speed = speed
        self._t0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self.start_ns + int((time.monotonic_ns() - self._t0) * self.speed)

    def resume_at(self, start_ns: int) -> None:
        """Go on from `start_ns` (later in the same session) from now on, instead of from the opening."""
        self.start_ns, self._t0 = start_ns, time.monotonic_ns()


class ManualClock:
    """A clock tests and replays move by hand."""

    def __init__(self, now_ns: int) -> None:
        self._now = now_ns

    def now_ns(self) -> int:
        return self._now

    def set(self, now_ns: int) -> None:
        self._now = now_ns

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * NS)


def ist_datetime(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / NS, tz=IST)


def ist_ns(day: date, hour: int, minute: int, second: int = 0) -> int:
    """UTC nanoseconds of an IST wall-clock time on `day`."""
    return int(datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=IST).timestamp()) * NS


def minute_start_ns(ts_ns: int) -> int:
    # IST is UTC+05:30, a whole number of minutes, so UTC minute boundaries are IST ones.
    return ts_ns - ts_ns % (60 * NS)


# IST is UTC+05:30 with no daylight saving, so IST calendar arithmetic on integers is exact. The order
# path uses these instead of tz-aware datetimes: zoneinfo and datetime calls run cold there (tens of µs).
IST_OFFSET_S = 19_800
_DAY_S = 86_400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def ist_day_number(ts_ns: int) -> int:
    """Days since 1970-01-01 of the IST calendar date of ts_ns."""
    return (ts_ns // NS + IST_OFFSET_S) // _DAY_S


def ist_time_on_day_ns(ts_ns: int, at: tuple[int, int]) -> int:
    """UTC nanoseconds of IST wall-clock `at` (hour, minute) on the IST day of ts_ns (arithmetic, no datetime: IST
    keeps no daylight time); for a session's open or close on the day of a tick or an order."""
    return (ist_day_number(ts_ns) * _DAY_S + (at[0] * 60 + at[1]) * 60 - IST_OFFSET_S) * NS


def ist_minute_of_day(ts_ns: int) -> int:
    """Minutes since IST midnight (09:15 -> 555)."""
    return (ts_ns // NS + IST_OFFSET_S) % _DAY_S // 60


def ist_weekday(ts_ns: int) -> int:
    """Monday 0 .. Sunday 6 in IST."""
    return _weekday(ist_day_number(ts_ns))


def _weekday(day_number: int) -> int:
    return (day_number + 3) % 7  # 1970-01-01 was a Thursday


# Exchange holidays (IST day numbers), set once per process from config (`holidays`) by set_holidays().
_holidays: frozenset[int] = frozenset()


def set_holidays(days: Iterable[date]) -> None:
    """The exchange's trading holidays for this process: the market is closed all day on them."""
    global _holidays
    _holidays = frozenset(d.toordinal() - _EPOCH_ORDINAL for d in days)


def is_holiday(ts_ns: int) -> bool:
    return ist_day_number(ts_ns) in _holidays


# Sessions the exchanges hold on particular days (IST day number -> segment -> session), set once per process from
# config (`special_sessions`) by set_special_sessions(): Diwali's Muhurat trading on a weekend or holiday evening,
# MCX's evening session on an NSE holiday, a Budget-day Saturday. On such a day a listed segment trades in that
# session only, whatever the weekday, holidays and its regular session say; the others follow those.
_special: dict[int, dict[str, Session]] = {}


def set_special_sessions(days: dict[date, dict[str, Session]]) -> None:
    global _special
    _special = {d.toordinal() - _EPOCH_ORDINAL: dict(by_segment) for d, by_segment in days.items()}


# The regular sessions this process trades by, set once per process from config (`[risk] sessions`) by set_sessions():
# one table for risk's market hours, the feed stall watchdog, the paper broker's DAY orders and the strategies, so
# that none of them takes a segment for open when the trader has said it is closed (or the other way round).
_sessions: dict[str, Session] = dict(SESSIONS_IST)


def set_sessions(overrides: Mapping[str, Session]) -> None:
    """The regular sessions by segment for this process: the built-in SESSIONS_IST with `overrides` over them ({} for
    the built-in ones)."""
    global _sessions
    _sessions = {**SESSIONS_IST, **overrides}


def special_session(segment: str, ts_ns: int) -> Session | None:
    """The session `segment` holds on the IST day of `ts_ns` by special_sessions, if any."""
    if not _special:
        return None
    by_segment = _special.get(ist_day_number(ts_ns))
    return by_segment.get(segment or "nse_cm") if by_segment else None


def session_in_force(segment: str, ts_ns: int, sessions: Mapping[str, Session] | None = None) -> Session:
    """The session `segment` holds on the IST day of `ts_ns`: a special one, else its regular one that day (from
    `sessions`, by default the process's)."""
    return special_session(segment, ts_ns) or session_at(segment, ts_ns, sessions)


def segment_open(segment: str, ts_ns: int, sessions: Mapping[str, Session] | None = None) -> bool:
    """Whether `segment` trades at `ts_ns`: a special session of the day, else its regular one (from `sessions`, by
    default the process's) on a trading day."""
    special = special_session(segment, ts_ns)
    if special is None:
        return is_market_open(ts_ns, *session_at(segment, ts_ns, sessions))
    minute = ist_minute_of_day(ts_ns)
    return special[0][0] * 60 + special[0][1] <= minute < special[1][0] * 60 + special[1][1]


def is_trading_day(day: date) -> bool:
    """A weekday that is not a configured exchange holiday."""
    return day.weekday() < 5 and day.toordinal() - _EPOCH_ORDINAL not in _holidays


def is_market_open(ts_ns: int, open_ist: tuple[int, int] = MARKET_OPEN_IST,
                   close_ist: tuple[int, int] = MARKET_CLOSE_IST) -> bool:
    """NSE cash session on a trading day (weekdays minus the configured holidays)."""
    day_number = ist_day_number(ts_ns)
    if _weekday(day_number) >= 5 or day_number in _holidays:
        return False
    minute = ist_minute_of_day(ts_ns)
    return open_ist[0] * 60 + open_ist[1] <= minute < close_ist[0] * 60 + close_ist[1]


def session_of(segment: str, sessions: Mapping[str, Session] | None = None) -> Session:
    """A segment's trading session in `sessions`, by default the process's (the longest of the year, for one that
    moves: session_at gives a day's); an unknown (or empty) segment trades the NSE cash session."""
    if sessions is None:
        sessions = _sessions
    return sessions.get(segment) or sessions.get("nse_cm") or (MARKET_OPEN_IST, MARKET_CLOSE_IST)


def session_at(segment: str, ts_ns: int, sessions: Mapping[str, Session] | None = None) -> Session:
    """A segment's trading session on the IST day of `ts_ns` (from `sessions`, by default the process's)."""
    session = session_of(segment, sessions)
    if isinstance(session, UsDaylightSession) and us_daylight_time(day_of(ts_ns)):
        return session[0], session.summer_close
    return session


@functools.lru_cache(maxsize=64)
def us_daylight_time(day: date) -> bool:
    """New York keeps daylight time on `day` (its noon: the switches happen at 02:00 on Sundays)."""
    return bool(datetime(day.year, day.month, day.day, 12, tzinfo=NEW_YORK).dst())


def shortest_session(session: Session) -> Session:
    """The shortest a session gets in the year (a setting that must fall inside it every day)."""
    if isinstance(session, UsDaylightSession):
        return session[0], session.summer_close
    return session


def parse_session(text: str) -> Session:
    """'09:00-23:55' -> ((9, 0), (23, 55)); raises ValueError naming the expected form."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    opens, closes = parse_hhmm(start.strip()), parse_hhmm(end.strip())
    if opens >= closes:
        raise ValueError(f"the session must open before it closes, got {text!r}")
    return opens, closes


@functools.cache  # read per order (risk's square-off time); a handful of distinct values per process
def parse_hhmm(text: str) -> tuple[int, int]:
    """'15:15' -> (15, 15); raises ValueError naming the expected form."""
    try:
        hour, minute = (int(part) for part in text.split(":"))
    except ValueError as exc:
        raise ValueError(f"expected HH:MM, got {text!r}") from exc
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"expected HH:MM, got {text!r}")
    return hour, minute


def fmt_hhmm(at: tuple[int, int]) -> str:
    """(9, 5) -> '09:05'."""
    return f"{at[0]:02d}:{at[1]:02d}"


def fmt_session(session: Session) -> str:
    """((9, 15), (15, 30)) -> '09:15-15:30'."""
    return f"{fmt_hhmm(session[0])}-{fmt_hhmm(session[1])}"


def hhmm_minutes(text: str) -> int:
    """'09:15' -> 555, minutes of the day (as ist_minute_of_day counts them); ValueError as parse_hhmm."""
    hour, minute = parse_hhmm(text)
    return hour * 60 + minute


def day_of(ts_ns: int) -> date:
    """The IST trading day a timestamp belongs to."""
    return date.fromordinal(_EPOCH_ORDINAL + ist_day_number(ts_ns))


def last_weekday(day: date) -> date:
    """The day itself, or the Friday before a weekend day."""
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def last_trading_day(day: date) -> date:
    """The day itself, or the latest trading day before it (weekends and configured holidays skipped)."""
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day
