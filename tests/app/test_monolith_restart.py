"""A monolith restarted on the same database: risk counts the positions and orders the OMS rebuilt from the ledger.

Real parts: two monolith runs (synthetic market, paper broker) one after the other on one embedded PostgreSQL
database, manual orders through OrderService/PlaceOrder -> risk -> oms.
"""

from __future__ import annotations

import asyncio

import pytest

from services.app.config import AppSettings
from services.app.monolith import Monolith
from shared import rpc
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2, trading_pb2
from tests.notifier.test_monolith import place_once_priced

pytestmark = pytest.mark.slow


def settings(database: str) -> AppSettings:
    return AppSettings(source="synthetic", use_database=True, database_url=database, grpc_port=0, speed=60.0,
                       symbols=["SBIN-EQ"])


async def run_until(app, work) -> None:
    stop = asyncio.Event()

    async def body() -> None:
        try:
            await app.started.wait()
            await work()
        finally:
            stop.set()

    await asyncio.wait_for(app.run(extra=[body], stop=stop), 60)


async def until_holding(app: Monolith, quantity: int) -> None:
    """Until the OMS books a position of `quantity` (a market order filled), polled for up to 20 s."""
    for _ in range(400):
        positions = await app.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        if any(p.net_quantity == quantity for p in positions.positions):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the market order never filled")


async def test_after_a_restart_risk_counts_the_position_the_oms_rebuilt_from_the_ledger(database):
    first = Monolith(settings(database), {"strategy": {"strategies": []}})

    async def buy_one() -> None:
        listed = await first.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        sbin = next(i for i in listed.instruments if i.symbol == "SBIN-EQ")
        await place_once_priced(first.bus, sbin)
        await until_holding(first, 1)

    await run_until(first, buy_one)

    second = Monolith(settings(database), {"strategy": {"strategies": []}})
    seen: list[risk_pb2.GetRiskStateResponse] = []

    async def ask_risk() -> None:
        seen.append(await second.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest()))

    await run_until(second, ask_risk)

    (state,) = seen
    assert [(p.symbol, p.product, p.net_quantity) for p in state.positions if p.net_quantity] == [
        ("SBIN-EQ", trading_pb2.PRODUCT_MIS, 1)]


async def test_a_replay_on_the_same_database_leaves_the_order_ledger_and_risk_state_alone(database):
    """A replay reads the stored ticks; its paper orders are its own. It once shared the ledger: it reconciled the
    real run's open orders into its own paper broker, filled them from the replayed candles and wrote its orders
    into today's ledger, where the next real start counted them as positions."""
    import asyncpg

    first = Monolith(settings(database), {"strategy": {"strategies": []}})

    async def rest_a_limit_and_halt() -> None:
        listed = await first.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        sbin = next(i for i in listed.instruments if i.symbol == "SBIN-EQ")
        await place_once_priced(first.bus, sbin)  # a market buy, so ticks (and a last price) are stored
        paid = 0
        for _ in range(400):  # until it fills
            orders = await first.bus.call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest())
            paid = max(o.average_price_paise for o in orders.orders)
            if paid:
                break
            await asyncio.sleep(0.05)
        tick = sbin.tick_size_paise
        low = trading_pb2.OrderRequest(client_order_id="resting", token=sbin.token, side=trading_pb2.SIDE_BUY,
                                       quantity=1, order_type=trading_pb2.ORDER_TYPE_LIMIT,
                                       price_paise=paid * 96 // 100 // tick * tick)  # 4% below: rests
        await first.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=low))
        await first.bus.call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(engaged=True, reason="keep"))

    await run_until(first, rest_a_limit_and_halt)
    conn = await asyncpg.connect(database)
    try:
        before = await conn.fetch("SELECT client_order_id, status, filled_qty FROM order_ledger ORDER BY 1")
        risk_before = await conn.fetchval("SELECT value FROM risk_state")
        replay = Monolith(AppSettings(source="replay", use_database=True, database_url=database, grpc_port=0,
                                      speed=600.0, symbols=["SBIN-EQ"]), {})
        states: list[int] = []

        async def let_it_trade() -> None:
            await asyncio.sleep(2.0)
            states.append((await replay.bus.call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())).state)

        await run_until(replay, let_it_trade)
        after = await conn.fetch("SELECT client_order_id, status, filled_qty FROM order_ledger ORDER BY 1")
        risk_after = await conn.fetchval("SELECT value FROM risk_state")
    finally:
        await conn.close()

    assert ("resting", "OPEN", 0) in [tuple(r) for r in before]
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert risk_after == risk_before and states == [risk_pb2.TRADING_STATE_ACTIVE]  # the real switch is not its


