"""A restarted strategy module takes its positions back from the OMS's orders (a MemoryLedger behind the OMS's
ListOrders), or starts paused, saying why, when those orders cannot give them back exactly."""

import asyncio
from datetime import date
from types import SimpleNamespace

from services.oms.ledger import MemoryLedger
from services.oms.service import OrderService
from services.strategy import restore
from services.strategy.config import StrategySettings
from services.strategy.module import StrategyModule
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import ingestion_pb2, strategy_pb2, trading_pb2
from shared.marketdata import nse_instruments

YESTERDAY = ist_ns(date(2026, 1, 19), 9, 15)
TODAY = ist_ns(date(2026, 1, 20), 9, 15)
SBIN, TCS = 3045, 11536
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
SETTINGS = {"strategy": {"strategies": [
    {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "params": {"rsi_period": 3, "ema_period": 3}}]}}


class Oms:
    """The OMS's side of a restart: its ledger, read through its real ListOrders servicer."""

    def __init__(self):
        self.ledger = MemoryLedger()
        self.sequence = 0

    async def order(self, coid, tag, side, quantity, ts_ns, fills=(), status=trading_pb2.ORDER_STATUS_TRADED,
                    product=trading_pb2.PRODUCT_MIS):
        """Write an order and its fills (one update each) and last its final status."""
        request = trading_pb2.OrderRequest(client_order_id=coid, token=SBIN if tag != "other" else TCS, side=side,
                                           quantity=quantity, strategy_tag=tag, product=product)
        new = trading_pb2.OrderUpdate(internal_id=f"i-{coid}", client_order_id=coid, request=request, ts_ns=ts_ns,
                                      sequence=self.next())
        await self.ledger.insert_new(new, {})
        for filled in fills or (quantity,):
            await self.update(coid, trading_pb2.ORDER_STATUS_PARTIALLY_FILLED, filled)
        await self.update(coid, status, (fills or (quantity,))[-1])

    async def update(self, coid, status, filled):
        row = await self.ledger.get(coid)
        row.status, row.sequence = status, self.next()
        row.last_fill_quantity, row.filled_quantity = filled - row.filled_quantity, filled
        await self.ledger.record(row, {})

    def next(self):
        self.sequence += 1
        return self.sequence


async def restart(oms):
    module, notifications = await restarted_module(oms)
    return module.engine.strategies["mom"], notifications


async def restarted_module(oms):
    bus = Bus()
    module = StrategyModule(bus, cfg.load(StrategySettings, SETTINGS), ManualClock(TODAY + 3600 * 10**9))
    notifications = []

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    async def on_notification(notification):
        notifications.append(notification)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_ORDERS, OrderService(bus, None, SimpleNamespace(ledger=oms.ledger)).list_orders)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_notification)
    bus_task = asyncio.create_task(bus.run())
    try:
        await module.start()
        assert await bus.drain()
    finally:
        bus_task.cancel()
        await asyncio.gather(bus_task, return_exceptions=True)
    return module, notifications


async def test_a_ledger_past_the_read_limit_does_not_give_a_strategy_a_position_it_does_not_have():
    """Read over all history, the newest 10,000 lost yesterday's entry but kept its exit: 'short 10'."""
    oms = Oms()
    await oms.order("entry", "mom", BUY, 10, YESTERDAY)
    await oms.order("exit", "mom", SELL, 10, YESTERDAY + 1)
    for i in range(restore.RESTORE_LIMIT - 1):  # with the exit: the newest 10,000
        await oms.order(f"o{i}", "other", BUY, 1, YESTERDAY + 2 + i)

    strategy, _ = await restart(oms)

    assert (strategy.position(SBIN), strategy.paused) == (0, False)


async def test_an_intraday_strategy_restores_todays_orders_only(monkeypatch):
    monkeypatch.setattr(restore, "RESTORE_LIMIT", 3)
    oms = Oms()
    await oms.order("left-over", "mom", BUY, 7, YESTERDAY)  # an MIS long does not survive the day
    await oms.order("old-exit", "mom", SELL, 5, YESTERDAY + 1)
    await oms.order("entry", "mom", BUY, 10, TODAY)
    await oms.order("part", "mom", SELL, 4, TODAY + 1)

    strategy, _ = await restart(oms)

    assert (strategy.position(SBIN), strategy.paused) == (6, False)


async def orders_filling_the_read(monkeypatch) -> Oms:
    """An OMS whose orders of today for "mom" fill restore's ListOrders read (limit 3): not provably all of them."""
    monkeypatch.setattr(restore, "RESTORE_LIMIT", 3)
    oms = Oms()
    for i, side in enumerate((BUY, SELL, BUY)):
        await oms.order(f"c{i}", "mom", side, 10, TODAY + i)
    return oms


async def test_a_strategy_whose_orders_of_today_fill_the_read_starts_paused_and_says_why(monkeypatch):
    oms = await orders_filling_the_read(monkeypatch)

    strategy, notifications = await restart(oms)

    assert strategy.paused and "limit=3" in strategy.pause_reason
    assert [(n.fields["strategy"], n.title) for n in notifications] == [("mom", "Strategy paused at start")]


async def test_list_strategies_says_a_strategy_paused_at_start_was_paused_by_neopulse_when_and_why(monkeypatch):
    oms = await orders_filling_the_read(monkeypatch)
    module, _ = await restarted_module(oms)

    (info,) = (await module.bus.call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())).strategies

    assert (info.paused, info.paused_by, info.paused_at_ns) == (True, strategy_pb2.PAUSED_BY_NEOPULSE,
                                                                 TODAY + 3600 * 10**9)
    assert info.pause_reason.startswith("its positions could not be restored at start: its orders were read with "
                                        "ListOrders(limit=3) and the reply was full")


async def test_a_strategy_paused_at_start_keeps_neopulses_reason_when_the_operator_pauses_it_too(monkeypatch):
    oms = await orders_filling_the_read(monkeypatch)
    module, _ = await restarted_module(oms)

    reply = await module.bus.call(rpc.PAUSE_STRATEGY, strategy_pb2.PauseStrategyRequest(name="mom", reason="me"))

    assert reply.strategy.paused_by == strategy_pb2.PAUSED_BY_NEOPULSE
    assert reply.strategy.pause_reason.startswith("its positions could not be restored at start")


async def test_a_square_off_between_two_fills_of_a_strategy_order_pauses_it_rather_than_guess():
    """The OMS keeps an order's latest row only: whether the square-off's 4 closed part of the entry's first fill
    (live: 6 held) or something else (10 held) cannot be told."""
    oms = Oms()
    await oms.order("entry", "mom", BUY, 10, TODAY, fills=(4,), status=trading_pb2.ORDER_STATUS_PARTIALLY_FILLED)
    await oms.order("SQUAREOFF-1", "SQUAREOFF", SELL, 4, TODAY + 1)
    await oms.update("entry", trading_pb2.ORDER_STATUS_TRADED, 10)

    strategy, _ = await restart(oms)

    assert strategy.paused and f"token {SBIN}" in strategy.pause_reason


async def test_a_square_off_of_a_finished_position_before_a_new_entry_is_restored_without_pausing():
    oms = Oms()
    await oms.order("entry", "mom", BUY, 10, TODAY)
    await oms.order("SQUAREOFF-1", "SQUAREOFF", SELL, 10, TODAY + 1)
    await oms.order("again", "mom", BUY, 5, TODAY + 2)

    strategy, _ = await restart(oms)

    assert (strategy.position(SBIN), strategy.paused) == (5, False)
