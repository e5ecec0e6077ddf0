"""A strategy changing its own working order, end to end on one Bus: the real StrategyModule (MOMENTUM_RSI with
max_reprices), RiskModule, OmsModule and VirtualBroker, the ledger in memory and in PostgreSQL. Ticks go onto the
bus as ingestion would put them; only ListInstruments is a stand-in.

The market: SBIN falls for five minutes, then jumps (RSI crosses 60 above the EMA: a BUY LIMIT at the close). Every
tick quotes a 0.50 spread, so a buy limit at the last price is not marketable on arrival: it rests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date

import pytest
from prometheus_client import REGISTRY

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.ledger_pg import PgLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.strategy.config import StrategySettings
from services.strategy.module import StrategyModule
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until
from tests.helpers import stop_worlds

T0915 = ist_ns(date(2026, 1, 20), 9, 15)
SBIN = 3045
FALLING_THEN_JUMP = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]  # rsi/ema period 3: BUY LIMIT 100.00 at the last


def tick(minute: int, second: int, price: int, ltq: int = 10) -> market_pb2.Tick:
    return market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + minute * 60 * NS + second * NS,
                           ltp_paise=price, bid_paise=price - 25, ask_paise=price + 25, ltq=ltq, recv_ns=time.time_ns())


def minutes(first: int, prices: list[int]) -> list[market_pb2.Tick]:
    """One tick per minute at :05 from minute `first`, then the next minute's :00 tick at the last price."""
    out = [tick(first + i, 5, p) for i, p in enumerate(prices)]
    return [*out, tick(first + len(prices), 0, prices[-1])]


def changes_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("neopulse_strategy_order_changes_total",
                                     {"strategy": "mom", "kind": "change", "outcome": outcome}) or 0.0


@dataclass
class World:
    bus: Bus
    clock: ManualClock
    strategy: StrategyModule
    ledger: MemoryLedger | PgLedger
    oms: OmsModule
    updates: list[t.OrderUpdate] = field(default_factory=list)

    async def feed(self, ticks: list[market_pb2.Tick]) -> None:
        self.clock.set(ticks[-1].ts_ns)
        await self.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=ticks))
        await self.bus.drain()

    def order(self, cid: str = "") -> t.OrderUpdate:
        if not cid:
            (cid,) = {u.client_order_id for u in self.updates}
        found = self.oms.engine.lookup(cid)
        assert found is not None
        return found

    @property
    def plugin(self):
        assert self.strategy.engine is not None
        return self.strategy.engine.strategies["mom"]


@pytest.fixture(params=["memory", "postgres"])
async def make_world(request, db_pool) -> AsyncIterator:
    tasks: list[asyncio.Task] = []
    worlds: list[World] = []

    async def make(max_reprices: int, params: dict | None = None, **risk: object) -> World:
        bus, clock = Bus(), ManualClock(T0915)

        async def list_instruments(_: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments(["SBIN-EQ"]))

        bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        ledger = MemoryLedger() if request.param == "memory" else PgLedger(db_pool)
        oms = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2),
                        VirtualBroker(None, ChargeModel.default(), clock), ledger, clock)
        risk_module = RiskModule(bus, cfg.load(RiskSettings, {}, loss_check_interval_ms=0,
                                               max_orders_per_second=10_000, **risk), clock)
        strategy = StrategyModule(bus, cfg.load(StrategySettings, {"strategy": {
            # Candles close by their next minute's tick: the clock jumps a minute ahead of a batch as it is fed,
            # and a timer closing at once could take a minute before the batch's ticks of that minute came in.
            "close_check_ms": 10, "close_grace_ms": 60_000, "cancel_working_after_s": 0, "strategies": [
                {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"],
                 "params": {"rsi_period": 3, "ema_period": 3, "max_reprices": max_reprices,
                            "limit_slippage_pct": 0, **(params or {})}}]}}),
                                  clock)
        w = World(bus, clock, strategy, ledger, oms)

        async def collect(update: t.OrderUpdate) -> None:
            w.updates.append(update)

        bus.subscribe(Topic.ORDER_UPDATES, "test", collect)
        tasks.append(asyncio.create_task(bus.run()))
        await oms.start()
        tasks.append(asyncio.create_task(oms.run()))
        await risk_module.start()
        await strategy.start()
        tasks.append(asyncio.create_task(strategy.run()))
        worlds.append(w)
        return w

    yield make
    await stop_worlds(tasks, [w.oms for w in worlds])


async def resting_entry(w: World) -> t.OrderUpdate:
    await w.feed(minutes(0, FALLING_THEN_JUMP))
    await until(lambda: any(u.status == t.ORDER_STATUS_OPEN for u in w.updates))
    order = w.order()
    assert (order.status, order.request.side, order.request.price_paise) == (t.ORDER_STATUS_OPEN, t.SIDE_BUY, 100_00)
    return order


