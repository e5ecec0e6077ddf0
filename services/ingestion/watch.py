"""The ingestion watchdog's bookkeeping of what it tells the trader: the feed running behind the exchange, a stall
while it lasts, and the tick store's outages and the ticks they lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.clock import NS
from shared.contracts import ops_pb2

log = logging.getLogger(__name__)

Notify = Callable[[str, str, ops_pb2.Severity], Awaitable[None]]  # title, text, severity
DELAY_WINDOWS = 3  # watchdog windows in a row (about 1 s each) that start or end a "feed delayed" episode
# A stall still on this long in market hours is told again as CRITICAL (stops and exits watched on ticks are blind),
# then repeated at most every STALL_TOLD_EVERY_S while it lasts.
STALL_CRITICAL_S = 120.0
STALL_TOLD_EVERY_S = 300.0
STORE_DOWN_TOLD_AFTER_S = 30.0  # the tick store unreachable this long is told (a short blip is only buffered)
STORE_LOSS_TOLD_EVERY_S = 60.0  # ticks the tick store lost are told at most this often, with the count so far


@dataclass
class FeedOutage:
    """A stall told to the trader, until ticks come again: told again while it lasts, its end told too."""

    since: float  # monotonic: the last tick before it (or the session's open, for one left from the day before)
    ticks: int  # ticks_total at the last reconnect: more means the feed is back
    next_told_at: float  # monotonic: when it is told again if it still lasts
    reconnects: int = 0


@dataclass
class StoreOutage:
    """The tick store's state as last told: since when it is unreachable, and its lost ticks (dropped + failed)."""

    down_since: float | None = None  # monotonic, while the writer is not connected
    lost_at_down: int = 0  # its lost ticks when it went away
    told: bool = False  # this outage was told: its end will be
    lost_told: int = 0
    lost_told_at: float = -STORE_LOSS_TOLD_EVERY_S


class FeedDelay:
    """Whether the feed runs behind the exchange: in each watchdog window, the freshest trade's time against the
    clock when it arrived (the smallest lag seen). The freshest, as a thinly traded contract's trade is old news when
    it prints; trades only (ltq > 0), as a quote-only update carries its last trade's time."""

    def __init__(self, threshold_s: float) -> None:
        self.threshold_ns = int(threshold_s * NS)
        self.delayed = False
        self._lag_ns: int | None = None  # the current window's smallest lag
        self._run = 0  # windows in a row that disagree with `delayed`

    def saw(self, lag_ns: int) -> None:
        if self._lag_ns is None or lag_ns < self._lag_ns:
            self._lag_ns = lag_ns

    def end_window(self) -> int | None:
        """Close the window: its lag (ns) when it is the DELAY_WINDOWS-th in a row to disagree with `delayed`,
        which then flips; else None. A window without trades breaks a run either way."""
        lag, self._lag_ns = self._lag_ns, None
        if lag is None:  # no trade: the run is broken (stale samples minutes apart are not "in a row")
            self._run = 0
            return None
        # Cleared only well under the threshold: a lag hovering at it is one episode, not one every few seconds.
        disagrees = lag <= self.threshold_ns // 2 if self.delayed else lag > self.threshold_ns
        self._run = self._run + 1 if disagrees else 0
        if self._run < DELAY_WINDOWS:
            return None
        self.delayed, self._run = not self.delayed, 0
        return lag

    def reset(self) -> None:
        """Out of market hours nothing is measured: an episode open at the close ends with it, untold."""
        self.delayed, self._lag_ns, self._run = False, None, 0


class StoreWatch:
    """Tells the tick store's outage (a day with a hole in it: warm-up candles, backtests)."""

    def __init__(self) -> None:
        self.state = StoreOutage()

    async def check(self, sink: object, notify: Notify, source: str) -> None:
        """Tell the tick store's outage (a day with a hole in it: warm-up candles, backtests): once it has been
        unreachable STORE_DOWN_TOLD_AFTER_S, its lost ticks at most every STORE_LOSS_TOLD_EVERY_S, and its end."""
        st = self.state
        up = getattr(sink, "connected", True)
        lost = getattr(sink, "dropped", 0) + getattr(sink, "failed", 0)
        now = time.monotonic()
        if not up and st.down_since is None:
            st.down_since, st.lost_at_down = now, lost
        if not up and not st.told and st.down_since is not None and now - st.down_since >= STORE_DOWN_TOLD_AFTER_S:
            st.told = True
            log.warning("tick store unavailable", extra={"source": source})
            await notify("Tick store unavailable", "Ticks are not being stored; buffering them until the "
                                                   "database is back.", ops_pb2.SEVERITY_WARNING)
        if lost > st.lost_told and now - st.lost_told_at >= STORE_LOSS_TOLD_EVERY_S:
            st.lost_told, st.lost_told_at, st.told = lost, now, st.told or st.down_since is not None
            await notify("Tick store dropping ticks", f"{lost} ticks lost so far: that day's stored ticks "
                                                      "(warm-up candles, backtests) have a hole. Check the "
                                                      "database.", ops_pb2.SEVERITY_WARNING)
        if up and st.down_since is not None:
            if st.told:
                gone = lost - st.lost_at_down
                log.info("tick store back", extra={"source": source, "lost": gone})
                await notify("Tick store back", f"Ticks are stored again; {gone} ticks lost.",
                             ops_pb2.SEVERITY_WARNING if gone else ops_pb2.SEVERITY_INFO)
            self.state = StoreOutage(lost_told=st.lost_told, lost_told_at=st.lost_told_at)


def span(seconds: float) -> str:
    """A duration as the trader reads it: "45 s", "3 min", "2 h 5 min"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
