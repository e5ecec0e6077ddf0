"""`neopulse ctl` against the real monolith (`neopulse run --source synthetic --no-db`, an auth token set): the
Telegram bot's commands from a terminal, as processes, with their exit codes."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import datetime

import pytest

from shared.client import NeoPulseClient
from shared.clock import IST
from shared.contracts import oms_pb2
from shared.money import exact_paise, fmt_inr
from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import CALM, ROOT, Proc, ctl, grpcurl_json, wait_until
from tests.grpc.test_monolith import limit_buy_below_market

pytestmark = pytest.mark.slow
TOKEN = "ctl-test-token"
AUTH = {"NEOPULSE_GRPC_AUTH_TOKEN": TOKEN}
# Today a holiday: the paper session runs the last trading day before it, as on a weekend (`orders today` is the
# session's day, not the calendar's).
HOLIDAY = {"NEOPULSE_HOLIDAYS": json.dumps([str(datetime.now(IST).date())])}
BEARER = ("-H", f"authorization: Bearer {TOKEN}")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("ctl") / "run.log"
    # Speed 1, prices at their real pace: a limit buy a few % below the market rests. Its duration outlasts the
    # module's tests on a slow host (the fixture stops it at the end).
    proc = Proc(["run", "--grpc-port", str(port), "--duration", "900", "--source", "synthetic", "--speed", "1",
                 "--no-db"], log, env={**AUTH, **HOLIDAY, **CALM})
    try:
        proc.wait_for_line(f"gRPC listening on 127.0.0.1:{port}")
        # run says how, with the console script beside its interpreter (.venv/bin: not on PATH after make run)
        proc.wait_for_line(f"control: .venv/bin/neopulse ctl --target 127.0.0.1:{port} status", timeout_s=5)
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


def test_funds_shows_the_paper_account_as_get_funds_reports_it(target):
    """Read over gRPC with grpcurl and through ctl: Rs 10,00,000 of paper capital (the default), give or take the
    strategies' P&L and charges today."""
    got = grpcurl_json(*BEARER, target, "neopulse.v1.OrderService/GetFunds")
    out = ok(target, "funds")
    typed = asyncio.run(_funds(target))

    total, used = int(got["total_paise"]), int(got.get("margin_used_paise", 0))
    assert got["account"] == "paper" and int(got["as_of_ns"]) > 0
    assert int(got["available_paise"]) == total - used
    assert abs(total - 10_00_000_00) < 10_000_00
    lines = out.splitlines()
    assert lines[0].startswith("Funds (paper account at ") and lines[1].startswith("Available ₹")
    assert " of ₹" in lines[1] and " · margin used ₹" in lines[1] and lines[2].startswith("Today: realised ")
    assert typed.account == "paper" and typed.available_paise == typed.total_paise - typed.margin_used_paise


async def _funds(target: str) -> oms_pb2.GetFundsResponse:
    async with NeoPulseClient(target, token=TOKEN) as client:
        return await client.funds()


def resting_buy(target: str) -> tuple[str, str]:
    """A symbol, and a limit price in rupees 3 % under its last price: inside risk's 5 % band, and unfilled for
    the seconds a test needs (the synthetic market drifts at most ~0.25 % a second)."""
    order = limit_buy_below_market(target, *BEARER, below_bps=300)
    return order["symbol"], f"{order['price_paise'] / 100:.2f}"


def test_a_manual_order_is_placed_shown_and_cancelled_by_its_id_and_a_second_cancel_says_nothing_to_cancel(target):
    symbol, price = resting_buy(target)

    placed = ok(target, "buy", symbol, "1", "--limit", price, "--id", "ctl-cancel-1")
    cancelled = ok(target, "cancel", "ctl-cancel-1")

    assert placed.startswith(f"Placed: BUY 1 {symbol} ₹") and "OPEN 0/1 [MANUAL] · ctl-cancel-1" in placed
    assert cancelled.startswith("Cancel sent: ")
    assert ok(target, "cancel", "ctl-cancel-1").startswith("Nothing to cancel: ")
    assert "CANCELLED 0/1 [MANUAL]" in ok(target, "order", "ctl-cancel-1")
    assert "ctl-cancel-1" in ok(target, "orders", "today")  # the paper session's day (a holiday's eve here)


def test_an_order_id_given_twice_is_placed_once(target):
    """--id is how an order whose outcome was unknown is retried: the OMS refuses an id it has (DUPLICATE_ORDER)."""
    symbol, price = resting_buy(target)
    assert ok(target, "buy", symbol, "1", "--limit", price, "--id", "ctl-twice").startswith("Placed: ")

    again = run(target, "buy", symbol, "1", "--limit", price, "--id", "ctl-twice")

    assert again.returncode == 1 and "ctl-twice" in again.stderr
    assert ok(target, "orders").count("ctl-twice") == 1
    ok(target, "cancel", "ctl-twice")


