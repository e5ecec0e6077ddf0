"""Kotak logins refused, counted in the database across restarts and processes (shared/kotak/refusals.py): Kotak
locks the account after a few wrong MPINs, and Docker, systemd or the trader restart a process that exited for one.
Real SDK against the simulator, real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from services.app.cli import main
from shared.errors import ConfigError
from shared.kotak import refusals
from shared.kotak.broker import KotakBroker
from shared.kotak.config import KotakSettings
from shared.kotak.refusals import store_for
from shared.kotak.session import KotakSession
from tests.kotak.conftest import settings_for

REPO = Path(__file__).resolve().parents[2]
WRONG_MPIN = SecretStr("111111")  # the trader changed the MPIN in the Neo app, not in NeoPulse's config


def process(db_pool, settings: KotakSettings) -> KotakBroker:
    """What one `neopulse run` builds against Kotak with a database (services/app/wiring.py)."""
    return KotakBroker(settings, KotakSession(settings, store_for(db_pool, settings)))


async def refused_starts(db_pool, settings: KotakSettings, starts: int) -> None:
    for _ in range(starts):
        with pytest.raises(ConfigError):
            await process(db_pool, settings).start()


async def test_restarts_of_a_run_send_kotak_no_more_wrong_mpins_than_login_max_refusals(sim, database, tmp_path):
    """As Docker's `restart: unless-stopped` runs it: the same command again after each exit 2."""
    c = sim.creds
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEOPULSE_")} | {
        "NEOPULSE_KOTAK_CONSUMER_KEY": c.consumer_key, "NEOPULSE_KOTAK_MOBILE": c.mobile, "NEOPULSE_KOTAK_UCC": c.ucc,
        "NEOPULSE_KOTAK_MPIN": WRONG_MPIN.get_secret_value(), "NEOPULSE_KOTAK_TOTP_SECRET": c.totp_secret,
        "NEOPULSE_KOTAK_BASE_URL": sim.base_url, "NEOPULSE_KOTAK_START_LOGIN_WAIT_S": "0", "DATABASE_URL": database,
        "NEOPULSE_DATA_DIR": str(tmp_path / "data"), "NEO_LOG_FILE_ENABLED": "false"}
    limit = KotakSettings.model_fields["login_max_refusals"].default
    for _ in range(limit + 2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.app.cli", "run", "--source", "kotak", "--duration", "5", "--grpc-port",
            "0", cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)

    assert (sim.calls["totp_validate"], proc.returncode, "neopulse db kotak-logins --reset" in err.decode()) == (
        limit, 2, True)


async def test_a_start_at_the_limit_says_how_many_were_refused_and_how_to_go_on(sim, db_pool):
    settings = settings_for(sim, mpin=WRONG_MPIN)
    await refused_starts(db_pool, settings, settings.login_max_refusals)

    with pytest.raises(ConfigError) as refused:
        await process(db_pool, settings).start()

    said = str(refused.value)
    assert (said.startswith(f"Kotak refused the last {settings.login_max_refusals} logins with these [kotak] "
                            "credentials (the last at "), "Kotak MPIN validate refused" in said,
            said.endswith("clear the count: neopulse db kotak-logins --reset")) == (True, True, True)


async def test_refusals_another_process_met_stop_a_relogin_before_it_reaches_kotak(sim, db_pool):
    running = process(db_pool, settings_for(sim))
    await running.start()
    sim.creds = dataclasses.replace(sim.creds, mpin="222222")  # changed in the Neo app mid-day
    await refused_starts(db_pool, running.settings, running.settings.login_max_refusals)  # the same config
    sent = sim.calls["totp_validate"]
    sim.expire_session()

    with pytest.raises(ConfigError, match="kotak-logins --reset"):
        await running.limits()

    assert (sim.calls["totp_validate"], running.login_trouble.startswith("Kotak refused the last")) == (sent, True)


async def test_changed_credentials_start_from_zero(sim, db_pool):
    await refused_starts(db_pool, settings_for(sim, mpin=WRONG_MPIN), 3)
    fixed = process(db_pool, settings_for(sim))  # the config now has the MPIN set in the Neo app

    await fixed.start()

    assert fixed.session.generation == 1


async def test_a_login_that_works_clears_the_count_of_its_credentials(sim, db_pool):
    settings = settings_for(sim, mpin=WRONG_MPIN)
    await refused_starts(db_pool, settings, settings.login_max_refusals - 1)
    sim.creds = dataclasses.replace(sim.creds, mpin=WRONG_MPIN.get_secret_value())  # the MPIN changed back in the app

    await process(db_pool, settings).start()

    assert (await store_for(db_pool, settings).read()).count == 0


async def test_kotak_logins_reset_lets_the_next_start_log_in(sim, db_pool, database, monkeypatch):
    settings = settings_for(sim, mpin=WRONG_MPIN)
    await refused_starts(db_pool, settings, settings.login_max_refusals)
    sim.creds = dataclasses.replace(sim.creds, mpin=WRONG_MPIN.get_secret_value())  # checked: the app has this one
    monkeypatch.setenv("DATABASE_URL", database)
    assert await asyncio.to_thread(main, ["db", "kotak-logins", "--reset"]) == 0
    broker = process(db_pool, settings)

    await broker.start()

    assert broker.session.generation == 1


async def test_the_database_holds_no_credential(sim, db_pool):
    c = sim.creds

    await refused_starts(db_pool, settings_for(sim, mpin=WRONG_MPIN), 1)

    stored = str([tuple(r) for r in await db_pool.fetch("SELECT * FROM kotak_login_refusals")])
    assert [s for s in (c.consumer_key, c.mobile, WRONG_MPIN.get_secret_value(), c.totp_secret) if s in stored] == []


async def test_refusals_the_database_cannot_record_still_stop_logins_at_the_limit(sim, database):
    # A database that answers reads but refuses writes (a full disk, a read-only database).
    admin = await asyncpg.connect(database)
    await admin.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', "
                        "current_database()); END $$")
    await admin.close()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        settings = settings_for(sim, mpin=WRONG_MPIN, login_backoff_initial_s=0.01, login_backoff_max_s=0.01)
        session = KotakSession(settings, store_for(pool, settings))
        for _ in range(settings.login_max_refusals + 3):
            with pytest.raises(ConfigError):
                await session.login()
            await asyncio.sleep(0.05)  # past the (shortened) backoff
    finally:
        await pool.close()

    assert sim.calls["totp_validate"] <= settings.login_max_refusals


async def test_a_login_that_works_waits_on_a_busy_database_once_at_most(sim, database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        settings = settings_for(sim)
        session = KotakSession(settings, store_for(pool, settings))
        async with pool.acquire():  # the pool busy (the ledger, the tick writer) or the database hanging
            began = time.monotonic()
            await session.login()
            took = time.monotonic() - began
    finally:
        await pool.close()

    assert (session.generation, took < 2 * refusals.TIMEOUT_S) == (1, True), f"the login took {took:.1f} s"