async def test_a_resting_entry_follows_the_close_once_and_fills_at_its_new_price(make_world):
    w = await make_world(max_reprices=1)
    made = changes_counted("made")
    order = await resting_entry(w)
    # Minute 6 rises to 102 without coming down to 100: the entry is left behind, and is moved to the close.
    await w.feed([tick(6, 5, 101_00), tick(6, 20, 102_00), tick(7, 0, 102_00)])
    await until(lambda: w.order().request.price_paise == 102_00 and w.order().status == t.ORDER_STATUS_OPEN)
    await until(lambda: changes_counted("made") == made + 1)  # counted once the OMS's answer is back
    assert w.plugin.working_order(SBIN).changes == 1
    # Minute 7 closes higher again: one change was all max_reprices allows.
    await w.feed([tick(7, 30, 102_50), tick(8, 0, 102_50)])
    assert (w.order().status, w.order().request.price_paise) == (t.ORDER_STATUS_OPEN, 102_00)
    # Minute 8 dips to 101.50, below the new limit (the paper broker fills from the first candle after a change).
    await w.feed([tick(8, 10, 101_50), tick(8, 30, 102_00), tick(9, 0, 102_00)])
    await until(lambda: w.order().status == t.ORDER_STATUS_TRADED)
    done = w.order()
    assert (done.filled_quantity, done.request.price_paise, done.average_price_paise) == (1, 102_00, 102_00)
    assert changes_counted("made") == made + 1
    stored = await w.ledger.get(order.client_order_id)
    assert (stored.status, stored.request.price_paise) == (t.ORDER_STATUS_TRADED, 102_00)
    assert [u.status for u in w.updates if u.status == t.ORDER_STATUS_MODIFY_PENDING] == [
        t.ORDER_STATUS_MODIFY_PENDING]
    assert w.plugin.position(SBIN) == 1 and w.plugin.working_order(SBIN) is None


async def test_a_change_risk_refuses_leaves_the_order_as_it_was_and_the_next_candle_may_ask_again(make_world):
    # An order of 1 share is worth at most 101.00: the entry at 100.00 passes, a move to 102.00 does not.
    w = await make_world(max_reprices=2, max_order_value=101)
    made, refused = changes_counted("made"), changes_counted("refused")
    await resting_entry(w)
    await w.feed(minutes(6, [102_00]))
    await until(lambda: changes_counted("refused") == refused + 1)
    assert (w.order().status, w.order().request.price_paise) == (t.ORDER_STATUS_OPEN, 100_00)
    # Minute 7 closes at 100.50, still above the EMA and within the value limit: asked again, and made.
    await w.feed(minutes(7, [100_50]))
    await until(lambda: w.order().request.price_paise == 100_50)
    await until(lambda: changes_counted("made") == made + 1)
    assert w.order().status == t.ORDER_STATUS_OPEN
    assert w.plugin.working_order(SBIN).changes == 2


async def test_without_max_reprices_a_resting_entry_is_never_changed(make_world):
    w = await make_world(max_reprices=0)
    await resting_entry(w)
    await w.feed(minutes(6, [102_00, 103_00]))
    await w.bus.drain()
    assert (w.order().status, w.order().request.price_paise) == (t.ORDER_STATUS_OPEN, 100_00)
    assert not any(u.status == t.ORDER_STATUS_MODIFY_PENDING for u in w.updates)


async def test_a_traders_change_takes_the_order_over_and_the_strategy_moves_it_no_more(make_world):
    """The strategy's own change is counted and not by hand; a trader's (ModifyOrder without strategy_tag, as
    Telegram's /modify sends it) marks the order, and the next candles leave it where the trader put it."""
    w = await make_world(max_reprices=5)
    await resting_entry(w)
    await w.feed(minutes(6, [101_00]))
    await until(lambda: w.order().request.price_paise == 101_00 and w.order().status == t.ORDER_STATUS_OPEN)
    own = w.order()
    assert (own.changes_sent, own.changed_by_hand) == (1, False)

    await w.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id=own.client_order_id, price_paise=99_00))
    await until(lambda: w.plugin.working_order(SBIN).changed_by_hand)
    await w.feed(minutes(7, [101_50, 102_00]))
    await w.bus.drain()

    last = w.order()
    assert (last.status, last.request.price_paise, last.changes_sent, last.changed_by_hand) == (
        t.ORDER_STATUS_OPEN, 99_00, 2, True)
    stored = await w.ledger.get(own.client_order_id)
    assert (stored.request.price_paise, stored.changes_sent, stored.changed_by_hand) == (99_00, 2, True)


async def test_a_resting_entry_fills_at_its_limit_on_the_way_down_and_its_stop_exits_all_of_it(make_world):
    """A LIMIT entry of 10 at 100.00 rests; minute 7 trades down to 99.90: the paper broker fills the resting order at
    its own price, 100.00, all of it: the print there was of 10 (a trade through a resting limit fills it there,
    never better, as much as it shows). Minute 8 falls
    through the stop (1% under 100.00 is 99.00): the 10 exit at the market with the stop's reason, in the ledger too.
    (A stop reached while the entry is still part-filled, its rest cancelled first, is Kotak's case, a resting
    order's queue only partly matched: tests/strategy/test_price_levels.py and test_module.py have it.)"""
    w = await make_world(max_reprices=0, params={"quantity": 10, "stop_loss_pct": 1})
    entry = await resting_entry(w)
    await w.feed([tick(6, 30, 100_50), tick(7, 10, 99_90), tick(8, 0, 100_20)])  # a print of 10 there
    await until(lambda: w.plugin.position(SBIN) == 10)
    filled = w.order(entry.client_order_id)
    assert (filled.status, filled.filled_quantity, filled.average_price_paise) == (t.ORDER_STATUS_TRADED, 10, 100_00)

    await w.feed([tick(8, 10, 98_80), tick(8, 20, 99_10)])
    await until(lambda: w.plugin.position(SBIN) == 0)

    (exit_id,) = {u.client_order_id for u in w.updates} - {entry.client_order_id}
    done = w.order(exit_id)
    assert (done.status, done.request.side, done.request.order_type, done.filled_quantity) == (
        t.ORDER_STATUS_TRADED, t.SIDE_SELL, t.ORDER_TYPE_MARKET, 10)
    assert done.request.reason == "stop loss 1%: tick ₹98.80, 1.20% under the entry ₹100.00"
    stored = await w.ledger.get(exit_id)
    assert (stored.status, stored.request.reason) == (t.ORDER_STATUS_TRADED, done.request.reason)
