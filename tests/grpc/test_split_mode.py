"""Split mode for real: five `neopulse serve` processes on loopback run a session; orders and fills reach
the OMS ledger, ticks the tick store (PostgreSQL); a module killed and restarted rejoins, no order twice."""

import asyncio
import json
import signal
import time
import uuid

import asyncpg
import pytest

from shared.ports import free_loopback_port as free_port
from tests.grpc.procs import Proc, ctl, grpcurl, grpcurl_json, wait_until
from tests.grpc.test_monolith import limit_buy_below_market, price_below

pytestmark = pytest.mark.slow
MODULES = ("ingestion", "strategy", "risk", "oms", "notifier")


async def _create_database(admin_dsn: str) -> str:
    name = f"split_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


async def _count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def _ledger_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT client_order_id, status FROM order_ledger")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def ledger_dsn(pg_server):
    return asyncio.run(_create_database(pg_server))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ledger_dsn):
    folder = tmp_path_factory.mktemp("split")
    ports = {m: free_port() for m in MODULES}
    config = folder / "split.toml"
    lines = [f'database_url = "{ledger_dsn}"', "[split]", f"session_wall_start_ns = {time.time_ns()}"]
    lines += [f'{m}_addr = "127.0.0.1:{p}"' for m, p in ports.items()]
    # The walk at --speed 60 and full volatility (the strategy's fills need it) moves a price by percents in the
    # seconds a busy machine takes between reading it and risk checking a manual order 3-4% away: a band of 30%
    # keeps those tests about the order, not the race. No test here is about the band.
    lines += ["[risk]", "price_band_bps = 3000"]
    # The strategy moves its resting limits to each candle's close (at most 3 times an order): its ModifyOrder goes
    # to the OMS's process, which asks risk's.
    lines += ["[[strategy.strategies]]", 'name = "momentum_rsi"', 'kind = "MOMENTUM_RSI"',
              "[strategy.strategies.params]", "max_reprices = 3"]
    config.write_text("\n".join(lines) + "\n")
    procs: dict[str, Proc] = {}

    def launch(module: str) -> Proc:
        # The ledger, the tick store, and the stored ticks' candles the strategy warms up from.
        db = [] if module in ("oms", "ingestion", "strategy") else ["--no-db"]
        procs[module] = Proc(["serve", module, "--config", str(config), *db, "--speed", "60"],
                             folder / f"{module}.log")
        return procs[module]

    def start(module: str) -> Proc:
        launch(module).wait_for_line(f"gRPC listening on 127.0.0.1:{ports[module]}")
        return procs[module]

    try:
        for module in MODULES:  # all at once, as compose starts them: each waits for what it reads as it starts
            launch(module)
        for module in MODULES:
            procs[module].wait_for_line(f"gRPC listening on 127.0.0.1:{ports[module]}")
        yield ports, procs, start
    finally:  # also when a process never came up: none is left running
        for proc in procs.values():
            proc.stop()


def orders(port: int) -> list[dict]:
    return grpcurl_json("-d", '{"limit": 100000}', f"127.0.0.1:{port}",
                        "neopulse.v1.OrderService/ListOrders").get("orders", [])


def traded(port: int) -> list[dict]:
    """The strategies' filled orders (not a manual one another test placed)."""
    return [o for o in orders(port) if o["status"] == "ORDER_STATUS_TRADED" and o["request"].get("signal_id")]


def test_risk_and_strategy_start_after_the_oms_and_read_its_orders_and_positions(cluster):
    """Launched before the OMS (as the fixture does), they wait for it: started without its snapshots they
    would take themselves for flat after a restart."""
    _, procs, _ = cluster

    procs["risk"].wait_for_line("risk started")
    procs["strategy"].wait_for_line("strategy ready")
    # Its own pool: it read the stored ticks before its first live one (none of them closed yet: 0 candles).
    assert [line for line in procs["strategy"].lines if "strategies warmed up from the stored candles" in line]

    for module in ("risk", "strategy"):
        assert not [line for line in procs[module].lines if "no order service" in line], module


def test_ctl_reads_each_module_at_its_split_address(cluster, tmp_path):
    """`neopulse ctl --split` finds every module where [split] says it listens: feed (ingestion), trading state
    (risk), strategies, orders (the OMS), mode and uptime (the notifier)."""
    ports, procs, _ = cluster
    config = tmp_path / "ctl.toml"
    config.write_text("[split]\n" + "".join(f'{m}_addr = "127.0.0.1:{p}"\n' for m, p in ports.items()))
    procs["risk"].wait_for_line("risk started")

    status = ctl("--split", "--config", str(config), "status")
    orders = ctl("--split", "--config", str(config), "orders", "today")
    quoted = ctl("--split", "--config", str(config), "quote", "RELIANCE-EQ")
    funds = ctl("--split", "--config", str(config), "funds")

    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("NeoPulse paper · up ")
    assert "Feed: synthetic connected" in status.stdout and "Trading: ACTIVE" in status.stdout
    assert "Strategies: momentum_rsi" in status.stdout and "unavailable" not in status.stdout
    assert orders.returncode == 0, orders.stderr
    assert quoted.returncode == 0 and quoted.stdout.startswith("RELIANCE-EQ ₹"), quoted.stdout + quoted.stderr
    assert funds.returncode == 0 and funds.stdout.startswith("Funds (paper account at "), funds.stdout + funds.stderr


