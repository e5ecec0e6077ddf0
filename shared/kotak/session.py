"""The Kotak Neo SDK session: TOTP + MPIN login with backoff, rate limits, re-login once when the session expired.

Every SDK call runs in a worker thread (asyncio.to_thread); used by KotakBroker and KotakFeedSource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from neo_api_client import NeoAPI
from neo_api_client.exceptions import ApiException
from prometheus_client import Counter

from shared import logs
from shared.clock import IST
from shared.errors import ConfigError, NeoPulseError, NotSent, RetryableError, SessionExpired
from shared.kotak import mapping
from shared.kotak.config import KotakSettings
from shared.kotak.refusals import Refusals, RefusalStore
from shared.metrics import start_at_zero

log = logging.getLogger(__name__)

THROTTLED = Counter("neopulse_kotak_throttled_requests", "Order requests Kotak throttled (HTTP 429), each answer",
                    ["method"])
start_at_zero(THROTTLED, "place_order", "modify_order", "cancel_order")  # NeoPulseKotakThrottling from the first
_DAY_FOLDER = re.compile(r"(?<=/)(\d{4}-\d{2}-\d{2})(?=/)")  # a path's date folder: /2026-07-14/


class RateLimiter:
    """Spaces calls at least 1/per_second apart (Kotak counts per second; no bursts)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(loop.time(), self._next) + self.interval

    def hold(self, seconds: float) -> None:
        """No call for `seconds` from now (the broker said its limit was hit: a 429)."""
        self._next = max(self._next, asyncio.get_running_loop().time() + seconds)


class _Refused(ConfigError):
    """Kotak refused a login step: what counts toward locking the account (not a login NeoPulse never sent)."""


class _TotpRefused(_Refused):
    """Kotak refused the TOTP login step (a wrong code, or one that already logged in)."""


