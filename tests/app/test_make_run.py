"""`neopulse run` as `make run` runs it: the simulator through the real SDK, embedded PostgreSQL, paper fills.

A real process, a real database left behind, a real summary.
"""

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

from shared.db.embedded import EmbeddedPostgres


@pytest.mark.slow
def test_a_short_paper_run_trades_end_to_end_and_leaves_ticks_and_orders_in_the_database(tmp_path, procs):
    config = tmp_path / "run.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nsymbols = ["RELIANCE-EQ", "TCS-EQ", "INFY-EQ", '
                      '"HDFCBANK-EQ", "SBIN-EQ", "ICICIBANK-EQ", "ITC-EQ", "LT-EQ"]\n')
    run = procs.neopulse(["run", "--config", str(config), "--duration", "25", "--speed", "60", "--grpc-port", "0"],
                         tmp_path / "run.log", env={"NEOPULSE_DATABASE_URL": None, "DATABASE_URL": None})
    code, out = run.output(120)
    assert code == 0, out[-3000:]
    counts = {k: int(v.replace(",", "")) for k, v in re.findall(r"^\s+(ticks|signals|fills)\s+([\d,]+)$", out, re.M)}
    assert counts["ticks"] > 0 and counts["signals"] > 0 and counts["fills"] > 0, out
    assert "embedded PostgreSQL" in out and "psql" in out

    ticks, orders = asyncio.run(_count_rows(tmp_path / "data"))
    assert ticks > 0 and orders > 0


async def _count_rows(data_dir: Path) -> tuple[int, int]:
    server = EmbeddedPostgres(data_dir)
    dsn = await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/neopulse")
        try:
            return (await conn.fetchval("SELECT count(*) FROM market_ticks"),
                    await conn.fetchval("SELECT count(*) FROM order_ledger"))
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)
