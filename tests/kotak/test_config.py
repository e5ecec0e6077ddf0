"""KotakSettings: [kotak] table + NEOPULSE_KOTAK_* env, secrets hidden, feed URLs derived from base_url."""

from __future__ import annotations

from shared import config as cfg
from shared.kotak.config import KotakSettings, KotakTransport, RewriteTransport


def test_env_overrides_the_toml_and_secrets_stay_hidden(monkeypatch):
    monkeypatch.setenv("NEOPULSE_KOTAK_MPIN", "112233")
    settings = cfg.load(KotakSettings, {"kotak": {"consumer_key": "ck-abcdef", "mobile": "+919800000000",
                                                  "ucc": "AB123", "mpin": "999999", "totp_secret": "S" * 32}})
    assert settings.mpin.get_secret_value() == "112233"
    assert settings.has_credentials
    assert "112233" not in repr(settings) and "ck-abcdef" not in repr(settings)


def test_missing_totp_means_no_credentials():
    settings = cfg.load(KotakSettings, {}, consumer_key="ck", mobile="+91", ucc="U", mpin="1")
    assert not settings.has_credentials


def test_base_url_gives_the_feed_urls_and_a_rewriting_transport():
    settings = cfg.load(KotakSettings, {}, base_url="http://127.0.0.1:8765")
    assert (settings.resolved_feed_url(), settings.resolved_order_feed_url()) == (
        "ws://127.0.0.1:8765/feed", "ws://127.0.0.1:8765/orders")
    assert isinstance(settings.transport(), RewriteTransport)
    # Kotak's own host: the transport that reads a 429 page as Kotak's 429, with the SDK's HTTP/2 and pool limits
    # (which the SDK leaves to a transport it is given).
    kotak = cfg.load(KotakSettings, {}).transport()
    assert type(kotak) is KotakTransport and kotak._pool._http2 and kotak._pool._max_connections == 20
