"""Fixtures: a fake Bot API, a running bus with stand-in strategy/risk/oms/ingestion handlers, the notifier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.notifier.config import NotifierSettings
from services.notifier.module import NotifierModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, risk_pb2, strategy_pb2, trading_pb2
from shared.errors import NotFound, RetryableError
from tests.notifier.fake_bot_api import TOKEN, FakeBotApi

CHAT = 4242
ADMIN = 1001
STRANGER = 666
DAY_START = ist_ns(__import__("datetime").date(2026, 11, 25), 11, 0)


def order(symbol: str = "SBIN-EQ", side: int = trading_pb2.SIDE_BUY, qty: int = 10, filled: int = 10,
          avg: int = 80_000, status: int = trading_pb2.ORDER_STATUS_TRADED, tag: str = "MOMENTUM_RSI",
          ts_ns: int = DAY_START, token: int = 3045, order_type: int = trading_pb2.ORDER_TYPE_UNSPECIFIED,
          price: int = 0, trigger: int = 0) -> trading_pb2.OrderUpdate:
    return trading_pb2.OrderUpdate(
        internal_id=f"id-{symbol}-{ts_ns}", client_order_id=f"c-{symbol}", status=status, filled_quantity=filled,
        average_price_paise=avg, ts_ns=ts_ns,
        request=trading_pb2.OrderRequest(symbol=symbol, token=token, side=side, quantity=qty, strategy_tag=tag,
                                         product=trading_pb2.PRODUCT_MIS, order_type=order_type, price_paise=price,
                                         trigger_price_paise=trigger))


class Standins:
    """Simple handlers standing in for ingestion, strategy, risk and oms, answering with contract protos."""

    def __init__(self, bus: Bus) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.paused: set[str] = set()
        self.strategy_positions: list[strategy_pb2.StrategyPosition] = []  # MOMENTUM_RSI's, as ListStrategies gives
        self.strategies_down = False  # ListStrategies raises RetryableError (the strategy module away)
        self.pauses: dict[str, tuple[int, str, int]] = {}  # name -> (paused_by, pause_reason, paused_at_ns)
        self.state = risk_pb2.TRADING_STATE_ACTIVE
        self.state_reason = ""
        self.orders: list[trading_pb2.OrderUpdate] = [order()]
        self.positions = oms_pb2.ListPositionsResponse(
            positions=[trading_pb2.Position(symbol="SBIN-EQ", token=3045, net_quantity=10,
                                            average_price_paise=80_000, last_price_paise=81_000,
                                            unrealised_pnl_paise=10_000)],
            realised_pnl_paise=5_000, unrealised_pnl_paise=10_000, charges_paise=1_200)
        # GetFunds' answer, or the error it raises
        self.funds: oms_pb2.GetFundsResponse | Exception = oms_pb2.GetFundsResponse(
            account="kotak", available_paise=-1_234_50, margin_used_paise=1_01_234_50, total_paise=1_00_000_00,
            realised_pnl_paise=-500_00, unrealised_pnl_paise=250_00, as_of_ns=DAY_START + 210 * 60 * NS)
        handlers = {
            rpc.GET_FEED_STATUS: lambda r: ingestion_pb2.GetFeedStatusResponse(
                source="simulator", connected=True, ticks_total=1234, ticks_per_second=56.5),
            rpc.LIST_STRATEGIES: lambda r: self._strategies(),
            rpc.PAUSE_STRATEGY: lambda r: self._pause(r.name, True, r.reason),
            rpc.RESUME_STRATEGY: lambda r: self._pause(r.name, False),
            rpc.GET_RISK_STATE: lambda r: risk_pb2.GetRiskStateResponse(
                state=self.state, state_reason=self.state_reason, open_orders=1,
                limits=risk_pb2.RiskLimits(max_order_quantity=500, max_open_orders=20,
                                           max_gross_exposure_paise=5_00_000_00)),
            rpc.SET_KILL_SWITCH: self._kill,
            rpc.LIST_ORDERS: lambda r: oms_pb2.ListOrdersResponse(orders=[
                o for o in self.orders if not r.open_only or o.status == trading_pb2.ORDER_STATUS_OPEN]),
            rpc.LIST_POSITIONS: lambda r: self.positions,
            rpc.GET_FUNDS: lambda r: self._funds(),
            rpc.GET_ORDER: lambda r: oms_pb2.GetOrderResponse(order=self._order(r.order_id)),
            rpc.GET_ORDER_HISTORY: lambda r: oms_pb2.GetOrderHistoryResponse(entries=[oms_pb2.OrderHistoryEntry(
                update=self._order(r.order_id), audit_json='{"event": {}}')]),
            rpc.CANCEL_ORDER: self._cancel,
            rpc.MODIFY_ORDER: self._modify,
            rpc.LIST_INSTRUMENTS: lambda r: ingestion_pb2.ListInstrumentsResponse(instruments=[
                market_pb2.Instrument(token=3045, exchange_segment="nse_cm", symbol="SBIN-EQ", tick_size_paise=5),
                market_pb2.Instrument(token=11536, exchange_segment="nse_cm", symbol="TCS-EQ", tick_size_paise=5)]),
            rpc.PLACE_ORDER: lambda r: oms_pb2.PlaceOrderResponse(order=trading_pb2.OrderUpdate(
                internal_id=f"id-{r.order.client_order_id}", client_order_id=r.order.client_order_id,
                status=trading_pb2.ORDER_STATUS_OPEN, request=r.order)),
            rpc.SQUARE_OFF: lambda r: oms_pb2.SquareOffResponse(orders=[order(
                symbol=r.symbol or "SBIN-EQ", side=trading_pb2.SIDE_SELL, filled=0, avg=0,
                status=trading_pb2.ORDER_STATUS_OPEN, tag="SQUAREOFF")]),
        }
        for name, fn in handlers.items():
            bus.handle(name, self._recording(name, fn))

    def _recording(self, name: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def handle(request: Any) -> Any:
            self.requests.append((name, request))
            return fn(request)
        return handle

    def _funds(self) -> oms_pb2.GetFundsResponse:
        if isinstance(self.funds, Exception):
            raise self.funds
        return self.funds

    def calls(self, name: str) -> list[Any]:
        return [r for n, r in self.requests if n == name]

    def _strategies(self) -> strategy_pb2.ListStrategiesResponse:
        if self.strategies_down:
            raise RetryableError("the strategy service is not answering")
        return strategy_pb2.ListStrategiesResponse(strategies=[self._info("MOMENTUM_RSI")])

    def _info(self, name: str) -> strategy_pb2.StrategyInfo:
        by, reason, at = self.pauses.get(name, (0, "", 0)) if name in self.paused else (0, "", 0)
        return strategy_pb2.StrategyInfo(name=name, kind="MOMENTUM_RSI", paused=name in self.paused,
                                         tokens=[3045], signals_emitted=7, paused_by=by, pause_reason=reason,
                                         paused_at_ns=at, positions=self.strategy_positions)

    def _pause(self, name: str, paused: bool, reason: str = "") -> Any:
        if name != "MOMENTUM_RSI":
            raise NotFound(f"strategy {name} does not exist; /strategies lists them")
        if paused and name not in self.paused:
            self.pauses[name] = (strategy_pb2.PAUSED_BY_OPERATOR, reason, DAY_START)
        (self.paused.add if paused else self.paused.discard)(name)
        cls = strategy_pb2.PauseStrategyResponse if paused else strategy_pb2.ResumeStrategyResponse
        return cls(strategy=self._info(name))

    def _order(self, order_id: str) -> trading_pb2.OrderUpdate:
        for o in self.orders:
            if order_id in (o.internal_id, o.client_order_id):
                return o
        raise NotFound(f"no order {order_id!r}; list orders to find its internal or client id")

    def _cancel(self, request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        o = self._order(request.order_id)
        o.status = trading_pb2.ORDER_STATUS_CANCELLED
        return oms_pb2.CancelOrderResponse(order=o)

    def _modify(self, request: oms_pb2.ModifyOrderRequest) -> oms_pb2.ModifyOrderResponse:
        """The change made as asked (the OMS's checks are its own tests'): each term given replaces the order's."""
        o = self._order(request.order_id)
        r = o.request
        r.quantity, r.price_paise = request.quantity or r.quantity, request.price_paise or r.price_paise
        r.trigger_price_paise = request.trigger_price_paise or r.trigger_price_paise
        return oms_pb2.ModifyOrderResponse(order=o)

    def _kill(self, request: risk_pb2.SetKillSwitchRequest) -> risk_pb2.SetKillSwitchResponse:
        self.state = risk_pb2.TRADING_STATE_HALTED if request.engaged else risk_pb2.TRADING_STATE_ACTIVE
        return risk_pb2.SetKillSwitchResponse(state=self.state)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotApi]:
    api = FakeBotApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    bus = Bus()
    task = asyncio.create_task(bus.run())
    yield bus
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def standins(bus: Bus) -> Standins:
    return Standins(bus)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(DAY_START)


def settings_for(api: FakeBotApi, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = dict(telegram_bot_token=TOKEN, telegram_base_url=api.url, allowed_chat_ids=[CHAT],
                                  polling_timeout_seconds=1, batch_window_seconds=0.05, retry_backoff_seconds=0.01,
                                  daily_summary_time_ist="")
    return NotifierSettings(**(values | overrides))


async def started(module: NotifierModule) -> AsyncIterator[NotifierModule]:
    await module.start()
    task = asyncio.create_task(module.run())
    if module.bot is not None:
        await asyncio.wait_for(module.bot_started.wait(), 5)
    try:
        yield module
    finally:
        await module.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def notifier(bus: Bus, standins: Standins, fake_api: FakeBotApi, clock: ManualClock
                   ) -> AsyncIterator[NotifierModule]:
    async for module in started(NotifierModule(bus, settings_for(fake_api), clock)):
        yield module


@pytest.fixture
async def commands(bus: Bus) -> list[Any]:
    seen: list[Any] = []

    async def record(cmd: Any) -> None:
        seen.append(cmd)

    bus.subscribe(Topic.COMMANDS, "test-audit", record)
    return seen
