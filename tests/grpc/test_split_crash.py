"""Split mode for real, modules killed or stopped and started again: their peers' bridges report an order-path loss
exactly when one happened. Ingestion, the OMS (its ledger) and risk (its state) as `neopulse serve` processes on one
PostgreSQL; no strategy, so the only orders are those the test submits and the processes are quiet in between."""

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import Proc, grpcurl, grpcurl_json, wait_until
from tests.grpc.test_split_mode import _create_database

pytestmark = pytest.mark.slow
MODULES = ("ingestion", "oms", "risk")
ORDER = {"token": "2885", "exchange_segment": "nse_cm", "side": "SIDE_BUY", "quantity": "1",
         "order_type": "ORDER_TYPE_MARKET", "product": "PRODUCT_CNC"}
LOST = "lost messages"  # in the CRITICAL log line of a bridge that reports a loss (or a possible one)


@pytest.fixture
def trio(tmp_path, pg_server) -> Iterator[tuple[dict[str, int], dict[str, Proc], Callable[..., None]]]:
    """(ports, processes, start(*modules, wait=True, env=None)): the three running; start() launches some again (all
    at once: risk waits for the OMS; `env` added to theirs) and waits for their ports (or not: wait=False)."""
    dsn = asyncio.run(_create_database(pg_server))
    ports = {m: free_port() for m in MODULES}
    config = tmp_path / "split.toml"
    lines = [f'database_url = "{dsn}"', "[split]", f"session_wall_start_ns = {time.time_ns()}"]
    config.write_text("\n".join([*lines, *(f'{m}_addr = "127.0.0.1:{p}"' for m, p in ports.items())]) + "\n")
    procs: dict[str, Proc] = {}

    def start(*modules: str, wait: bool = True, env: dict[str, str] | None = None) -> None:
        for module in modules:
            procs[module] = Proc(["serve", module, "--config", str(config), "--speed", "60"],
                                 tmp_path / f"{module}.log", env)
        for module in modules if wait else ():
            procs[module].wait_for_line(f"gRPC listening on 127.0.0.1:{ports[module]}")

    try:
        start(*MODULES)
        procs["risk"].wait_for_line("risk started")
        wait_for_stream(procs["oms"], "RiskService/StreamDecisions")  # decisions reach it from now on
        yield ports, procs, start
    finally:
        for proc in procs.values():
            proc.stop()


def wait_for_stream(proc: Proc, method: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: [line for line in proc.lines if "upstream stream connected" in line and method in line],
               timeout_s)


def kill(proc: Proc) -> None:
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)


def submit(port: int, client_order_id: str) -> dict:
    """Risk's decision on a market order; refused (FailedPrecondition) until risk has the instrument's first tick to
    value it at, so asked again until then."""
    def decided() -> dict | None:
        result = grpcurl("-d", json.dumps({"order": {**ORDER, "client_order_id": client_order_id}}),
                         f"127.0.0.1:{port}", "neopulse.v1.RiskService/SubmitOrder")
        if result.returncode and "no last price" in result.stderr:
            return None
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["decision"]

    return wait_until(decided, timeout_s=30)


def risk_holds(port: int, quantity: int) -> bool:
    """Risk has applied the fills of its orders up to `quantity` (their last update reached it)."""
    state = grpcurl_json(f"127.0.0.1:{port}", "neopulse.v1.RiskService/GetRiskState")
    return sum(int(p.get("net_quantity", 0)) for p in state.get("positions", [])) == quantity


def test_risk_reports_nothing_lost_when_the_oms_crashes_after_it_received_every_update(trio):
    """Risk's order-update bridge reported 'Order-path messages lost' after every crash of the OMS, though it had
    every update the OMS recorded: the new OMS now says how far its ledger got."""
    ports, procs, start = trio
    assert submit(ports["risk"], "before-the-crash")["accepted"]
    wait_until(lambda: risk_holds(ports["risk"], 1), timeout_s=60)  # TRADED, the OMS's last update, reached risk
    kill(procs["oms"])

    start("oms")

    line = procs["risk"].wait_for_line("everything it published before had arrived", timeout_s=30)
    assert "StreamOrderUpdates" in line
    assert not [line for line in procs["risk"].lines if LOST in line]


