"""KotakSession's login refusals and a re-sent order Kotak refuses again, through the real SDK against the
simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from services.simulator.rest import INVALID_CREDENTIALS
from services.simulator.server import SimCredentials
from shared.errors import ConfigError, NeoPulseError, NotSent
from shared.kotak import mapping
from shared.kotak.broker import KotakBroker
from tests.kotak.conftest import settings_for
from tests.kotak.test_broker import market_buy


async def test_a_gateway_blip_between_refused_logins_does_not_let_more_wrong_mpins_reach_kotak(sim):
    """Kotak locks the account after a few wrong MPINs in all, not in a row: a 504 between two is no reset."""
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=0.01, login_backoff_max_s=0.01,
                                      reconnect_initial_s=0.01, reconnect_max_s=0.01))
    await broker.start()
    sim.creds = dataclasses.replace(sim.creds, mpin="111111")  # changed in the Neo app mid-day
    sim.expire_session()
    for attempt in range(8):
        if attempt % 2:
            sim.fail_next("totp_login", status=504, body={"message": "Gateway Timeout"})
        with pytest.raises(NeoPulseError):
            await broker.limits()
        await asyncio.sleep(0.03)  # past each backoff: only the refusal limit can stop the next attempt

    assert sim.calls["totp_validate"] - 1 == broker.settings.login_max_refusals  # after the start-up login


async def test_an_order_kotak_refuses_again_after_a_fresh_login_is_not_sent(sim, broker):
    """Refused for an expired session twice: certainly not placed, so not an unknown outcome to look up."""
    sim.expire_session()

    def expired_again(why: str) -> None:  # the re-sent order meets an expired session too
        sim.fail_next("place_order", status=401, body=INVALID_CREDENTIALS)

    with pytest.raises(NotSent, match="again after a fresh login"):
        await broker.session.call("place_order", is_order=True, before_retry=expired_again,
                                  **mapping.place_params(market_buy("r6-twice")))


async def test_a_refused_relogin_is_logged_critical_and_left_for_the_oms_to_tell(sim, broker, caplog):
    """Until a login succeeds no order update, fill or position comes from Kotak: a warning in the log is not enough."""
    sim.creds = dataclasses.replace(sim.creds, mpin="111111")
    sim.expire_session()

    with caplog.at_level(logging.CRITICAL, logger="shared.kotak.session"), pytest.raises(ConfigError):
        await broker.limits()

    assert (broker.login_trouble.startswith("Kotak refused the login"),
            [r.levelname for r in caplog.records if "re-login" in r.getMessage()]) == (True, ["CRITICAL"])


async def test_automatic_login_stopping_says_so_with_the_fix(sim):
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=0.01, login_backoff_max_s=0.01))
    await broker.start()
    sim.creds = dataclasses.replace(sim.creds, mpin="111111")
    sim.expire_session()
    for _ in range(broker.settings.login_max_refusals):
        with pytest.raises(ConfigError):
            await broker.limits()
        await asyncio.sleep(0.02)

    assert "automatic login stopped" in broker.login_trouble and "then restart NeoPulse" in broker.login_trouble


async def test_a_login_that_succeeds_again_clears_the_trouble(sim):
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=0.01, login_backoff_max_s=0.01))
    await broker.start()
    sim.creds = dataclasses.replace(sim.creds, mpin="111111")
    sim.expire_session()
    with pytest.raises(ConfigError):
        await broker.limits()
    sim.creds = dataclasses.replace(sim.creds, mpin=SimCredentials().mpin)  # fixed in the Neo app
    await asyncio.sleep(0.02)

    await broker.limits()

    assert broker.login_trouble == ""
