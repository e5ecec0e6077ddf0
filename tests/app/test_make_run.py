"""`neopulse run` as `make run` runs it: the simulator through the real SDK, embedded PostgreSQL, paper fills.

A real process, a real database left behind, a real summary.
"""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.db.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_paper_run_trades_end_to_end_and_leaves_ticks_and_orders_in_the_database(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nsymbols = ["RELIANCE-EQ", "TCS-EQ", "INFY-EQ", '
                      '"HDFCBANK-EQ", "SBIN-EQ", "ICICIBANK-EQ", "ITC-EQ", "LT-EQ"]\n')
    env = {**os.environ, "NEO_LOG_FILE_ENABLED": "false"}
    env.pop("NEOPULSE_DATABASE_URL", None)
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "services.app.cli", "run", "--config", str(config), "--duration", "25",
         "--speed", "60", "--grpc-port", "0"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
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