class KotakSession:
    """One logged-in NeoAPI client; `call` is the only way SDK REST methods are invoked."""

    def __init__(self, settings: KotakSettings, refusals: RefusalStore | None = None) -> None:
        """`refusals`: where the refused logins of these credentials are counted for every process of the deployment
        and across restarts (the database); None (no database: tests, --no-db) counts in this process only."""
        self.settings = settings
        self._stored = refusals
        self.client: NeoAPI | None = None
        self.generation = 0  # bumped by every successful login
        self._login_lock = asyncio.Lock()
        self._last_totp_step = -1  # the TOTP time step whose code last logged in (Kotak refuses it again)
        self._failures = 0  # failed logins in a row (backoff)
        # Logins Kotak refused since the last that succeeded, whatever failed between them: Kotak counts every wrong
        # MPIN toward locking the account, not a run of them, so a gateway blip between two must not reset this.
        self._refusals = 0
        # Of those, the ones the database could not record (RefusalStore.add failed): the stored count plus these is
        # what Kotak has seen, so a database that answers reads but not writes never lowers the guard.
        self._unrecorded = 0
        self._stored_count = 0  # the stored count the last check read: a login that works clears it only if any
        self._retry_at = 0.0  # time.monotonic() before which no login is tried
        # Why the lost session cannot be renewed, and the fix: Kotak refused a re-login, then automatic login stopped.
        # "" while logins work. Meanwhile no order update, fill or position comes from Kotak: the OMS tells the
        # trader from it (KotakBroker.login_trouble).
        self.login_trouble = ""
        self._last_error: NeoPulseError | None = None
        self._requests = RateLimiter(settings.requests_per_second)
        self._orders = RateLimiter(settings.orders_per_second)

    def __repr__(self) -> str:
        return f"KotakSession(ucc={self.settings.ucc!r}, generation={self.generation})"

    def scrub(self, text: str) -> str:
        """Text with every configured secret and the live session tokens replaced by ***."""
        secrets = self.settings.secret_values()
        if self.client is not None:
            conf = self.client.configuration
            secrets += [s for s in (conf.edit_token, conf.edit_sid, conf.view_token, conf.sid) if s]
        for value in secrets:
            text = text.replace(value, "***")
        return text

    # login -------------------------------------------------------------------------
    async def login(self) -> None:
        """Log in (TOTP, then MPIN). Raises ConfigError for refused credentials, RetryableError if unreachable."""
        async with self._login_lock:
            await self._login_locked()

    async def login_at_start(self) -> None:
        """login(), tried again while Kotak cannot be reached (RetryableError), each after the backoff the failure
        set, for at most [kotak] start_login_wait_s; refused credentials (ConfigError) end it at once."""
        deadline = time.monotonic() + self.settings.start_login_wait_s
        while True:
            try:
                await self.login()
                return
            except RetryableError as exc:
                wait = max(self._retry_at - time.monotonic(), 0.05)
                if time.monotonic() + wait > deadline:
                    raise RetryableError(f"Kotak could not be reached for a login within start_login_wait_s "
                                         f"({self.settings.start_login_wait_s:g} s): {exc}") from None
                log.warning("kotak not reached at start; trying again", extra={"error": str(exc),
                                                                                "retry_in_s": round(wait, 1)})
                await asyncio.sleep(wait)

    async def relogin(self, seen_generation: int) -> None:
        """Log in again unless another caller already did since `seen_generation`."""
        async with self._login_lock:
            if self.generation == seen_generation:
                log.warning("kotak session expired; logging in again", extra={"ucc": self.settings.ucc})
                await self._login_locked()

    async def _login_locked(self) -> None:
        """One login attempt, unless a recent failure's backoff or the refusal limit forbids it (no hot loop)."""
        if not self.settings.has_credentials:
            raise ConfigError("[kotak] credentials are incomplete: set consumer_key, mobile, ucc, mpin and "
                              "totp_secret (env NEOPULSE_KOTAK_*)")
        self._check_backoff()
        await self._check_stored_refusals()
        try:
            client = await self._login_with_fresh_totp()
        except NeoPulseError as exc:
            await self._count_refusal(exc)
            self._note_failure(exc)
            raise
        self._failures = self._refusals = self._unrecorded = 0
        if self.login_trouble:
            log.warning("kotak login restored: order updates, fills and positions come from Kotak again",
                        extra={"ucc": self.settings.ucc})
            self.login_trouble = ""
        self.client = client
        self.generation += 1
        conf = client.configuration  # the session's tokens: masked in every log line from now on
        logs.add_secrets(*(s for s in (conf.edit_token, conf.edit_sid, conf.view_token, conf.sid) if s))
        log.info("kotak login succeeded", extra={"ucc": self.settings.ucc, "generation": self.generation})
        if self._stored is not None and self._stored_count:  # after the session is in use: orders need not wait
            self._stored_count = 0
            await self._stored.clear()

    def _check_backoff(self) -> None:
        last = self._last_error
        if last is None:
            return
        if self._refusals >= self.settings.login_max_refusals:
            raise ConfigError(f"Kotak refused the last {self._refusals} logins ({last}); automatic login stopped "
                              "so the account is not locked: fix [kotak] mpin/totp_secret, then restart")
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            kind = ConfigError if isinstance(last, ConfigError) else RetryableError
            raise kind(f"{last}; next login attempt in {wait:.0f} s")

    async def _check_stored_refusals(self) -> None:
        """Nothing is sent to Kotak once the refusals counted for these credentials, by every process and start
        before this one, reach login_max_refusals: a restart (Docker's restart policy, systemd, the trader) must not
        send the wrong MPIN again."""
        if self._stored is None:
            return
        stored = await self._stored.read()
        if stored is None:  # the database failed (logged): this process's own count still guards
            return
        self._stored_count = stored.count
        # Never lower the guard: the stored count plus what this process could not record, or its own, if more.
        self._refusals = max(self._refusals, stored.count + self._unrecorded)
        if self._refusals < self.settings.login_max_refusals:
            return
        message = _stored_limit_message(Refusals(self._refusals, stored.last_at, stored.last_reason))
        if self.generation:  # a session that worked is lost: the OMS tells the trader from this
            self.login_trouble = message
        raise ConfigError(message)

    async def _count_refusal(self, exc: NeoPulseError) -> None:
        """A refused login counts toward the limit until a login succeeds; one Kotak refused also in the database,
        for the processes and restarts to come."""
        if not isinstance(exc, ConfigError):
            return
        self._refusals += 1
        if self._stored is not None and isinstance(exc, _Refused):
            count = await self._stored.add(self.scrub(str(exc))[:300])
            if count is None:  # not recorded (logged): counted here, on top of what the database holds
                self._unrecorded += 1
            else:
                self._stored_count = count
                self._refusals = max(self._refusals, count + self._unrecorded)

    def _note_failure(self, exc: NeoPulseError) -> None:
        self._failures += 1
        s = self.settings
        refused = isinstance(exc, ConfigError)
        if refused:  # Kotak said no: slow, an account locks after a few wrong MPINs
            backoff = min(s.login_backoff_initial_s * 2 ** (self._refusals - 1), s.login_backoff_max_s)
        else:  # Kotak not reached: as a feed reconnects, so orders are not held up long by a blip
            backoff = min(s.reconnect_initial_s * 2 ** (self._failures - 1), s.reconnect_max_s)
        self._retry_at = time.monotonic() + backoff
        self._last_error = exc
        if refused and self.generation:  # a session that worked is lost (at start, the refused start says so)
            self._note_refused_relogin(exc, backoff)
        else:
            log.warning("kotak login failed", extra={"error": str(exc), "retry_in_s": backoff})

    def _note_refused_relogin(self, exc: NeoPulseError, backoff: float) -> None:
        """Loud: until a login succeeds, nothing comes from Kotak (order updates, fills, positions), while stops and
        targets working there may fill."""
        left = self.settings.login_max_refusals - self._refusals
        if left > 0:
            self.login_trouble = (f"Kotak refused the login ({exc}); no order updates, fills or positions from Kotak "
                                  f"until one succeeds; next attempt in {backoff:g} s, {left} more before automatic "
                                  "login stops: fix [kotak] mpin/totp_secret now")
        else:
            self.login_trouble = (f"Kotak refused the last {self._refusals} logins ({exc}); automatic login stopped so "
                                  "the account is not locked: no order updates, fills or positions from Kotak from now "
                                  "on; manage open orders and positions in the Neo app, fix [kotak] mpin/totp_secret, "
                                  "then restart NeoPulse")
        log.critical("kotak refused the re-login", extra={"trouble": self.login_trouble, "retry_in_s": backoff,
                                                          "attempts_left": max(left, 0)})

    async def _login_with_fresh_totp(self) -> NeoAPI:
        """Kotak refuses a TOTP code that already logged in, in the words it uses for a wrong one ("Invalid TOTP"),
        and the login that used it may be another process's (the one before a restart): a TOTP step refused at the
        first try waits for the next code and tries once more; only a second refusal is the credentials'."""
        s = self.settings
        if not s.totp_secret.get_secret_value():
            if self._last_totp_step >= 0:
                raise ConfigError("Kotak session expired and [kotak] totp is a one-time code that was used: set "
                                  "[kotak] totp_secret (the TOTP seed) so NeoPulse can log in again")
            return await asyncio.to_thread(self._login_sync, s.totp.get_secret_value(), 0)
        totp = s.totp_codes()
        step = totp.timecode(datetime.now(UTC))
        try:
            return await asyncio.to_thread(self._login_sync, totp.at(step * s.totp_interval_s), step)
        except _TotpRefused as exc:
            wait = (step + 1) * s.totp_interval_s - time.time() + 0.05
            log.warning("kotak refused the TOTP code (used by an earlier login, or wrong); trying the next code once",
                        extra={"error": str(exc), "retry_in_s": round(wait, 1)})
            await asyncio.sleep(wait)
        step = totp.timecode(datetime.now(UTC))
        return await asyncio.to_thread(self._login_sync, totp.at(step * s.totp_interval_s), step)

    def _login_sync(self, code: str, step: int) -> NeoAPI:
        s = self.settings
        client = NeoAPI(consumer_key=s.consumer_key.get_secret_value(), environment=s.environment,
                        transport=s.transport(), timeout=s.request_timeout_s)
        try:
            step1 = client.totp_login(mobile_number=s.mobile.get_secret_value(), ucc=s.ucc, totp=code)
            self._check_login(step1, "TOTP login")
            self._last_totp_step = step  # Kotak took the code: it will not take it again, whatever the MPIN does
            step2 = client.totp_validate(mpin=s.mpin.get_secret_value())
        except ApiException as exc:  # the SDK raises (not answers) a timeout or refused connection at login
            raise RetryableError(f"Kotak login failed: {self.scrub(str(exc.reason))}; check the network "
                                 "and retry") from None
        self._check_login(step2, "MPIN validate")
        return client

    def _check_login(self, reply: Any, step: str) -> None:
        data = reply.get("data") if isinstance(reply, dict) else None
        if isinstance(data, dict) and data.get("token"):
            return
        if mapping.throttled(reply):  # over Kotak's rate limit: it took nothing, and said nothing of the credentials
            raise RetryableError(f"Kotak {step} throttled (429: over its rate limit); retry shortly")
        error = mapping.reply_error(reply) or ("refused", "no token in the reply")
        if isinstance(reply, dict) and isinstance(reply.get("Error"), str):
            error = ("unknown", reply["Error"])  # the SDK's own "not JSON" answer: a gateway page, not Kotak's no
        text = self.scrub(error[1])
        if error[0] == "unknown":
            raise RetryableError(f"Kotak {step} failed: {text}; check the network and retry")
        kind = _TotpRefused if step == "TOTP login" else _Refused
        raise kind(f"Kotak {step} refused: {text}; check [kotak] mobile/ucc/mpin/totp_secret")

    # calls -------------------------------------------------------------------------
    async def call(self, method: str, *args: Any, is_order: bool = False,
                   before_retry: Callable[[str], None] | None = None, **kwargs: Any) -> Any:
        """NeoAPI.<method>(...) off the loop; on a session-expired reply, re-login once and retry once; a call Kotak
        throttled (429) is made again after a wait (_through_throttling). `before_retry(why)` runs before
        the call is made again and may raise to not make it (a re-login can take a TOTP step, 30 s: an order may
        have gone stale meanwhile). An order call whose re-login fails, or that Kotak refuses again after it, raises
        NotSent: Kotak refused it, so it is certainly not placed (nothing to look up)."""
        if self.client is None:
            await self.relogin(self.generation)
        generation = self.generation
        reply = await self._invoke(method, is_order, *args, **kwargs)
        if mapping.is_session_expired(reply):
            try:
                await self.relogin(generation)
            except NeoPulseError as exc:
                if not is_order:
                    raise
                raise NotSent(f"Kotak {method}: not sent: refused for an expired session, and logging in again "
                              f"failed: {exc}") from exc
            if before_retry is not None:
                before_retry("Kotak refused it for an expired session")
            reply = await self._invoke(method, is_order, *args, **kwargs)
            if mapping.is_session_expired(reply):
                if is_order:  # refused twice, so certainly not done: nothing to look up
                    raise NotSent(f"Kotak {method}: not sent: refused for an expired session, and again after "
                                  "a fresh login; place it again once Kotak answers reads")
                raise SessionExpired(f"Kotak {method}: session still invalid after logging in again")
        if mapping.throttled(reply):
            reply = await self._through_throttling(method, is_order, reply, before_retry, *args, **kwargs)
        return reply

    async def _through_throttling(self, method: str, is_order: bool, reply: Any,
                                  before_retry: Callable[[str], None] | None, *args: Any, **kwargs: Any) -> Any:
        """A call Kotak throttled took nothing there: made again after throttle_backoff_s (doubling), at most
        throttle_retries times, with every call of its kind (order requests, or reads) held back meanwhile. Raises
        NotSent for an order request that stays throttled, RetryableError for a read (the book's lookups: an order's
        outcome is not given up on a 429; a poll comes again anyway)."""
        s = self.settings
        limiter, what = (self._orders, "an order request") if is_order else (self._requests, "a read")
        for attempt in range(s.throttle_retries):
            wait = s.throttle_backoff_s * 2 ** attempt
            THROTTLED.labels(method).inc()
            log.warning(f"kotak throttled {what} (429); making it again", extra={
                "method": method, "retry_in_s": wait, "attempt": attempt + 1})
            limiter.hold(wait)
            await asyncio.sleep(wait)
            if before_retry is not None:
                before_retry("Kotak throttled it (429: over its rate limit)")
            reply = await self._invoke(method, is_order, *args, **kwargs)
            if not mapping.throttled(reply):
                return reply
        THROTTLED.labels(method).inc()
        if not is_order:
            raise RetryableError(f"Kotak {method}: throttled (429: over its rate limit) {s.throttle_retries + 1} "
                                 f"times; [kotak] requests_per_second is {s.requests_per_second:g}; retry later")
        raise NotSent(f"Kotak {method}: not sent: Kotak throttled it (429: over its rate limit) "
                      f"{s.throttle_retries + 1} times; [kotak] orders_per_second is {s.orders_per_second:g}, and "
                      "another app on the account counts too")

    async def _invoke(self, method: str, is_order: bool, *args: Any, **kwargs: Any) -> Any:
        await (self._orders if is_order else self._requests).acquire()
        fn = getattr(self.client, method)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def download(self, url: str) -> str:
        """A file the API points at (scrip master CSV), through the same transport as the SDK."""
        def get() -> str:
            with httpx.Client(transport=self.settings.transport(), timeout=self.settings.request_timeout_s,
                              follow_redirects=True) as http:
                reply = http.get(url)
                reply.raise_for_status()
                return reply.text
        try:
            return await asyncio.to_thread(get)
        except httpx.HTTPError as exc:
            raise RetryableError(f"scrip master download failed ({type(exc).__name__}); retry later") from None

    async def scrip_master(self, segments: tuple[str, ...] = ("nse_cm",)) -> list:
        """The instruments of the scrip-master files for `segments` (list of market_pb2.Instrument)."""
        return (await self.dated_scrip_master(segments)).instruments

    async def dated_scrip_master(self, segments: tuple[str, ...] = ("nse_cm",)) -> ScripMaster:
        """scrip_master(), and the day of the files read. RetryableError when Kotak did not give them (a 5xx, a
        timeout, a failed download): the same call may succeed later."""
        reply = await self.call("scrip_master")
        if mapping.reply_error(reply) is not None or not isinstance(reply, dict):
            raise RetryableError(f"Kotak scrip_master failed: {self.scrub(str(reply))[:200]}; retry later")
        paths = [url for url in reply.get("filesPaths") or [] if any(seg in url.lower() for seg in segments)]
        out = []
        for url in paths:  # parsed off the event loop: ~100,000 rows held risk, the OMS and the strategies for seconds
            out += await asyncio.to_thread(mapping.instruments_from_csv, await self.download(url))
        return ScripMaster(out, files_day(paths))

    # feeds -------------------------------------------------------------------------
    def websocket(self, **kwargs: Any):
        """A new SDK SFeedWebSocket for the current session (not connected)."""
        assert self.client is not None, "log in first"
        url = self.settings.resolved_feed_url()
        return self.client.create_websocket(url=url, **kwargs) if url else self.client.create_websocket(**kwargs)

    def order_feed(self, **kwargs: Any):
        """A new SDK OrderFeedWebSocket for the current session (not connected)."""
        assert self.client is not None, "log in first"
        url = self.settings.resolved_order_feed_url()
        return self.client.create_order_feed(url=url, **kwargs) if url else self.client.create_order_feed(**kwargs)


