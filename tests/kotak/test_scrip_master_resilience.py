"""Kotak's scrip master at start, through the real SDK against the simulator: a transient failure (a 5xx from the
file-paths call, a failed CSV download, a timeout) is tried again within [kotak] start_login_wait_s; one that lasts
starts from the instrument master an earlier start stored today, or fails saying why."""

from __future__ import annotations

import logging

import pytest

from services.ingestion.instrument_store import load_instruments, upsert_instruments
from services.ingestion.kotak_source import KotakFeedSource
from shared.clock import RealClock
from shared.contracts import market_pb2
from shared.errors import RetryableError
from tests.kotak.conftest import RELIANCE, settings_for


def stored_reliance() -> market_pb2.Instrument:
    """RELIANCE as an earlier start stored it: a freeze quantity the simulator's master does not carry."""
    return market_pb2.Instrument(token=RELIANCE, symbol="RELIANCE-EQ", exchange_segment="nse_cm", tick_size_paise=10,
                                 lot_size=1, freeze_quantity=4321)


async def test_a_failed_file_paths_call_then_a_failed_download_at_start_are_tried_again_within_the_window(sim):
    sim.fail_next("scrip_master", 503)
    sim.fail_next("scrip_file", 502, text="<html>Bad Gateway</html>")
    source = KotakFeedSource(settings_for(sim, start_login_wait_s=5.0), ["RELIANCE-EQ"])
    try:
        instruments = await source.instruments()
    finally:
        await source.close()

    # The file paths asked 3 times (503; then a failed download; then both), the file downloaded twice.
    assert [(i.token, sim.calls["scrip_master"], sim.calls["scrip_file"]) for i in instruments] == [(RELIANCE, 3, 2)]


async def test_a_scrip_master_call_that_times_out_at_start_is_tried_again(sim):
    sim.delay_next("scrip_master", 1.5)
    source = KotakFeedSource(settings_for(sim, start_login_wait_s=5.0, request_timeout_s=0.5), ["RELIANCE-EQ"])
    try:
        instruments = await source.instruments()
    finally:
        await source.close()

    assert [i.token for i in instruments] == [RELIANCE]


async def test_a_scrip_master_still_failing_at_the_end_of_the_window_starts_from_todays_stored_rows(
        sim, db_pool, caplog):
    await upsert_instruments(db_pool, [stored_reliance()])
    sim.fail_next("scrip_master", 503)  # the window (0 s) has no room for a second try
    source = KotakFeedSource(settings_for(sim), ["RELIANCE-EQ"], clock=RealClock(),
                             stored=lambda day: load_instruments(db_pool, stored_on=day))
    try:
        with caplog.at_level(logging.WARNING, logger="services.ingestion.kotak_source"):
            instruments = await source.instruments()
    finally:
        await source.close()

    assert ([(i.token, i.freeze_quantity) for i in instruments],
            any("starting from the instrument master stored today" in r.message for r in caplog.records)) == (
        [(RELIANCE, 4321)], True)


async def test_rows_stored_on_an_earlier_day_are_not_started_from(sim, db_pool):
    await upsert_instruments(db_pool, [stored_reliance()])
    await db_pool.execute("UPDATE instrument_master SET updated_at = now() - interval '1 day'")
    sim.fail_next("scrip_master", 503)
    source = KotakFeedSource(settings_for(sim), ["RELIANCE-EQ"], clock=RealClock(),
                             stored=lambda day: load_instruments(db_pool, stored_on=day))
    try:
        with pytest.raises(RetryableError) as failed:
            await source.instruments()
    finally:
        await source.close()

    assert "could not be read within [kotak] start_login_wait_s (0 s)" in str(failed.value)

