"""KotakSession under the session failures of a trading day, through the real SDK against the simulator:
expiry mid-day, a re-login inside the TOTP step of the last login, refused or unreachable logins."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time

import pytest

from services.simulator.server import SimCredentials, Simulator
from shared.errors import ConfigError, NeoPulseError, NotSent, RetryableError
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually
from tests.kotak.conftest import settings_for
from tests.kotak.test_broker import market_buy

STEP_S = 2  # a short TOTP period (simulator and client agree on it) so a test waits at most one step


@pytest.fixture
async def strict_sim() -> Simulator:
    """A simulator that, like Kotak, refuses a TOTP that already logged in, with a 2 s TOTP period."""
    simulator = Simulator(tick_interval=None, credentials=SimCredentials(totp_interval_s=STEP_S))
    simulator.refuse_reused_totp = True
    await simulator.start()
    yield simulator
    await simulator.stop()


def secrets_of(sim: Simulator) -> tuple[str, ...]:
    c = sim.creds
    return c.consumer_key, c.mpin, c.totp_secret, c.mobile


def change_mpin(sim: Simulator, mpin: str) -> None:
    """What the account holder changing the MPIN in the Neo app looks like to a running NeoPulse."""
    sim.creds = dataclasses.replace(sim.creds, mpin=mpin)


async def test_a_relogin_in_the_same_totp_step_as_the_login_waits_for_the_next_code(strict_sim):
    broker = KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S))
    await broker.start()
    strict_sim.expire_session()

    limits = await broker.limits()

    assert (limits["net_paise"], strict_sim.logins) == (10_000_000_00, 2)


async def test_an_order_refused_for_an_expired_session_is_placed_once_after_the_relogin(strict_sim):
    broker = KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S))
    await broker.start()
    strict_sim.expire_session()

    ack = await broker.place_order(market_buy("coid-expired"))

    assert [(o.order_no, o.tag) for o in strict_sim.exchange.orders.values()] == [(ack.exchange_order_id,
                                                                                  "coid-expired")]
    assert (strict_sim.calls["place_order"], strict_sim.logins) == (2, 2)


def fresh_market_buy(coid: str, age_s: float = 0.0):
    """A strategy's order whose tick arrived `age_s` ago."""
    order = market_buy(coid)
    order.tick_recv_ns = time.time_ns() - int(age_s * 1e9)
    return order


async def test_an_order_gone_stale_while_the_session_was_renewed_is_not_sent_again(sim):
    broker = KotakBroker(settings_for(sim), max_order_age_s=1.0)
    await broker.start()
    sim.expire_session()
    sim.delay_next("totp_validate", 1.2)  # the re-login takes longer than the order may wait

    with pytest.raises(NotSent, match=r"not sent: .*expired session.* s old, more than \[oms\] max_decision_age_s 1 s"):
        await broker.place_order(fresh_market_buy("coid-stale", age_s=0.1))

    assert (sim.calls["place_order"], sim.logins, dict(sim.exchange.orders)) == (1, 2, {})


async def test_an_order_still_fresh_after_the_relogin_is_sent_again_once(sim):
    broker = KotakBroker(settings_for(sim), max_order_age_s=5.0)
    await broker.start()
    sim.expire_session()
    sim.delay_next("totp_validate", 0.2)

    ack = await broker.place_order(fresh_market_buy("coid-fresh", age_s=0.1))

    assert [(o.order_no, o.tag) for o in sim.exchange.orders.values()] == [(ack.exchange_order_id, "coid-fresh")]
    assert sim.calls["place_order"] == 2


async def test_an_order_refused_for_an_expired_session_that_cannot_be_renewed_is_not_sent(sim):
    """Kotak refused it, so it is certainly not placed: NotSent, not an unknown outcome to look up."""
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    change_mpin(sim, "111111")
    sim.expire_session()

    with pytest.raises(NotSent, match="not sent: refused for an expired session, and logging in again failed"):
        await broker.place_order(market_buy("coid-no-session"))

    assert (sim.calls["place_order"], sim.calls["order_book"], dict(sim.exchange.orders)) == (1, 0, {})
    with pytest.raises(ConfigError):  # a read is not an order: its refused re-login is the error
        await broker.limits()