def test_a_manual_order_is_changed_at_the_oms_after_risk_across_processes_checked_it(cluster, ledger_dsn):
    """ModifyOrder at the OMS's port: the OMS asks risk (its own process) with CheckModify, then changes the order."""
    ports, procs, _ = cluster
    procs["risk"].wait_for_line("risk started")
    oms = f"127.0.0.1:{ports['oms']}"
    ingestion = f"127.0.0.1:{ports['ingestion']}"
    # The walk at --speed 60 (full volatility: other tests need the strategy's fills) can fall to a resting buy and
    # fill it first: tried again from a new order then.
    def modify(order_id: str, **change: int):
        return grpcurl("-d", json.dumps({"order_id": order_id, **change}), oms, "neopulse.v1.OrderService/ModifyOrder")

    for _ in range(5):
        order = limit_buy_below_market(ingestion)
        placing = grpcurl("-d", json.dumps({"order": order}), oms, "neopulse.v1.OrderService/PlaceOrder")
        assert placing.returncode == 0, placing.stderr
        placed = json.loads(placing.stdout)["order"]
        too_big = modify(placed["client_order_id"], quantity=10**7)
        new_price = price_below(ingestion, order, 300)
        answer = modify(placed["client_order_id"], quantity=2, price_paise=new_price)
        grpcurl("-d", json.dumps({"order_id": placed["internal_id"]}), oms, "neopulse.v1.OrderService/CancelOrder")
        if not any("already TRADED" in r.stderr for r in (too_big, answer)):
            break
    assert answer.returncode == 0, answer.stderr
    changed = json.loads(answer.stdout)["order"]

    assert (int(changed["request"]["quantity"]), int(changed["request"]["price_paise"])) == (2, new_price)
    assert "Code: FailedPrecondition" in too_big.stderr and "exceeds max_order_quantity" in too_big.stderr


async def _audit(dsn: str, client_order_id: str) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval("SELECT metadata -> 'audit_log' FROM order_ledger WHERE client_order_id = $1",
                                    client_order_id)
        return json.loads(found) if found else []
    finally:
        await conn.close()


def test_a_strategy_moves_its_resting_order_through_the_oms_and_risk_processes(cluster, ledger_dsn):
    """MOMENTUM_RSI with max_reprices: the strategy's process asks the OMS's (ModifyOrder), which asks risk's
    (CheckModify) and records the change ahead in the ledger."""
    _, procs, _ = cluster

    line = wait_until(lambda: next((x for x in procs["strategy"].lines if "strategy's order changed" in x), None),
                      timeout_s=120)

    changed = json.loads(line[line.index("{"):])
    audit = asyncio.run(_audit(ledger_dsn, changed["order_id"]))
    asked = [entry["modify_request"] for entry in audit if "modify_request" in entry]
    assert asked and int(asked[0]["to"]["price_paise"]) == changed["price_paise"], audit
    assert asked[0]["by"] == changed["strategy"], audit  # its own change (strategy_tag over gRPC), not by hand


def test_strategy_orders_are_filled_and_land_in_the_oms_ledger(cluster, ledger_dsn):
    ports, _, _ = cluster

    filled = wait_until(lambda: traded(ports["oms"]), timeout_s=90)

    assert int(filled[0]["filled_quantity"]) > 0
    assert filled[0]["request"]["signal_id"]
    stored = {r["client_order_id"]: r["status"] for r in asyncio.run(_ledger_rows(ledger_dsn))}
    assert stored[filled[0]["client_order_id"]] == "TRADED"
    assert asyncio.run(_count(ledger_dsn, "market_ticks")) > 0
    assert asyncio.run(_count(ledger_dsn, "instrument_master")) > 0


