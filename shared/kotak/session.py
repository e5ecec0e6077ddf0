"""The Kotak Neo SDK session: TOTP + MPIN login, rate limits, and re-login once when a reply says the session expired.

Every SDK call runs in a worker thread (asyncio.to_thread); used by KotakBroker and KotakFeedSource.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pyotp
from neo_api_client import NeoAPI

from shared import logs
from shared.errors import ConfigError, RetryableError, SessionExpired
from shared.kotak import mapping
from shared.kotak.config import KotakSettings

log = logging.getLogger(__name__)


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


class KotakSession:
    """One logged-in NeoAPI client; `call` is the only way SDK REST methods are invoked."""

    def __init__(self, settings: KotakSettings) -> None:
        self.settings = settings
        self.client: NeoAPI | None = None
        self.generation = 0  # bumped by every successful login
        self._login_lock = asyncio.Lock()
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
        if not self.settings.has_credentials:
            raise ConfigError("[kotak] credentials are incomplete: set consumer_key, mobile, ucc, mpin and "
                              "totp_secret (env NEOPULSE_KOTAK_*)")
        self.client = await asyncio.to_thread(self._login_sync)
        self.generation += 1
        conf = self.client.configuration  # the session's tokens: masked in every log line from now on
        logs.add_secrets(*(s for s in (conf.edit_token, conf.edit_sid, conf.view_token, conf.sid) if s))
        log.info("kotak login succeeded", extra={"ucc": self.settings.ucc, "generation": self.generation})

    def _totp(self) -> str:
        secret = self.settings.totp_secret.get_secret_value()
        return pyotp.TOTP(secret).now() if secret else self.settings.totp.get_secret_value()

    def _login_sync(self) -> NeoAPI:
        s = self.settings
        client = NeoAPI(consumer_key=s.consumer_key.get_secret_value(), environment=s.environment,
                        transport=s.transport(), timeout=s.request_timeout_s)
        step1 = client.totp_login(mobile_number=s.mobile.get_secret_value(), ucc=s.ucc, totp=self._totp())
        self._check_login(step1, "TOTP login")
        step2 = client.totp_validate(mpin=s.mpin.get_secret_value())
        self._check_login(step2, "MPIN validate")
        return client

    def _check_login(self, reply: Any, step: str) -> None:
        data = reply.get("data") if isinstance(reply, dict) else None
        if isinstance(data, dict) and data.get("token"):
            return
        error = mapping.reply_error(reply) or ("refused", "no token in the reply")
        text = self.scrub(error[1])
        if error[0] == "unknown":
            raise RetryableError(f"Kotak {step} failed: {text}; check the network and retry")
        raise ConfigError(f"Kotak {step} refused: {text}; check [kotak] mobile/ucc/mpin/totp_secret")

    async def relogin(self, seen_generation: int) -> None:
        """Log in again unless another caller already did since `seen_generation`."""
        async with self._login_lock:
            if self.generation == seen_generation:
                log.warning("kotak session expired; logging in again", extra={"ucc": self.settings.ucc})
                await self.login()

    # calls -------------------------------------------------------------------------
    async def call(self, method: str, *args: Any, is_order: bool = False, **kwargs: Any) -> Any:
        """NeoAPI.<method>(...) off the loop; on a session-expired reply, re-login once and retry once."""
        if self.client is None:
            await self.relogin(self.generation)
        generation = self.generation
        reply = await self._invoke(method, is_order, *args, **kwargs)
        if mapping.is_session_expired(reply):
            await self.relogin(generation)
            reply = await self._invoke(method, is_order, *args, **kwargs)
            if mapping.is_session_expired(reply):
                raise SessionExpired(f"Kotak {method}: session still invalid after logging in again")
        return reply

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
        reply = await self.call("scrip_master")
        if mapping.reply_error(reply) is not None or not isinstance(reply, dict):
            raise RetryableError(f"Kotak scrip_master failed: {self.scrub(str(reply))[:200]}; retry later")
        out = []
        for url in reply.get("filesPaths") or []:
            if any(seg in url.lower() for seg in segments):
                out += mapping.instruments_from_csv(await self.download(url))
        return out

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