async def test_concurrent_callers_of_an_expired_session_share_one_relogin(sim, broker):
    sim.expire_session()

    results = await asyncio.gather(*(broker.limits() for _ in range(5)))

    assert [r["net_paise"] for r in results] == [10_000_000_00] * 5
    assert (sim.calls["totp_login"], sim.logins) == (2, 2)


async def test_a_refused_relogin_is_tried_once_by_concurrent_callers_not_once_each(sim):
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    change_mpin(sim, "111111")
    sim.expire_session()

    results = await asyncio.gather(*(broker.limits() for _ in range(5)), return_exceptions=True)

    assert all(isinstance(r, ConfigError) for r in results), results
    assert sim.calls["totp_validate"] == 2  # the start-up login and one refused re-login


async def test_after_a_refused_relogin_calls_fail_fast_until_the_backoff_has_passed(sim):
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=60.0))
    await broker.start()
    change_mpin(sim, "111111")
    sim.expire_session()
    with pytest.raises(ConfigError):
        await broker.positions()

    with pytest.raises(ConfigError, match="next login attempt in") as err:
        await broker.positions()

    assert sim.calls["totp_validate"] == 2
    assert not any(secret in str(err.value) for secret in secrets_of(sim))


async def test_the_session_logs_in_again_once_the_backoff_has_passed(sim):
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=0.2))
    await broker.start()
    change_mpin(sim, "111111")
    sim.expire_session()
    with pytest.raises(ConfigError):
        await broker.positions()
    change_mpin(sim, SimCredentials().mpin)

    async def limits_answer() -> bool:
        try:
            return (await broker.limits())["net_paise"] == 10_000_000_00
        except ConfigError:
            return False

    await eventually(limits_answer)
    assert sim.logins == 2


async def test_repeated_login_refusals_stop_automatic_logins_before_kotak_locks_the_account(sim):
    broker = KotakBroker(settings_for(sim, login_backoff_initial_s=0.01, login_backoff_max_s=0.01))
    await broker.start()
    change_mpin(sim, "111111")
    sim.expire_session()
    for _ in range(6):
        with pytest.raises(ConfigError):
            await broker.limits()
        await asyncio.sleep(0.02)  # past the backoff: only the refusal limit can stop the next attempt

    with pytest.raises(ConfigError, match="restart") as err:
        await broker.limits()

    assert sim.calls["totp_validate"] == 1 + 3  # the start-up login, then three refused ones
    assert not any(secret in str(err.value) for secret in secrets_of(sim))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_login_that_cannot_reach_kotak_raises_retryable_without_secrets(sim):
    settings = settings_for(sim, base_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(RetryableError, match="Kotak login failed") as err:
        await KotakBroker(settings).start()

    assert not any(secret in str(err.value) for secret in secrets_of(sim))


async def test_a_gateway_error_page_at_login_is_retryable_not_a_credentials_error(sim):
    sim.fail_next("totp_login", status=502, text="<html><body>502 Bad Gateway</body></html>")

    with pytest.raises(NeoPulseError) as err:
        await KotakBroker(settings_for(sim)).start()

    assert isinstance(err.value, RetryableError), repr(err.value)


async def test_kotak_unreachable_at_start_is_tried_again_until_start_login_wait_s(sim):
    """A gateway blip at 09:14 must not leave the day unstarted: the start waits the login's backoff and tries again."""
    sim.fail_next("totp_login", status=502, text="<html><body>502 Bad Gateway</body></html>")

    await KotakBroker(settings_for(sim, start_login_wait_s=5.0)).start()

    assert sim.calls["totp_login"] == 2


async def test_kotak_unreachable_through_start_login_wait_s_ends_the_start_in_one_line(sim):
    """Exit 1 with one line naming the wait, not a traceback."""
    from shared import runtime

    settings = settings_for(sim, base_url=f"http://127.0.0.1:{closed_port()}", start_login_wait_s=0.3)
    try:
        await KotakBroker(settings).start()
    except RetryableError as exc:
        assert "within start_login_wait_s (0.3 s)" in str(exc)
        assert runtime.exit_code(exc) == 1
    else:
        raise AssertionError("started without Kotak")


async def test_a_one_time_totp_is_not_sent_again_when_the_session_expires(strict_sim):
    c = strict_sim.creds
    broker = KotakBroker(settings_for(strict_sim, totp_secret="", totp=c.totp_now()))
    await broker.start()
    strict_sim.expire_session()

    with pytest.raises(ConfigError, match="totp_secret"):
        await broker.limits()

    assert strict_sim.calls["totp_login"] == 1


async def test_a_code_taken_by_a_login_whose_mpin_was_refused_is_not_sent_again(strict_sim):
    broker = KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S, login_backoff_initial_s=0.01))
    change_mpin(strict_sim, "111111")
    with pytest.raises(ConfigError, match="MPIN validate refused"):
        await broker.start()
    change_mpin(strict_sim, SimCredentials().mpin)
    await asyncio.sleep(0.02)  # past the backoff

    await broker.start()

    assert strict_sim.logins == 1


