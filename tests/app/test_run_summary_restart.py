"""`neopulse run` resumed on the same day: its summary shows the day's positions and P&L as the ledger books them.

Real parts: a first monolith run that buys 2 SBIN and keeps them, then a real `neopulse run` process on the same
embedded PostgreSQL database that sells 1 through grpcurl; its printed summary against the ledger's day P&L.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal

import asyncpg
import pytest

from services.app.monolith import Monolith
from shared import rpc
from shared.clock import SimClock, day_of
from shared.contracts import ingestion_pb2, oms_pb2
from shared.db.queries import day_pnl
from shared.errors import RiskRejected
from shared.ports import free_loopback_port
from tests.app.test_monolith_restart import run_until, settings, until_holding
from tests.grpc.procs import grpcurl, grpcurl_json, wait_until
from tests.notifier.test_monolith import manual_order

pytestmark = pytest.mark.slow

NO_STRATEGIES = {"strategy": {"strategies": []}}


async def buy_two_sbin(database: str) -> None:
    """The first run of the day: 2 SBIN bought and held when it stops."""
    app = Monolith(settings(database), NO_STRATEGIES)

    async def buy() -> None:
        listed = await app.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        sbin = next(i for i in listed.instruments if i.symbol == "SBIN-EQ")
        for _ in range(400):
            try:
                await app.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=manual_order(sbin, 2, "first")))
                break
            except RiskRejected as exc:  # no last price before the first tick
                assert exc.reason_code == "NO_PRICE", str(exc)
                await asyncio.sleep(0.05)
        await until_holding(app, 2)

    await run_until(app, buy)


def sell_one_sbin(addr: str) -> None:
    instruments = grpcurl_json(addr, "neopulse.v1.IngestionService/ListInstruments")["instruments"]
    sbin = next(i for i in instruments if i["symbol"] == "SBIN-EQ")
    order = {"client_order_id": "second", "token": int(sbin["token"]), "exchange_segment": sbin["exchange_segment"],
             "symbol": "SBIN-EQ", "side": "SIDE_SELL", "quantity": 1, "order_type": "ORDER_TYPE_MARKET",
             "product": "PRODUCT_MIS", "validity": "VALIDITY_DAY", "strategy_tag": "MANUAL"}

    def placed() -> bool:
        result = grpcurl("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")
        assert result.returncode == 0 or "NO_PRICE" in result.stderr, result.stderr
        return result.returncode == 0

    wait_until(placed, 30)
    wait_until(lambda: grpcurl_json("-d", '{"order_id": "second"}', addr, "neopulse.v1.OrderService/GetOrder")
               ["order"]["status"] == "ORDER_STATUS_TRADED", 30)


def rupees_in(summary: str, row: str) -> int:
    """A summary row's amount, in paise."""
    match = re.search(rf"^\s+{re.escape(row)}\s+(-?)₹([\d,]+)\.(\d\d)$", summary, re.M)
    assert match, f"no {row!r} row in:\n{summary}"
    sign, rupees, paise = match.groups()
    return (-1 if sign else 1) * (int(rupees.replace(",", "")) * 100 + int(paise))


async def test_a_resumed_run_summarises_the_day_the_ledger_books_not_only_its_own_fills(database, procs, tmp_path):
    """The resumed run's own tally started flat: selling 1 of the 2 carried SBIN showed as a new short, marked to
    market, with no realised P&L and only its own charges."""
    await buy_two_sbin(database)
    config = tmp_path / "run.toml"
    config.write_text('source = "synthetic"\nsymbols = ["SBIN-EQ"]\n[strategy]\nstrategies = []\n')
    port = free_loopback_port()
    run = procs.neopulse(["run", "--config", str(config), "--speed", "60", "--grpc-port", str(port)],
                         tmp_path / "run.log", env={"NEOPULSE_DATABASE_URL": database})
    run.wait_for_line(f"gRPC listening on 127.0.0.1:{port}")

    sell_one_sbin(f"127.0.0.1:{port}")
    run.proc.send_signal(signal.SIGINT)
    code, out = await asyncio.to_thread(run.output, 60)

    assert code == 0, out[-3000:]
    summary = out[out.rindex("NeoPulse run summary"):]
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        (manual,) = await day_pnl(pool, day_of(SimClock().start_ns))
    finally:
        await pool.close()
    assert manual.open_quantity == 1
    assert rupees_in(summary, "realised P&L") == manual.realised_paise
    assert rupees_in(summary, "charges") == manual.charges_paise
    assert re.search(r"^\s+SBIN-EQ MIS\s+\+1 @ ₹", summary, re.M), summary  # the long left, not a new short
    assert re.search(r"^\s+orders accepted by risk\s+1$", summary, re.M), summary  # this run's: the sell
