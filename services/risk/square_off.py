"""Intraday square-off past a segment's close: the MIS positions it could not close, each told to the trader once.

Pure: the engine reports what its square-offs ended with and which positions it found after the close; RiskModule
publishes the alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.clock import (
    Session,
    day_of,
    fmt_hhmm,
    is_trading_day,
    ist_minute_of_day,
    segment_open,
    session_in_force,
    special_session,
)
from shared.contracts import ops_pb2
from shared.positions import PositionState

Key = tuple[int, int]  # (token, product)


def shut_for_day(segment: str, now: int, sessions: dict[str, Session]) -> bool:
    """Whether `segment` trades no more on the IST day of `now`: its session is over, or it holds none that day.
    Before the session opens it is not: the square-off goes out then."""
    if segment_open(segment, now, sessions):
        return False
    opens = session_in_force(segment, now, sessions)[0]
    return ist_minute_of_day(now) >= opens[0] * 60 + opens[1]


@dataclass
class LeftOpen:
    """The day's MIS positions still open when their segment has shut: no square-off is sent for them any more (the
    exchange, and risk's market hours, refuse it until the next session), and each is told once, CRITICAL."""

    sessions: dict[str, Session]  # the engine's market hours by segment
    why: dict[Key, str] = field(default_factory=dict)  # how the position's last square-off ended without closing it
    seen: dict[Key, bool] = field(default_factory=dict)  # False: found once with an order working; True: told
    alerts: list[ops_pb2.Notification] = field(default_factory=list)

    def new_day(self) -> None:
        """A new trading day starts clean (its positions are told again if its own square-off fails)."""
        self.why.clear()
        self.seen.clear()

    def ended(self, key: Key, why: str) -> None:
        """A square-off of the position ended without closing it: refused by risk or the broker, or cancelled."""
        self.why[key] = why

    def found(self, pos: PositionState, symbol: str, segment: str, working: list[str], now: int) -> None:
        """The position is open past its square-off time while `segment` is closed. Once its session is over for the
        day it is told, once: at once if none of its orders works, else at the next look (square_off_retry_s on),
        which gives a fill from just before the close time to arrive."""
        key = (pos.token, pos.product)
        if self.seen.get(key) or not shut_for_day(segment, now, self.sessions):
            return
        if working and key not in self.seen:
            self.seen[key] = False
            return
        self.seen[key] = True
        why = (f"order(s) {', '.join(working)} still working at the close" if working
               else self.why.get(key, "no reason was reported"))
        self.alerts.append(left_open_alert(pos.token, symbol, pos.net_quantity, segment, why, now, self.sessions))

    def pop(self) -> list[ops_pb2.Notification]:
        alerts, self.alerts = self.alerts, []
        return alerts


def left_open_alert(token: int, symbol: str, net: int, segment: str, why: str, now: int,
                    sessions: dict[str, Session]) -> ops_pb2.Notification:
    """The CRITICAL alert for an MIS position of `net` units still open after its segment's close: what is open,
    why the square-off did not close it, and what the trader should do now."""
    symbol = symbol or f"token {token}"
    held = f"{'long' if net > 0 else 'short'} {abs(net)}"
    name = segment or "nse_cm"
    if special_session(segment, now) is None and not is_trading_day(day_of(now)):
        closed = f"{name} does not trade on {day_of(now)}"
    else:
        closed = f"{name} closed at {fmt_hhmm(session_in_force(segment, now, sessions)[1])} IST"
    return ops_pb2.Notification(
        kind=ops_pb2.NOTIFICATION_KIND_RISK_BREACH, severity=ops_pb2.SEVERITY_CRITICAL, source="risk", ts_ns=now,
        title=f"MIS position left open after the close: {symbol} {held}",
        text=(f"{symbol} ({held}, MIS) is still open and {closed}: the square-off did not complete ({why}). "
              "NeoPulse sends no more square-offs for it today. Check the position in the Neo app now: Kotak's "
              "auto square-off (or the exchange's) may have closed it; if it is still open there, it is settled "
              "(cash: a long is delivered against your funds, a short may go to auction) or carried overnight "
              "(F&O). Call Kotak's dealing desk if you cannot close it."),
        fields={"token": str(token), "symbol": symbol, "quantity": str(net), "product": "MIS",
                "segment": name, "why": why})
