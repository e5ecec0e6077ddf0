"""Kotak Neo settings ([kotak], env NEOPULSE_KOTAK_*) and the httpx transport that points the SDK elsewhere.

Read by shared/kotak/session.py; secrets are SecretStr and never leave this object in clear.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pyotp
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import ModuleSettings

# What the bundled simulator (services/simulator) accepts at login. Test values, not real credentials.
SIMULATOR_CREDENTIALS = {"consumer_key": "sim-consumer-key", "mobile": "+919999999999", "ucc": "SIMUC1",
                         "mpin": "654321", "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}


class KotakSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="NEOPULSE_KOTAK_", extra="forbid", validate_default=True)
    section = "kotak"

    consumer_key: SecretStr = SecretStr("")
    mobile: SecretStr = SecretStr("")
    ucc: str = ""
    mpin: SecretStr = SecretStr("")
    # Base32 TOTP seed (preferred: logins and re-logins need no human); or a one-time 6-digit code.
    totp_secret: SecretStr = SecretStr("")
    totp: SecretStr = SecretStr("")
    # The period of the TOTP seed's codes (Kotak's: 30 s); a code that logged in once is refused after that.
    totp_interval_s: int = Field(default=30, ge=1)
    environment: Literal["prod", "uat"] = "prod"
    # When set (e.g. the simulator, http://127.0.0.1:8765), every REST call is rewritten to this host
    # and the feeds default to ws://<host>/feed and ws://<host>/orders.
    base_url: str = ""
    feed_url: str = ""
    order_feed_url: str = ""
    request_timeout_s: float = Field(default=10.0, gt=0)
    # Kotak's documented limits are per second; stay under them.
    orders_per_second: float = Field(default=8.0, gt=0)
    requests_per_second: float = Field(default=15.0, gt=0)
    # An order request (place, modify, cancel) Kotak throttled (HTTP 429: another app on the account, or limits
    # lower than ours) reached nothing: it is sent again after throttle_backoff_s, doubling, at most
    # throttle_retries times (a placement only while its signal is fresh: [oms] max_decision_age_s). The order
    # limiter is held for every order request meanwhile. Then it is not sent (NOT_SENT).
    throttle_retries: int = Field(default=2, ge=0, le=5)
    throttle_backoff_s: float = Field(default=1.0, gt=0, le=10)
    # Order-book polling that fills the order feed's gaps.
    poll_interval_s: float = Field(default=2.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # After a login Kotak refused, no new attempt for this long, doubling per refusal up to the max (no hot loop;
    # a login that could not reach Kotak waits reconnect_initial_s, doubling up to reconnect_max_s); after
    # login_max_refusals refusals since the last login that worked (wrong MPIN/TOTP; whatever failed between them),
    # no login at all, at start or re-login, until the credentials change or `neopulse db kotak-logins --reset`
    # (counted in the database when there is one, so a restart sends nothing either): a changed MPIN cannot get the
    # account locked.
    login_backoff_initial_s: float = Field(default=30.0, gt=0)
    login_backoff_max_s: float = Field(default=600.0, gt=0)
    login_max_refusals: int = Field(default=3, ge=1)
    # At start, a Kotak that cannot be reached (network, 5xx, 429) is tried again for this long before NeoPulse gives
    # up with one line saying why (exit 1): a gateway blip at 09:14 must not leave the day unstarted.
    start_login_wait_s: float = Field(default=120.0, ge=0)

    @field_validator("totp_secret")
    @classmethod
    def _base32_seed(cls, value: SecretStr) -> SecretStr:
        """The seed as authenticator apps show it (groups of four, lower case) is taken; one that is not base32
        would otherwise fail only at the first login, inside pyotp. The message never holds the value."""
        seed = "".join(value.get_secret_value().split()).upper()
        if seed:
            try:
                _SeedTotp(seed)
            except ValueError:  # binascii.Error
                raise ValueError("is not a base32 TOTP seed (letters A-Z and digits 2-7, as Kotak showed it when "
                                 "TOTP was set up); a one-time 6-digit code goes in totp instead") from None
        return SecretStr(seed)

    @property
    def has_credentials(self) -> bool:
        return not self.missing_credentials()

    def missing_credentials(self) -> list[str]:
        """The environment variables of the login's credentials that are not set (names, never values)."""
        given = {"CONSUMER_KEY": self.consumer_key.get_secret_value(), "MOBILE": self.mobile.get_secret_value(),
                 "UCC": self.ucc, "MPIN": self.mpin.get_secret_value(),
                 "TOTP_SECRET": self.totp_secret.get_secret_value() or self.totp.get_secret_value()}
        return [f"NEOPULSE_KOTAK_{name}" for name, value in given.items() if not value]

    def for_simulator(self, base_url: str) -> KotakSettings:
        """These settings pointed at a simulator at base_url, with the simulator's login (rates and timeouts kept)."""
        c = SIMULATOR_CREDENTIALS
        return self.model_copy(update={
            "consumer_key": SecretStr(c["consumer_key"]), "mobile": SecretStr(c["mobile"]), "ucc": c["ucc"],
            "mpin": SecretStr(c["mpin"]), "totp_secret": SecretStr(c["totp_secret"]), "totp": SecretStr(""),
            "base_url": base_url, "feed_url": "", "order_feed_url": "", "environment": "prod"})

    def totp_codes(self) -> pyotp.TOTP:
        """The codes of totp_secret, one per totp_interval_s."""
        return _SeedTotp(self.totp_secret.get_secret_value(), interval=self.totp_interval_s)

    def secret_values(self) -> list[str]:
        """The clear secrets, for scrubbing text before it is logged or raised."""
        values = (self.consumer_key, self.mobile, self.mpin, self.totp_secret, self.totp)
        return [v.get_secret_value() for v in values if len(v.get_secret_value()) >= 4]

    def transport(self) -> httpx.BaseTransport:
        return RewriteTransport(self.base_url) if self.base_url else KotakTransport()

    def resolved_feed_url(self) -> str | None:
        return self.feed_url or (_ws_url(self.base_url, "/feed") if self.base_url else None)

    def resolved_order_feed_url(self) -> str | None:
        return self.order_feed_url or (_ws_url(self.base_url, "/orders") if self.base_url else None)


