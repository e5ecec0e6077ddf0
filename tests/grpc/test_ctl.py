"""`neopulse ctl` against the real monolith (`neopulse run --source synthetic --no-db`, an auth token set): the
Telegram bot's commands from a terminal, as processes, with their exit codes."""

import json
import os
import subprocess
import sys

import pytest

from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import ROOT, Proc, ctl, grpcurl_json, wait_until
from tests.grpc.test_monolith import limit_buy_below_market

pytestmark = pytest.mark.slow
TOKEN = "ctl-test-token"
AUTH = {"NEOPULSE_GRPC_AUTH_TOKEN": TOKEN}
BEARER = ("-H", f"authorization: Bearer {TOKEN}")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("ctl") / "run.log"
    # Speed 1, prices at their real pace: a limit buy 4 % below the market still rests when it is placed.
    proc = Proc(["run", "--grpc-port", str(port), "--duration", "120", "--source", "synthetic", "--speed", "1",
                 "--no-db"], log, env=AUTH)
    try:
        proc.wait_for_line(f"gRPC listening on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def run(target: str, *args: str) -> subprocess.CompletedProcess:
    return ctl("--target", target, *args, env=AUTH)


def ok(target: str, *args: str) -> str:
    result = run(target, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_status_shows_the_running_systems_mode_feed_trading_state_and_strategies(target):
    out = ok(target, "status")

    assert out.startswith("NeoPulse paper · up ")
    assert "Feed: synthetic connected" in out and "Trading: ACTIVE" in out and "Strategies: momentum_rsi" in out
    assert "<b>" not in out and "&amp;" not in ok(target, "pnl")  # the bot's HTML, as text


def test_an_order_is_shown_and_cancelled_by_its_id_and_a_second_cancel_says_there_is_nothing_to_cancel(target):
    order = limit_buy_below_market(target, *BEARER)
    placed = grpcurl_json(*BEARER, "-d", json.dumps({"order": order}), target,
                          "neopulse.v1.OrderService/PlaceOrder")["order"]
    coid = placed["client_order_id"]

    assert coid in ok(target, "orders")
    assert ok(target, "order", coid).startswith(f"BUY 1 {order['symbol']} ")
    assert ok(target, "cancel", coid).startswith("Cancel sent: ")
    assert ok(target, "cancel", coid).startswith("Nothing to cancel: ")


def test_halt_stops_trading_with_its_reason_and_cancels_open_orders_and_release_rearms(target):
    order = limit_buy_below_market(target, *BEARER)
    grpcurl_json(*BEARER, "-d", json.dumps({"order": order}), target, "neopulse.v1.OrderService/PlaceOrder")

    assert ok(target, "halt", "--cancel-orders", "fat", "finger").startswith("Kill switch engaged. Trading is HALTED.")
    assert "Trading: HALTED (kill switch engaged: fat finger)" in ok(target, "status")
    wait_until(lambda: ok(target, "orders").strip() == "No open orders.")
    assert ok(target, "release").startswith("Kill switch released. Trading is ACTIVE.")
    assert "Trading: ACTIVE" in ok(target, "status")


def test_a_paused_strategy_shows_who_paused_it_and_why_until_resumed(target):
    assert ok(target, "pause", "momentum_rsi", "lunch", "break").strip() == "momentum_rsi is paused."
    assert "by the operator: lunch break" in ok(target, "strategies")
    assert ok(target, "resume", "momentum_rsi").strip() == "momentum_rsi is running."


@pytest.mark.parametrize(("args", "said"), [
    (("order", "no-such-order"), "no order 'no-such-order'"),
    (("pause", "no-such-strategy"), "no strategy named 'no-such-strategy'; configured: momentum_rsi"),
])
def test_an_unknown_id_or_name_exits_1_saying_so(target, args, said):
    result = run(target, *args)

    assert (result.returncode, result.stdout) == (1, "")
    assert said in result.stderr and "Traceback" not in result.stderr


def test_a_wrong_token_exits_1_naming_the_setting_and_changes_nothing(target):
    result = ctl("--target", target, "halt", env={"NEOPULSE_GRPC_AUTH_TOKEN": "not-the-token"})

    assert result.returncode == 1 and "[grpc].auth_token" in result.stderr
    assert "Trading: ACTIVE" in ok(target, "status")


def test_nothing_listening_exits_1_saying_nothing_was_sent():
    result = ctl("--target", f"127.0.0.1:{free_port()}", "--timeout", "1", "halt")

    assert result.returncode == 1
    assert "cannot reach the risk at" in result.stderr and "nothing was sent" in result.stderr


def test_a_malformed_target_exits_2():
    result = ctl("--target", "no-port-here", "status")

    assert result.returncode == 2 and "--target: expected host:port" in result.stderr


def test_a_reader_that_closes_the_pipe_early_is_no_error(target):
    """`neopulse ctl orders today | head -1`."""
    proc = subprocess.Popen([sys.executable, "-m", "services.app.cli", "ctl", "--target", target, "status"], cwd=ROOT,
                            env={**os.environ, **AUTH}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()

    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_without_a_target_it_finds_the_monolith_where_the_settings_say_it_serves(target):
    port = target.rsplit(":", 1)[1]

    result = ctl("status", env={**AUTH, "NEOPULSE_GRPC_PORT": port})

    assert result.returncode == 0, result.stderr
    assert "Feed: synthetic connected" in result.stdout
