"""Indices in the real monolith (`neopulse run` on the simulator through the real SDK, embedded PostgreSQL): listed
as such, streamed, stored, refused as orders (grpcurl); and replayed from what a run stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from services.ingestion.instrument_store import load_instruments, upsert_instruments
from services.ingestion.replay import ReplaySource
from shared.client import NeoPulseClient
from shared.clock import NS, ManualClock
from shared.contracts import market_pb2, strategy_pb2
from shared.db.embedded import EmbeddedPostgres
from shared.marketdata import nse_instruments
from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import CALM, ctl, grpcurl, grpcurl_json
from tests.grpc.test_monolith import first_tick

NIFTY_50, NIFTY_BANK = 26000, 26009


@pytest.mark.slow
def test_a_run_with_indices_lists_streams_stores_and_refuses_to_trade_them(tmp_path, procs, embedded_home):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    run = procs.neopulse(["run", "--grpc-port", str(port), "--duration", "60", "--speed", "60"], tmp_path / "run.log",
                         env={**CALM, "NEOPULSE_DATABASE_URL": None, "DATABASE_URL": None,
                              "NEOPULSE_DATA_DIR": str(embedded_home),
                              "NEOPULSE_INDICES": '["Nifty 50", "nifty bank"]'})
    run.wait_for_line(f"gRPC listening on {addr}")

    listed = grpcurl_json(addr, "neopulse.v1.IngestionService/ListInstruments")["instruments"]
    first = first_tick(addr, token=NIFTY_50)
    order = {"token": NIFTY_50, "side": "SIDE_BUY", "quantity": 1, "order_type": "ORDER_TYPE_LIMIT",
             "price_paise": 2_400_000}
    refused = grpcurl("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")
    quotes = grpcurl_json("-d", json.dumps({"symbols": ["nifty bank", "Nifty 50"]}), addr,
                          "neopulse.v1.StrategyService/GetQuotes")["quotes"]
    quoted = ctl("--target", addr, "quote", "Nifty 50")
    typed = asyncio.run(_quotes(addr))
    run.stop()

    indices = [(int(i["token"]), i["symbol"]) for i in listed if i.get("is_index")]
    assert indices == [(NIFTY_50, "Nifty 50"), (NIFTY_BANK, "Nifty Bank")]
    assert len(listed) > len(indices)  # the stocks too, not marked
    assert (int(first["token"]), int(first["ltp_paise"]) > 0, "volume" in first) == (NIFTY_50, True, False)
    assert "Code: InvalidArgument" in refused.stderr and "is an index" in refused.stderr, refused.stderr
    assert [(q["instrument"]["symbol"], int(q["tick"]["token"])) for q in quotes] == [("Nifty Bank", NIFTY_BANK),
                                                                                    ("Nifty 50", NIFTY_50)]
    assert all(int(q["tick"]["ltp_paise"]) > 0 and int(q["tick"]["close_paise"]) > 0 for q in quotes)
    assert quoted.returncode == 0 and quoted.stdout.startswith("Nifty 50 ") and "%)" in quoted.stdout, quoted
    assert [(q.instrument.symbol, q.instrument.is_index) for q in typed[:2]] == [("Nifty 50", True),
                                                                                ("Nifty Bank", True)]
    assert all(q.instrument.is_index is False for q in typed[2:]) and typed[0].tick.ltp_paise > 0
    stored, index_ticks = asyncio.run(_stored(embedded_home))
    assert stored == {NIFTY_50: True, NIFTY_BANK: True} and index_ticks > 0


async def _quotes(addr: str) -> list[strategy_pb2.Quote]:
    """Every instrument's quote through the typed client (shared/client.py)."""
    async with NeoPulseClient(addr) as client:
        return await client.quotes()


async def _stored(data_dir: Path) -> tuple[dict[int, bool], int]:
    """instrument_master's is_index of the indices, and how many of their ticks market_ticks holds."""
    server = EmbeddedPostgres(data_dir)
    dsn = await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/neopulse")
        try:
            rows = await conn.fetch("SELECT instrument_token, is_index FROM instrument_master WHERE is_index")
            count = await conn.fetchval("SELECT count(*) FROM market_ticks WHERE token = ANY($1::bigint[])",
                                        [NIFTY_50, NIFTY_BANK])
            return {r["instrument_token"]: r["is_index"] for r in rows}, count
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_instrument_master_keeps_an_index_as_one_and_replay_takes_it_by_its_name(db_pool):
    nifty = market_pb2.Instrument(token=NIFTY_50, symbol="Nifty 50", exchange_segment="nse_cm", tick_size_paise=1,
                                  lot_size=1, name="Nifty 50", is_index=True)
    await upsert_instruments(db_pool, [*nse_instruments(["RELIANCE-EQ"]), nifty])

    stored = {i.token: i.is_index for i in await load_instruments(db_pool)}
    source = ReplaySource(db_pool, ["RELIANCE-EQ"], NS, 2 * NS, ManualClock(0), indices=["NIFTY 50"])
    chosen = await source.instruments()

    assert stored == {2885: False, NIFTY_50: True}
    assert [(i.token, i.is_index) for i in chosen] == [(2885, False), (NIFTY_50, True)]