def test_restarted_risk_module_rejoins_and_no_order_is_placed_twice(cluster, ledger_dsn):
    ports, procs, start = cluster
    before = len(wait_until(lambda: orders(ports["oms"]), timeout_s=90))
    procs["risk"].proc.send_signal(signal.SIGKILL)
    procs["risk"].proc.wait(10)

    start("risk")
    def more_orders() -> list[dict] | None:
        now = orders(ports["oms"])
        return now if len(now) > before + 2 else None

    after = wait_until(more_orders, timeout_s=120)

    signal_ids = [o["request"]["signal_id"] for o in after if o["request"].get("signal_id")]
    client_ids = [o["client_order_id"] for o in after]
    assert len(signal_ids) == len(set(signal_ids))
    assert len(client_ids) == len(set(client_ids))
    assert set(client_ids) <= {r["client_order_id"] for r in asyncio.run(_ledger_rows(ledger_dsn))}


def test_a_restarted_strategy_module_takes_its_positions_and_working_orders_back_from_the_oms(cluster):
    """Without them it would take itself for flat: enter again, and never exit what it holds. A pause set before
    the crash holds after it (strategy_state in the database), with its reason."""
    ports, procs, start = cluster
    wait_until(lambda: traded(ports["oms"]), timeout_s=90)
    strategy = f"127.0.0.1:{ports['strategy']}"
    grpcurl("-d", '{"name": "momentum_rsi", "reason": "before the crash"}', strategy,
            "neopulse.v1.StrategyService/PauseStrategy")
    procs["strategy"].proc.send_signal(signal.SIGKILL)
    procs["strategy"].proc.wait(10)

    restarted = start("strategy")

    try:
        restarted.wait_for_line("strategy positions restored from the order service", timeout_s=30)
        (info,) = grpcurl_json(strategy, "neopulse.v1.StrategyService/ListStrategies")["strategies"]
        assert (info.get("paused"), info.get("pause_reason")) == (True, "before the crash")
    finally:  # the other tests want it trading
        grpcurl("-d", '{"name": "momentum_rsi"}', strategy, "neopulse.v1.StrategyService/ResumeStrategy")


def test_a_restarted_oms_takes_the_decisions_risk_made_while_it_was_down(cluster, ledger_dsn):
    """Risk counts an accepted decision as an open order until the OMS reports on it: one the OMS never hears of
    would hold a slot all day, and its order would never be placed. A restarted OMS takes risk's decisions from
    after the last one in its ledger, not live from its start."""
    ports, procs, start = cluster
    wait_until(lambda: orders(ports["oms"]), timeout_s=90)  # the OMS has written decisions ahead
    procs["oms"].proc.send_signal(signal.SIGKILL)
    procs["oms"].proc.wait(10)
    order = {"client_order_id": "while-the-oms-was-down", "token": "2885", "exchange_segment": "nse_cm",
             "side": "SIDE_BUY", "quantity": "1", "order_type": "ORDER_TYPE_MARKET", "product": "PRODUCT_CNC"}

    decided = grpcurl_json("-d", json.dumps({"order": order}), f"127.0.0.1:{ports['risk']}",
                           "neopulse.v1.RiskService/SubmitOrder")
    assert decided["decision"]["accepted"]
    start("oms")

    at_the_broker = ("ORDER_STATUS_OPEN", "ORDER_STATUS_TRADED", "ORDER_STATUS_PARTIALLY_FILLED")
    # Listed from its write-ahead (PENDING_NEW, then SUBMITTED): at the broker once its acknowledgement is booked.
    placed = wait_until(lambda: [o for o in orders(ports["oms"]) if o["client_order_id"] == order["client_order_id"]
                                 and o["status"] in at_the_broker], timeout_s=60)
    assert len(placed) == 1
    client_ids = [o["client_order_id"] for o in orders(ports["oms"])]
    assert len(client_ids) == len(set(client_ids))
    assert order["client_order_id"] in {r["client_order_id"] for r in asyncio.run(_ledger_rows(ledger_dsn))}


def test_every_process_stops_cleanly_on_sigterm(cluster):
    _, procs, _ = cluster

    codes = {m: procs[m].stop() for m in MODULES}

    assert codes == dict.fromkeys(MODULES, 0)


def test_a_process_whose_upstream_never_serves_exits_with_the_reason_and_nothing_else(procs, tmp_path):
    """It exited 2 with the reason, then Python's 'Event loop is closed' traceback from its gRPC server, never
    stopped, followed: the reason scrolled away under it."""
    config = tmp_path / "split.toml"
    config.write_text("[split]\n" + "".join(f'{m}_addr = "127.0.0.1:{free_port()}"\n' for m in MODULES))
    risk = procs.neopulse(["serve", "risk", "--config", str(config), "--no-db"], tmp_path / "risk.log",
                          env={"NEOPULSE_SPLIT_UPSTREAM_WAIT_S": "1"})

    code, output = risk.output(timeout_s=60)

    assert code == 2
    assert "neopulse: ingestion at 127.0.0.1:" in output and "is not serving after 1.0s" in output
    assert "Traceback" not in output and "Event loop is closed" not in output