async def test_order_events_arrive_on_the_new_session_after_expiry_and_a_feed_drop(sim, broker):
    events = broker.events()
    first = asyncio.ensure_future(anext(events))
    await eventually(lambda: bool(sim.order_sockets))
    dropped = set(sim.order_sockets)
    sim.expire_session()
    await sim.drop_feeds()
    # A socket of the new session: the dropped one may still be listed while its close completes.
    await eventually(lambda: sim.logins == 2 and bool(sim.order_sockets - dropped))

    ack = await broker.place_order(market_buy("coid-after-relogin"))

    event = await asyncio.wait_for(first, 5.0)
    await events.aclose()
    assert event.exchange_order_id == ack.exchange_order_id


async def at_the_start_of_a_totp_step() -> None:
    """Waits for the next TOTP step to begin, so logins made right after fall in one step (one code)."""
    await asyncio.sleep(STEP_S - time.time() % STEP_S + 0.05)


async def test_a_process_restarted_within_the_last_logins_totp_step_logs_in_with_the_next_code(strict_sim):
    """Kotak refuses the code the process before the restart logged in with; the new process cannot know it."""
    await at_the_start_of_a_totp_step()
    await KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S)).start()  # the process that then crashed
    restarted = KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S))

    await restarted.start()

    assert strict_sim.logins == 2


async def test_a_wrong_totp_seed_is_refused_as_credentials_after_the_next_code_was_tried_once(strict_sim):
    wrong = dataclasses.replace(strict_sim.creds, totp_secret="KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU")
    broker = KotakBroker(settings_for(strict_sim, wrong, totp_interval_s=STEP_S))

    with pytest.raises(ConfigError, match="TOTP login refused"):
        await broker.start()

    assert strict_sim.calls["totp_login"] == 2


@pytest.mark.parametrize("step", ["totp_login", "totp_validate"])
async def test_a_login_step_kotak_throttled_is_retryable_not_refused_credentials(strict_sim, step):
    """A 429 took nothing and says nothing of the credentials: start-up must not blame them."""
    strict_sim.throttle_next(step)

    with pytest.raises(RetryableError, match="429"):
        await KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S)).start()


async def test_throttled_logins_never_stop_automatic_login_as_refusals_would(strict_sim):
    broker = KotakBroker(settings_for(strict_sim, totp_interval_s=STEP_S, login_max_refusals=2,
                                      reconnect_initial_s=0.01, reconnect_max_s=0.01))
    for _ in range(3):
        strict_sim.throttle_next("totp_login")
        with pytest.raises(RetryableError):
            await broker.start()
        await asyncio.sleep(0.02)  # past the backoff: only the refusal limit could stop the next attempt

    await broker.start()

    assert strict_sim.logins == 1