def test_modify_changes_a_resting_orders_quantity_and_price_and_order_shows_the_new_terms(target):
    symbol, price = resting_buy(target)
    placed = exact_paise(price)
    lower = placed - max(10, placed // 1000 // 10 * 10)  # ~0.1 % further from the market, on any tick size
    ok(target, "buy", symbol, "1", "--limit", price, "--id", "ctl-modify-1")

    modified = ok(target, "modify", "ctl-modify-1", "--quantity", "2", "--price", f"{lower / 100:.2f}")
    shown = ok(target, "order", "ctl-modify-1")
    ok(target, "cancel", "ctl-modify-1")

    history = ok(target, "history", "ctl-modify-1").strip().splitlines()

    terms = f"BUY 2 {symbol} {fmt_inr(lower)} · OPEN 0/2 [MANUAL]"
    assert modified.strip() == f"Modified: {terms} · ctl-modify-1"
    assert shown.startswith(f"{terms} · ctl-modify-1 · ")
    assert history[0] == f"History of ctl-modify-1: BUY {symbol} [MANUAL]"
    statuses = [line.split(" ")[1] for line in history[1:]]
    assert statuses[:2] == ["PENDING_NEW", "SUBMITTED"] and statuses[-2:] == ["CANCEL_PENDING", "CANCELLED"]
    assert next(line for line in history if "MODIFY_PENDING" in line).endswith(
        f"MODIFY_PENDING · 0/2 · {fmt_inr(lower)} · change by hand")


def refused_change(target: str, order_id: str, placing: tuple[str, ...], change: tuple[str, ...]) -> tuple:
    """The exit of `modify ORDER_ID *change` on an order placed with `placing` (then cancelled), and the order as
    `order` showed it before the cancel."""
    ok(target, *placing, "--id", order_id)
    refused = run(target, "modify", order_id, *change)
    shown = ok(target, "order", order_id)
    ok(target, "cancel", order_id)
    return refused, shown


def test_a_trigger_for_a_limit_order_exits_1_with_the_reason_and_changes_nothing(target):
    symbol, price = resting_buy(target)

    refused, shown = refused_change(target, "ctl-modify-2", ("buy", symbol, "1", "--limit", price),
                                    ("--trigger", price, "--quantity", "5"))

    assert refused.returncode == 1 and refused.stdout == ""
    assert "trigger_price_paise: a LIMIT order has no trigger price" in refused.stderr
    assert shown.startswith(f"BUY 1 {symbol} ₹") and "trigger" not in shown


def test_a_limit_price_for_a_stop_market_order_exits_1_with_the_reason(target):
    above = limit_buy_below_market(target, *BEARER, below_bps=-300)  # a buy stop 3 % above: waits for a rise
    symbol, trigger = above["symbol"], f"{above['price_paise'] / 100:.2f}"

    refused, shown = refused_change(target, "ctl-modify-3", ("buy", symbol, "1", "--market", "--stop", trigger),
                                    ("--price", trigger))

    assert refused.returncode == 1 and "price_paise: a STOP_MARKET order has no limit price" in refused.stderr
    assert f"BUY 1 {symbol} MKT trigger {fmt_inr(above['price_paise'])} · TRIGGER_PENDING 0/1" in shown


def test_a_change_of_an_ended_order_exits_1_saying_so(target):
    symbol, price = resting_buy(target)
    ok(target, "buy", symbol, "1", "--limit", price, "--id", "ctl-modify-4")
    ok(target, "cancel", "ctl-modify-4")

    refused = run(target, "modify", "ctl-modify-4", "--quantity", "2")

    assert refused.returncode == 1
    assert "order ctl-modify-4 is already CANCELLED; there is nothing to change" in refused.stderr


@pytest.mark.parametrize(("args", "said"), [
    (("ctl-x",), "give --quantity, --price or --trigger (what is not given is kept)"),
    (("ctl-x", "--price", "812.555"), "argument --price: expected rupees above 0 with at most two decimals"),
    (("ctl-x", "--quantity", "0"), "argument --quantity: expected a whole number of at least 1"),
    (("ctl-x", "--trigger", "-5"), "argument --trigger: expected rupees above 0"),
    (("--price", "812.50"), "the following arguments are required: order_id"),
])
def test_a_modify_without_a_change_or_with_a_malformed_number_is_a_usage_error(args, said):
    """Nothing is sent (no server at the target): a change is never guessed, and a price is never rounded."""
    result = ctl("--target", "127.0.0.1:1", "modify", *args)

    assert result.returncode == 2 and said in result.stderr


@pytest.mark.parametrize(("args", "said"), [
    (("buy", "NO-SUCH-EQ", "1", "--market"), "no instrument 'NO-SUCH-EQ'"),
    (("buy", "SBIN-EQ", "1", "--limit", "1.00"), "price_band_bps"),  # risk's reason, as it gave it
    # The broker's refusal (the paper RMS: no shares held to deliver), as it gave it: it used to print "Placed: ...
    # REJECTED" and exit 0.
    (("sell", "SBIN-EQ", "1", "--market", "--product", "CNC"), "RMS:Rule: Check holdings"),
])
def test_an_order_refused_exits_1_with_the_reason(target, args, said):
    result = run(target, *args)

    assert result.returncode == 1 and said in result.stderr


@pytest.mark.parametrize("args", [("buy", "SBIN-EQ", "1"), ("buy", "SBIN-EQ", "1", "--limit", "812.555"),
                                  ("sell", "SBIN-EQ", "0", "--market"), ("buy", "SBIN-EQ", "1", "--limit", "-5")])
def test_an_order_without_a_price_kind_or_with_a_malformed_number_is_a_usage_error(args):
    """No implicit market order; a price is never rounded (812.555 is a typo)."""
    result = ctl("--target", "127.0.0.1:1", *args)

    assert result.returncode == 2 and ": error: " in result.stderr


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
    (("history", "no-such-order"), "no order 'no-such-order'"),
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


@pytest.mark.parametrize("target", ["no-port-here", "host:²", "host:0", "host:70000", ":50051"])
def test_a_malformed_target_exits_2(target):
    result = ctl("--target", target, "status")

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


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_watch_prints_each_notification_as_it_comes_until_stopped(target, tmp_path, stop):
    """Stopped by Ctrl-C even when started with SIGINT ignored, as a script's background job (CI's) is."""
    watch = Proc(["ctl", "--target", target, "watch"], tmp_path / "watch.log", env=AUTH, sigint_ignored=True)
    try:
        watch.wait_for_line("watching the notifications of")
        ok(target, "halt", "watched")
        ok(target, "release")
        watch.wait_for_line("Kill switch: trading ACTIVE")
        watch.proc.send_signal(stop)

        assert watch.proc.wait(timeout=30) == 0
    finally:
        watch.stop()
    assert any("🚨 Kill switch: trading HALTED · kill switch engaged: watched" in line for line in watch.lines)
    assert not any("Traceback" in line for line in watch.lines)


def test_watch_for_a_while_ends_by_itself(target):
    result = ctl("--target", target, "watch", "--for", "1", env=AUTH)

    assert result.returncode == 0 and result.stdout.startswith("watching the notifications of")


def test_watch_with_nothing_listening_exits_1():
    result = ctl("--target", f"127.0.0.1:{free_port()}", "--timeout", "1", "watch")

    assert result.returncode == 1 and "cannot reach the notifier" in result.stderr


def test_limits_set_changes_the_named_limits_and_keeps_the_others(target):
    before = ok(target, "limits")

    after = ok(target, "limits", "--set", "max_order_quantity=7", "--set", "daily_loss_halt_paise=6000000")
    refused = run(target, "limits", "--set", "daily_loss_halt_paise=-5")
    ok(target, "limits", "--set", "max_order_quantity=1000", "--set", "daily_loss_halt_paise=5000000")

    def kept(text: str) -> list[str]:  # the other limits: position value and exposure, reducing, square-off
        lines = text.splitlines()
        return [next(line for line in lines if line.startswith("Max position value")),
                *next(line for line in lines if line.startswith("Daily loss")).split(", halt at ")[:1],
                next(line for line in lines if line.startswith("Daily loss")).split(" · ")[-1]]

    assert "Max order qty 7 ·" in after and "halt at ₹60,000.00 ·" in after
    assert kept(after) == kept(before)
    assert refused.returncode == 1 and "daily_loss_halt_paise" in refused.stderr


def test_limits_set_with_an_unknown_name_is_a_usage_error_naming_the_limits():
    result = ctl("--target", "127.0.0.1:1", "limits", "--set", "max_oder_quantity=5")

    assert result.returncode == 2 and "max_order_quantity" in result.stderr


def params_of(text: str) -> dict[str, str]:
    """`params`'s line as name -> value."""
    return dict(item.split("=", 1) for item in text.split(": ", 1)[1].strip().split(", "))


def test_params_shows_a_strategys_parameters_and_changes_those_named(target):
    before = params_of(ok(target, "params", "momentum_rsi"))

    after = params_of(ok(target, "params", "momentum_rsi", "rsi_period=10"))
    refused = run(target, "params", "momentum_rsi", "rsi_period=1", "ema_period=5")  # all or nothing
    kept = params_of(ok(target, "params", "momentum_rsi"))
    ok(target, "params", "momentum_rsi", f"rsi_period={before['rsi_period']}")

    assert after == {**before, "rsi_period": "10"} == kept
    assert refused.returncode == 1 and "params.rsi_period" in refused.stderr