async def test_a_strategy_paused_before_a_restart_starts_paused_and_a_replay_neither_sees_nor_changes_it(database):
    """The monolith keeps its strategies' pauses in the database (strategy_state): the next run starts the strategy
    paused, with the reason; a replay on the same database runs its strategies as configured and saves nothing."""
    import asyncpg

    from shared.contracts import strategy_pb2

    first = Monolith(settings(database), {})

    async def pause() -> None:
        await first.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(
            name="momentum_rsi", reason="results due"))

    await run_until(first, pause)
    seen: list[strategy_pb2.StrategyInfo] = []

    def asking(app: Monolith):
        async def ask() -> None:
            listed = await app.bus.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())
            seen.extend(listed.strategies)
        return ask

    second = Monolith(settings(database), {})
    await run_until(second, asking(second))
    replay = Monolith(AppSettings(source="replay", use_database=True, database_url=database, grpc_port=0,
                                  speed=600.0, symbols=["SBIN-EQ"]), {})
    conn = await asyncpg.connect(database)
    try:
        saved = await conn.fetchval("SELECT value FROM strategy_state WHERE name = 'momentum_rsi'")
        await run_until(replay, asking(replay))
        assert await conn.fetchval("SELECT value FROM strategy_state WHERE name = 'momentum_rsi'") == saved
    finally:
        await conn.close()

    assert [(s.name, s.paused, s.pause_reason) for s in seen] == [
        ("momentum_rsi", True, "results due"), ("momentum_rsi", False, "")]


async def store_tick_at(database: str, hour: int, minute: int) -> None:
    """One tick of today's simulated session (the day a SimClock opens) stored at hour:minute:30 IST."""
    import asyncpg

    from shared.clock import SimClock, day_of, ist_ns
    from shared.db import partitions

    day = day_of(SimClock().start_ns)
    conn = await asyncpg.connect(database)
    try:
        await partitions.ensure_days(conn, [day])
        await conn.execute(
            "INSERT INTO market_ticks (ts, token, seq, exchange_segment, ltp, ltq, volume, bid, ask, bid_qty, ask_qty,"
            " open, high, low, close, oi, atp) VALUES (to_timestamp($1::float8), 3045, 1, 'nse_cm', 60000, 1, 1, 0, 0,"
            " 0, 0, 0, 0, 0, 0, 0, 0)", (ist_ns(day, hour, minute, 30)) / 1e9)
    finally:
        await conn.close()


async def simulated_time_at_start(database: str) -> tuple[int, int]:
    from shared.clock import ist_datetime

    app = Monolith(settings(database), {"strategy": {"strategies": []}})
    seen: list[int] = []

    async def note_the_time() -> None:
        seen.append(app.clock.now_ns())

    await run_until(app, note_the_time)
    at = ist_datetime(seen[0])
    return at.hour, at.minute


@pytest.mark.parametrize(("stored", "starts"), [(None, (9, 15)), ((10, 42), (10, 43)), ((15, 27), (9, 15))],
                         ids=["fresh", "earlier-run", "ran-to-close"])
async def test_a_simulated_session_resumes_after_the_last_tick_an_earlier_run_stored_today(database, stored, starts,
                                                                                         caplog):
    """A second `make run` the same day: trading the same minutes again would repeat the earlier orders' signal ids
    (refused as DUPLICATE_ORDER) next to positions restored from a time still to come."""
    if stored is not None:
        await store_tick_at(database, *stored)

    hour, minute = await simulated_time_at_start(database)

    late_by = hour * 60 + minute - (starts[0] * 60 + starts[1])
    assert 0 <= late_by <= 2, (hour, minute)  # the start itself takes a second or two: a minute or two at speed 60
    assert ("ran to its close" in caplog.text) == (stored == (15, 27))