def orders(port: int) -> list[dict]:
    return grpcurl_json("-d", '{"limit": 1000}', f"127.0.0.1:{port}", "neopulse.v1.OrderService/ListOrders").get(
        "orders", [])


def test_an_oms_that_never_took_a_decision_takes_those_risk_made_before_it_connected(trio):
    """With no decision in its ledger the OMS streamed risk's decisions live from its connection: one risk accepted
    while the OMS was down (or before its stream was back) was never placed, and nothing said so."""
    ports, procs, start = trio
    kill(procs["oms"])  # before its first order: its ledger holds no decision
    assert submit(ports["risk"], "while-the-new-oms-was-down")["accepted"]

    start("oms")

    placed = wait_until(lambda: [o for o in orders(ports["oms"])
                                 if o["client_order_id"] == "while-the-new-oms-was-down"], timeout_s=30)
    assert len(placed) == 1


def test_an_oms_started_after_risk_restarted_is_told_of_a_decision_it_never_received(trio):
    """The OMS resumes risk's decisions after the last one in its ledger, but a risk restarted meanwhile holds none
    of its predecessor's: a decision accepted while the OMS was down was never placed, and nothing said so. A risk
    that stops cleanly now saves how far its decisions went, and the OMS's bridge compares."""
    ports, procs, start = trio
    assert submit(ports["risk"], "placed")["accepted"]
    wait_until(lambda: orders(ports["oms"]), timeout_s=30)  # in the ledger: where a restarted OMS resumes
    kill(procs["oms"])
    assert submit(ports["risk"], "never-placed")["accepted"]
    assert procs["risk"].stop() == 0

    start("risk", "oms")

    line = procs["oms"].wait_for_line(LOST, timeout_s=30)
    assert "StreamDecisions" in line and '"cause": "restarted"' in line
    assert [o["client_order_id"] for o in orders(ports["oms"])] == ["placed"]


def test_risk_and_the_oms_stopped_and_started_again_report_nothing_lost(trio):
    """As every morning: the OMS resumes from its ledger's last decision, risk is a new process. Its last decision
    before the stop was a rejection, which the OMS never takes: not a loss either."""
    ports, procs, start = trio
    assert submit(ports["risk"], "placed")["accepted"]
    too_big = {"order": {**ORDER, "client_order_id": "refused", "quantity": "100000"}}
    assert grpcurl("-d", json.dumps(too_big), f"127.0.0.1:{ports['risk']}",
                   "neopulse.v1.RiskService/SubmitOrder").returncode != 0  # rejected: a decision all the same
    wait_until(lambda: risk_holds(ports["risk"], 1), timeout_s=60)
    assert procs["risk"].stop() == 0 and procs["oms"].stop() == 0

    start("risk", "oms")

    line = procs["oms"].wait_for_line("everything it published before had arrived", timeout_s=30)
    assert "StreamDecisions" in line  # risk's saved record, compared
    wait_for_stream(procs["risk"], "OrderService/StreamOrderUpdates")
    assert not [line for m in ("oms", "risk") for line in procs[m].lines if LOST in line]


def test_a_loss_reported_once_is_not_reported_again_when_the_oms_is_restarted(trio):
    """The OMS resumed from its ledger's last decision at every start, so a loss it had reported was reported again
    at each start until its next order: restarted as the alert says, or the next morning, it raised the same CRITICAL.
    It now keeps, at a clean stop, the point up to which risk's decisions were received or reported."""
    ports, procs, start = trio
    assert submit(ports["risk"], "placed")["accepted"]
    wait_until(lambda: orders(ports["oms"]), timeout_s=30)
    kill(procs["oms"])
    assert submit(ports["risk"], "never-placed")["accepted"]
    assert procs["risk"].stop() == 0
    start("risk", "oms")
    assert "StreamDecisions" in procs["oms"].wait_for_line(LOST, timeout_s=30)  # reported: once is right
    assert procs["oms"].stop() == 0

    start("oms")

    wait_for_stream(procs["oms"], "RiskService/StreamDecisions")
    assert not [line for line in procs["oms"].lines if LOST in line]


