"""The real monolith (`neopulse run --source synthetic --no-db`) through grpcurl: reflection, health,
tick stream, a manual order placed and cancelled, and the kill switch."""

import json

import pytest

from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import CALM, Proc, grpcurl, grpcurl_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def addr(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("monolith") / "run.log"
    proc = Proc(["run", "--grpc-port", str(port), "--duration", "90", "--source", "synthetic", "--speed", "60",
                 "--no-db"], log, env=CALM)
    try:
        proc.wait_for_line(f"gRPC listening on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def first_tick(addr: str, *auth: str, token: int = 0, tries: int = 4) -> dict:
    """The first tick streamed (of `token` only, when given), with grpcurl; asked again when none came in 3 s (a
    machine busy with other tests' processes can hold a fresh grpcurl and the stream's first batch that long)."""
    request = ("-d", json.dumps({"tokens": [token]})) if token else ()
    for _ in range(tries):
        result = grpcurl(*auth, "-max-time", "3", *request, addr, "neopulse.v1.IngestionService/StreamTicks")
        if result.stdout.strip():
            return json.loads(result.stdout.split("\n}\n")[0] + "\n}")["ticks"][0]
    raise AssertionError(f"no tick streamed in {tries} tries of 3 s: {result.stderr}")


def price_below(addr: str, order: dict, below_bps: int) -> int:
    """A limit price `below_bps` under the order's instrument's price now, in whole rupees (on any tick size): read
    again, since the synthetic walk at --speed 60 moves a price by percents in the seconds a busy machine takes
    between two calls."""
    ltp = int(first_tick(addr, token=order["token"])["ltp_paise"])
    return ltp * (10_000 - below_bps) // 10_000 // 100 * 100


def test_list_shows_the_five_services(addr):
    result = grpcurl(addr, "list")

    assert {"neopulse.v1.IngestionService", "neopulse.v1.StrategyService", "neopulse.v1.RiskService",
            "neopulse.v1.OrderService", "neopulse.v1.NotifierService"} <= set(result.stdout.split())


def test_describe_shows_the_kill_switch_rpc(addr):
    result = grpcurl(addr, "describe", "neopulse.v1.RiskService")

    assert "rpc SetKillSwitch ( .neopulse.v1.SetKillSwitchRequest )" in result.stdout


def test_health_is_serving(addr):
    assert grpcurl_json(addr, "grpc.health.v1.Health/Check") == {"status": "SERVING"}


def test_tick_stream_delivers_synthetic_ticks(addr):
    tick = first_tick(addr)

    assert int(tick["token"]) > 0 and int(tick["ltp_paise"]) > 0


def limit_buy_below_market(addr: str, *auth: str, below_bps: int = 400) -> dict:
    """A manual limit buy that rests, `below_bps` under the last price (risk's band allows 500); `auth`: grpcurl's -H
    for a server that wants a token."""
    tick = first_tick(addr, *auth)
    token = int(tick["token"])
    instruments = grpcurl_json(*auth, addr, "neopulse.v1.IngestionService/ListInstruments")["instruments"]
    inst = next(i for i in instruments if int(i["token"]) == token)
    tick_size = int(inst.get("tick_size_paise", 5))
    price = int(tick["ltp_paise"]) * (10_000 - below_bps) // 10_000 // tick_size * tick_size
    return {"token": token, "exchange_segment": inst["exchange_segment"], "symbol": inst["symbol"],
            "side": "SIDE_BUY", "quantity": 1, "order_type": "ORDER_TYPE_LIMIT", "price_paise": price,
            "product": "PRODUCT_MIS", "validity": "VALIDITY_DAY", "strategy_tag": "MANUAL"}


def test_manual_order_is_placed_then_cancelled(addr):
    order = limit_buy_below_market(addr)

    placed = grpcurl_json("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")["order"]
    cancelled = grpcurl_json("-d", json.dumps({"order_id": placed["internal_id"]}), addr,
                             "neopulse.v1.OrderService/CancelOrder")["order"]

    assert placed["status"] == "ORDER_STATUS_OPEN"
    assert cancelled["status"] in ("ORDER_STATUS_CANCELLED", "ORDER_STATUS_CANCEL_PENDING")


def test_manual_order_is_changed_then_a_change_with_nothing_in_it_is_invalid_argument(addr):
    order = limit_buy_below_market(addr)
    placed = grpcurl_json("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")["order"]
    new_price = price_below(addr, order, 300)  # still resting, well inside risk's band of the price now

    changed = grpcurl_json("-d", json.dumps({"order_id": placed["client_order_id"], "quantity": 3,
                                             "price_paise": new_price}),
                           addr, "neopulse.v1.OrderService/ModifyOrder")["order"]
    empty = grpcurl("-d", json.dumps({"order_id": placed["client_order_id"]}), addr,
                    "neopulse.v1.OrderService/ModifyOrder")
    got = grpcurl_json("-d", json.dumps({"order_id": placed["internal_id"]}), addr,
                       "neopulse.v1.OrderService/GetOrder")["order"]
    grpcurl_json("-d", json.dumps({"order_id": placed["internal_id"]}), addr, "neopulse.v1.OrderService/CancelOrder")

    assert changed["status"] == "ORDER_STATUS_OPEN"
    assert (int(changed["request"]["quantity"]), int(changed["request"]["price_paise"])) == (3, new_price)
    assert (int(got["request"]["quantity"]), int(got["request"]["price_paise"])) == (3, new_price)
    assert "Code: InvalidArgument" in empty.stderr and "quantity" in empty.stderr


def test_order_with_zero_quantity_is_invalid_argument_naming_the_field(addr):
    order = {**limit_buy_below_market(addr), "quantity": 0}

    result = grpcurl("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")

    assert "Code: InvalidArgument" in result.stderr and "quantity" in result.stderr


def test_kill_switch_halts_new_orders_until_released(addr):
    order = limit_buy_below_market(addr)

    halted = grpcurl_json("-d", '{"engaged": true, "reason": "test"}', addr, "neopulse.v1.RiskService/SetKillSwitch")
    refused = grpcurl("-d", json.dumps({"order": order}), addr, "neopulse.v1.OrderService/PlaceOrder")
    released = grpcurl_json("-d", '{"engaged": false}', addr, "neopulse.v1.RiskService/SetKillSwitch")

    assert halted == {"state": "TRADING_STATE_HALTED"}
    assert "Code: FailedPrecondition" in refused.stderr
    assert released == {"state": "TRADING_STATE_ACTIVE"}


def test_python_example_streams_ticks_then_places_and_cancels_an_order(addr):
    import subprocess
    import sys

    from tests.grpc.procs import ROOT

    result = subprocess.run([sys.executable, "examples/stream_and_order.py", "--target", addr, "--ticks", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("RELIANCE-EQ ltp") == 2
    assert "ORDER_STATUS_OPEN" in result.stdout and "cancelled" in result.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["--symbol", "NOSUCH-EQ"], "--symbol NOSUCH-EQ is not traded by this server"),
    (["--ticks", "0"], "--ticks must be at least 1")])
def test_python_example_refuses_a_symbol_the_server_does_not_trade_or_no_ticks_in_one_line(addr, args, says):
    import subprocess
    import sys

    from tests.grpc.procs import ROOT

    result = subprocess.run([sys.executable, "examples/stream_and_order.py", "--target", addr, *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