class ScripMaster(NamedTuple):
    instruments: list  # of market_pb2.Instrument
    day: date | None  # files_day of the files read


def files_day(paths: list[str]) -> date | None:
    """The day of Kotak's scrip-master files: the date folder it publishes each day's under (".../prod/2026-07-14/
    transformed/nse_fo.csv"), the oldest if they differ; None when no path names one (a stand-in's)."""
    days = []
    for url in paths:
        for folder in _DAY_FOLDER.findall(urlsplit(url).path):
            with contextlib.suppress(ValueError):  # 2026-13-45 names no day
                days.append(date.fromisoformat(folder))
    return min(days, default=None)


def _stored_limit_message(stored: Refusals) -> str:
    """Why no login is sent, and the two ways on: other credentials (their count starts from 0), or the operator's
    word that these are right."""
    when = f" at {stored.last_at.astimezone(IST):%Y-%m-%d %H:%M:%S} IST" if stored.last_at else ""
    return (f"Kotak refused the last {stored.count} logins with these [kotak] credentials (the last{when}: "
            f"{stored.last_reason}); NeoPulse will not send them again, so that Kotak does not lock the account (it "
            "locks it after a few wrong MPINs). Fix [kotak] mpin/totp_secret (changed credentials start from 0), or, "
            "once you have checked them in the Neo app, clear the count: neopulse db kotak-logins --reset")