def test_a_possible_loss_after_a_risk_crash_is_not_reported_again_when_the_oms_is_restarted(trio):
    ports, procs, start = trio
    assert submit(ports["risk"], "placed")["accepted"]
    wait_until(lambda: orders(ports["oms"]), timeout_s=30)
    kill(procs["risk"])
    start("risk")
    assert '"cause": "unrecorded"' in procs["oms"].wait_for_line(LOST, timeout_s=30)  # it may have been lost
    assert procs["oms"].stop() == 0

    start("oms")

    wait_for_stream(procs["oms"], "RiskService/StreamDecisions")
    assert not [line for line in procs["oms"].lines if LOST in line]


def test_a_decision_risk_accepted_after_the_oms_stopped_cleanly_is_still_reported(trio):
    """Where a cleanly stopped OMS keeps its decisions accounted for is where risk's process started: what that
    process accepted later, while the OMS was down, is still compared with risk's record."""
    ports, procs, start = trio
    assert submit(ports["risk"], "placed")["accepted"]
    wait_until(lambda: orders(ports["oms"]), timeout_s=30)
    assert procs["oms"].stop() == 0
    assert submit(ports["risk"], "never-placed")["accepted"]
    assert procs["risk"].stop() == 0

    start("risk", "oms")

    line = procs["oms"].wait_for_line(LOST, timeout_s=30)
    assert "StreamDecisions" in line and '"cause": "restarted"' in line


def test_risk_restarted_cleanly_while_the_oms_runs_loses_nothing_and_reports_nothing(trio):
    """The OMS's bridge finds a new risk process after a clean stop: its record ends where the stream did (nothing to
    report), and the new process's decisions, numbered above the old one's, are placed (none dropped as seen)."""
    ports, procs, start = trio
    assert submit(ports["risk"], "before")["accepted"]
    wait_until(lambda: orders(ports["oms"]), timeout_s=30)
    assert procs["risk"].stop() == 0

    start("risk")

    wait_until(lambda: len([line for line in procs["oms"].lines if "upstream stream connected" in line
                            and "RiskService/StreamDecisions" in line]) >= 2, timeout_s=30)
    assert submit(ports["risk"], "after")["accepted"]
    wait_until(lambda: {o["client_order_id"] for o in orders(ports["oms"])} == {"before", "after"}, timeout_s=30)
    assert not [line for m in ("oms", "risk") for line in procs[m].lines if LOST in line]


def test_risk_started_before_the_oms_listened_gets_the_updates_of_its_first_orders(trio):
    """Risk's order-update stream, opened live, retried an OMS not yet listening at ever longer intervals; risk
    started as soon as the OMS served and took an order before the stream's next try: the order's fill was
    published before the stream opened, so risk never had it and counted the order as open and its position as
    flat (CI saw it under load). Risk now starts once its streams from the OMS are open."""
    ports, procs, start = trio
    assert procs["risk"].stop() == 0 and procs["oms"].stop() == 0
    start("risk", wait=False)
    time.sleep(7)  # risk waits for the OMS; its stream's tries are seconds apart by now
    start("oms")

    procs["risk"].wait_for_line(f"gRPC listening on 127.0.0.1:{ports['risk']}")
    assert submit(ports["risk"], "first")["accepted"]
    wait_until(lambda: risk_holds(ports["risk"], 1), timeout_s=20)


def test_risk_refused_its_streams_by_the_oms_stops_with_the_reason_instead_of_running_blind(trio):
    """The OMS asks for a token risk does not have: its health answers (no token needed), its streams do not. Risk
    started all the same and ran without ever seeing an order update, its log full of retries. It now stops."""
    _, procs, start = trio
    assert procs["risk"].stop() == 0 and procs["oms"].stop() == 0
    start("oms", env={"NEOPULSE_GRPC_AUTH_TOKEN": "the-oms-token"})

    start("risk", wait=False, env={"NEOPULSE_SPLIT_UPSTREAM_WAIT_S": "3"})

    code, output = procs["risk"].output(timeout_s=60)
    assert code == 2
    assert "StreamOrderUpdates did not open within 3.0s though oms serves (UNAUTHENTICATED" in output
    assert "risk started" not in output
