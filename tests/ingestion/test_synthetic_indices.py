"""Indices on the synthetic source (as the simulator serves them): listed as indices, their readings in the batch of
the ticks that moved them; one it does not have is refused naming those it has. And split mode's ingestion, a real
`neopulse serve ingestion`, serves them (grpcurl)."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import pytest

from services.ingestion.config import IngestionSettings
from services.ingestion.synthetic import SyntheticSource
from shared.clock import SimClock
from shared.errors import ConfigError
from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import grpcurl_json
from tests.grpc.test_monolith import first_tick

HDFCBANK, SBIN, TCS, NIFTY_50, NIFTY_BANK = 1333, 3045, 11536, 26000, 26009


async def test_the_synthetic_source_lists_its_indices_and_sends_their_readings_with_the_ticks():
    source = SyntheticSource(IngestionSettings(ticks_per_second=3000, batch_interval_ms=5), SimClock(speed=60),
                             ["HDFCBANK-EQ", "SBIN-EQ", "TCS-EQ"], indices=["Nifty 50", "nifty bank"])
    listed = await source.instruments()
    last, readings = {}, []
    batches = source.batches()
    async with asyncio.timeout(10):
        while len(readings) < 20:
            for t in (await anext(batches)).ticks:
                if t.token in (NIFTY_50, NIFTY_BANK):
                    readings.append(t)
                    moved = [last[s] for s in ((HDFCBANK, SBIN, TCS) if t.token == NIFTY_50 else (HDFCBANK, SBIN))]
                    base = 2_400_000 if t.token == NIFTY_50 else 5_200_000
                    # base x the mean move of its stocks from their previous close (tick.close_paise), half up
                    mean = sum(Fraction(s.ltp_paise, s.close_paise) for s in moved) / len(moved)
                    assert t.ltp_paise == int(base * mean + Fraction(1, 2)), t
                else:
                    last[t.token] = t
    await source.close()

    assert [(i.token, i.symbol, i.is_index) for i in listed] == [
        (HDFCBANK, "HDFCBANK-EQ", False), (SBIN, "SBIN-EQ", False), (TCS, "TCS-EQ", False),
        (NIFTY_50, "Nifty 50", True), (NIFTY_BANK, "Nifty Bank", True)]
    assert {r.token for r in readings} == {NIFTY_50, NIFTY_BANK}
    assert all(r.recv_ns > 0 and r.volume == 0 and r.close_paise in (2_400_000, 5_200_000) for r in readings)


def test_an_index_the_synthetic_market_does_not_have_is_refused_naming_those_it_has():
    with pytest.raises(ConfigError, match=r"no index 'Nifty IT'; it has: Nifty 50$"):
        SyntheticSource(IngestionSettings(), SimClock(speed=60), ["TCS-EQ"], indices=["Nifty IT"])


@pytest.mark.slow
def test_split_mode_ingestion_serves_its_indices(tmp_path, procs):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    proc = procs.neopulse(["serve", "ingestion", "--no-db", "--grpc-port", str(port), "--speed", "60",
                           "--duration", "60"], tmp_path / "ingestion.log",
                          env={"NEOPULSE_INDICES": '["Nifty 50"]', "NEOPULSE_INGESTION_TICKS_PER_SECOND": "2000",
                               # a session clock from 09:15 IST: without it the market is the real one, closed
                               # outside 09:15-15:30 IST (the test once failed whenever CI ran after the close)
                               "NEOPULSE_SPLIT_SESSION_WALL_START_NS": str(time.time_ns())})
    proc.wait_for_line(f"gRPC listening on {addr}")

    listed = grpcurl_json(addr, "neopulse.v1.IngestionService/ListInstruments")["instruments"]
    first = first_tick(addr, token=NIFTY_50)

    assert [(int(i["token"]), i["symbol"]) for i in listed if i.get("is_index")] == [(NIFTY_50, "Nifty 50")]
    assert int(first["token"]) == NIFTY_50 and int(first["ltp_paise"]) > 0


async def test_the_monolith_gives_its_synthetic_source_the_configured_indices():
    from services.app.config import AppSettings
    from services.app.wiring import market_and_broker
    from shared import config as cfg

    settings = cfg.load(AppSettings, {"source": "synthetic", "symbols": ["SBIN-EQ"], "indices": ["Nifty Bank"]})
    source, _ = await market_and_broker(settings, {}, SimClock(speed=60), None, {})

    assert [(i.symbol, i.is_index) for i in await source.instruments()] == [("SBIN-EQ", False), ("Nifty Bank", True)]