class _SeedTotp(pyotp.TOTP):
    """pyotp refuses a seed under 112 bits, NIST's advice to whoever issues seeds; the seed is Kotak's, and 80-bit
    seeds (16 characters) are common and taken by every authenticator app."""

    min_secret_length_bits = 0


def _ws_url(base_url: str, path: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"


# The key KotakTransport adds to a 5xx reply's body with the HTTP status, which the SDK does not hand over.
HTTP_STATUS = "httpStatus"


class KotakTransport(httpx.HTTPTransport):
    """The SDK's transport. The SDK hands over a reply's JSON whatever its HTTP status, so the status is lost; two
    kinds are marked here for mapping.reply_error:
    - An HTTP 429 whose body is not JSON (a gateway's HTML page) is given Kotak's own 429 body, {"code": 429,
      "error": "Rate limit exceeded", ...}: a request that took nothing and may go again (mapping.throttled), not
      an undecodable reply.
    - An HTTP 5xx (Kotak's 500, 502 "Not able to communicate with OMS", 503, 504 "Gateway timeout") carries its
      status in the body as "httpStatus" (a body that is not a JSON object becomes {"httpStatus", "error",
      "message"}): the call may have been made or not, an unknown outcome, whatever the body says. Read as Kotak's
      no, an order it placed would be booked as rejected, and its fills dropped.
    HTTP/2 and the pool's limits are the SDK's own (it leaves them to a transport it is given)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("http2", True)
        kwargs.setdefault("limits", httpx.Limits(max_connections=20, max_keepalive_connections=10))
        super().__init__(**kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        status = response.status_code
        if status != 429 and status < 500:
            return response
        response.read()
        try:
            body = json.loads(response.content)
        except ValueError:  # not JSON, or not text (UnicodeDecodeError)
            body = None
        if status == 429 and body is not None:
            return response
        text = response.content.decode("utf-8", "replace")[:200]
        response.close()
        if status == 429:
            body = {"code": 429, "error": "Rate limit exceeded", "message": text}
        elif isinstance(body, dict):
            body = {**body, HTTP_STATUS: status}
        else:
            body = {HTTP_STATUS: status, "error": f"HTTP {status}", "message": text}
        return httpx.Response(status, json=body, request=request)


class RewriteTransport(KotakTransport):
    """Sends every request to one base URL, keeping path and query (login, config service, REST, scrip files)."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urlsplit(base_url)
        self._scheme = parts.scheme or "http"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self._scheme, host=self._host, port=self._port)
        request.headers["Host"] = f"{self._host}:{self._port}" if self._port else self._host
        return super().handle_request(request)
