"""Split mode: /pause sent to the notifier process pauses the strategy running in another process.

Real processes (`neopulse serve`), the real python-telegram-bot against the fake Bot API, gRPC between them.
"""

import asyncio
import time

import pytest

from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import Proc, grpcurl_json
from tests.helpers import eventually
from tests.notifier.fake_bot_api import TOKEN, FakeBotApi

pytestmark = pytest.mark.slow
CHAT = 4242


async def start(module: str, config, folder, port: int, procs: list[Proc]) -> None:
    proc = Proc(["serve", module, "--config", str(config), "--no-db", "--speed", "60"], folder / f"{module}.log")
    procs.append(proc)  # stopped by the caller even if it never comes up
    await asyncio.to_thread(proc.wait_for_line, f"gRPC listening on 127.0.0.1:{port}")


def strategy_paused(port: int) -> bool:
    listed = grpcurl_json(f"127.0.0.1:{port}", "neopulse.v1.StrategyService/ListStrategies")["strategies"]
    return {s["name"]: s.get("paused", False) for s in listed}["momentum_rsi"]


async def test_pause_sent_to_the_notifier_process_pauses_the_strategy_process(tmp_path):
    api = FakeBotApi()
    await api.start()
    ports = {m: free_port() for m in ("ingestion", "strategy", "risk", "oms", "notifier")}
    config = tmp_path / "split.toml"
    config.write_text("\n".join([
        "[split]", f"session_wall_start_ns = {time.time_ns()}",
        *(f'{m}_addr = "127.0.0.1:{p}"' for m, p in ports.items()),
        "[notifier]", f'telegram_bot_token = "{TOKEN}"', f'telegram_base_url = "{api.url}"',
        f"allowed_chat_ids = [{CHAT}]", "polling_timeout_seconds = 1", "batch_window_seconds = 0.05",
        'daily_summary_time_ist = ""']) + "\n")
    procs = []
    try:
        for module in ("ingestion", "oms", "strategy", "notifier"):  # the strategy starts after the OMS
            await start(module, config, tmp_path, ports[module], procs)
        assert await asyncio.to_thread(strategy_paused, ports["strategy"]) is False

        api.send_command(CHAT, "/pause momentum_rsi")

        await eventually(lambda: any("momentum_rsi" in m["text"] for m in api.sent(chat_id=CHAT)), within=30)
        assert await asyncio.to_thread(strategy_paused, ports["strategy"]) is True
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.stop)
        await api.stop()
