"""[kotak] totp_secret as people paste it: an authenticator app's groups of four in lower case are taken, and text
that is not a base32 seed stops the start with one line naming the setting, never at the first login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from shared import config as cfg
from shared.errors import ConfigError
from shared.kotak.broker import KotakBroker
from shared.kotak.config import KotakSettings
from tests.kotak.conftest import settings_for


async def test_a_seed_pasted_in_lower_case_groups_of_four_logs_in(sim):
    seed = sim.creds.totp_secret
    pasted = " ".join(seed[i:i + 4] for i in range(0, len(seed), 4)).lower()
    broker = KotakBroker(settings_for(sim, totp_secret=pasted))

    await broker.start()

    assert sim.logins == 1


def authenticator_code(seed: str, unix_time: int, period: int = 30) -> str:
    """RFC 6238's code as an authenticator app computes it (not with pyotp, whose seed rules are under test)."""
    key = base64.b32decode(seed + "=" * (-len(seed) % 8))
    digest = hmac.new(key, struct.pack(">Q", unix_time // period), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


def test_a_16_character_seed_gives_the_codes_an_authenticator_app_shows():
    """80-bit seeds are common; pyotp refuses seeds under 112 bits unless told the seed is not ours to choose."""
    settings = cfg.load(KotakSettings, {}, totp_secret="jbsw y3dp ehpk 3pxp")

    code = settings.totp_codes().at(1_764_049_500)

    assert code == authenticator_code("JBSWY3DPEHPK3PXP", 1_764_049_500)


@pytest.mark.parametrize("seed", ["JBSWY3DPEHPK3PXP18", "123456", "JBSWY3DPE"])
def test_a_totp_secret_that_is_not_base32_is_a_config_error_that_does_not_echo_it(monkeypatch, seed):
    monkeypatch.setenv("NEOPULSE_KOTAK_TOTP_SECRET", seed)

    with pytest.raises(ConfigError, match=r"\[kotak\]\.totp_secret .*not a base32 TOTP seed") as err:
        cfg.load(KotakSettings, {})

    assert seed not in str(err.value)
