"""Seeded fuzz: the intraday square-off and the kill switch end to end, real RiskModule + OmsModule on one Bus.

Random MIS (and some NRML/CNC) positions are built through real orders (VirtualBroker, MemoryLedger), random MIS
limit orders are left resting, the kill switch is engaged (with or without cancelling) or released, then the
ManualClock walks past 15:15 IST with ticks and candles while the risk timer runs. Only ListInstruments is a
stand-in. The seed is in the test id: `pytest -k 'seed-17'` replays one.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import TERMINAL, MemoryLedger
from services.oms.module import OmsModule
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, risk_pb2, trading_pb2
from shared.errors import NeoPulseError
from shared.marketdata import nse_instruments
from shared.positions import SQUAREOFF_TAG
from tests.risk.factories import DAY

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MIS, NRML, CNC = trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_NRML, trading_pb2.PRODUCT_CNC
SYMBOLS = {"RELIANCE-EQ": 1290_00, "SBIN-EQ": 810_00, "INFY-EQ": 1540_00, "TCS-EQ": 3450_00}
CANDLES_ONLY = 11536  # TCS: no ticks, so market orders (square-off ones too) wait for candles and fill in parts
SEEDS = range(300)


@dataclass
class World:
    bus: Bus
    clock: ManualClock
    oms: OmsModule
    broker: VirtualBroker
    ledger: MemoryLedger
    risk: RiskModule
    prices: dict[int, int]
    updates: list[trading_pb2.OrderUpdate] = field(default_factory=list)
    candle_start: dict[int, int] = field(default_factory=dict)
    n: int = 0

    async def settle(self) -> None:
        """Until the bus queues, tracked work and the broker's event queue are all empty a few turns in a row."""
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0)
            busy = self.bus._background or not self.broker._events.empty() or any(
                s.queue._unfinished_tasks for s in self.bus.subscriptions() if s.handler is not None)
            quiet = 0 if busy else quiet + 1

    async def submit(self, **fields) -> None:
        self.n += 1
        order = trading_pb2.OrderRequest(client_order_id=f"fz-{self.n}", validity=trading_pb2.VALIDITY_DAY,
                                         strategy_tag="FUZZ", exchange_segment="nse_cm", **fields)
        try:
            await self.risk.submit_order(risk_pb2.SubmitOrderRequest(order=order))
        except NeoPulseError:
            pass  # denied (halted, reducing, limits): part of the game
        await self.settle()

    async def tick(self, token: int) -> None:
        if token == CANDLES_ONLY:
            return
        px = self.prices[token]
        await self.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
            token=token, exchange_segment="nse_cm", ts_ns=self.clock.now_ns(), ltp_paise=px, bid_paise=px - 5,
            ask_paise=px + 5)]))
        await self.settle()

    async def candle(self, token: int, rng: random.Random) -> None:
        """A closed candle that started 1 s ago (after every order accepted before that), swinging up to 1%."""
        start = self.clock.now_ns() - 1_000_000_000
        if start <= self.candle_start.get(token, 0):
            return
        self.candle_start[token] = start
        px = self.prices[token]
        swing = px // 100 // 5 * 5
        close = px + rng.choice([-1, 0, 1]) * rng.randrange(0, swing + 1, 5)
        await self.bus.publish(Topic.CANDLES, market_pb2.CandleBatch(candles=[market_pb2.Candle(
            token=token, exchange_segment="nse_cm", start_ns=start, open_paise=px, high_paise=max(px, close) + swing,
            low_paise=min(px, close) - swing, close_paise=close, volume=rng.choice([0, 5, 50, 10_000]),
            tick_count=10)]))
        self.prices[token] = close
        await self.settle()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    bus, clock = Bus(), ManualClock(ist_ns(DAY, 14, 0))
    instruments = nse_instruments(list(SYMBOLS))

    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=instruments)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    broker = VirtualBroker(None, ChargeModel.default(), clock, stall_s=3600)  # a sparse feed by design
    ledger = MemoryLedger()
    oms = OmsModule(bus, OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2), broker, ledger,
                    clock)
    risk = RiskModule(bus, load(RiskSettings, {}, loss_check_interval_ms=0, timer_interval_ms=1,
                                daily_loss_reducing=10**7, daily_loss_halt=2 * 10**7, cancel_retry_backoff_ms=1,
                                cancel_retry_window_ms=20, max_orders_per_second=10_000), clock)
    w = World(bus, clock, oms, broker, ledger, risk, {i.token: SYMBOLS[i.symbol] for i in instruments})

    async def collect(update: trading_pb2.OrderUpdate) -> None:
        w.updates.append(update)

    bus.subscribe(Topic.ORDER_UPDATES, "fuzz", collect)
    tasks = [asyncio.create_task(bus.run())]
    await oms.start()
    tasks.append(asyncio.create_task(oms.run()))
    await risk.start()  # the timer is driven by the test (tick_timer), not run()
    yield w
    for task in reversed(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def build_day(w: World, rng: random.Random) -> None:
    """Positions through market orders (filled on arrival), resting MIS limits, kill-switch moves, candles."""
    tokens = list(w.prices)
    for token in tokens:
        await w.tick(token)
    for _ in range(rng.randint(5, 25)):
        token = rng.choice(tokens)
        px = w.prices[token]
        roll = rng.random()
        if roll < 0.45 and token == CANDLES_ONLY:  # entered by a crossing MIS limit the next candles fill
            side = rng.choice([BUY, SELL])
            offset = px * rng.randint(1, 9) // 1000 // 5 * 5
            await w.submit(token=token, side=side, quantity=rng.randint(1, 40), order_type=trading_pb2.ORDER_TYPE_LIMIT,
                           price_paise=px + offset if side == BUY else px - offset, product=MIS)
        elif roll < 0.45:
            product = rng.choices([MIS, NRML, CNC], [6, 1, 1])[0]
            await w.submit(token=token, side=rng.choice([BUY, SELL]), quantity=rng.randint(1, 40),
                           order_type=trading_pb2.ORDER_TYPE_MARKET, product=product)
        elif roll < 0.8:  # a resting MIS limit: an entry or an exit, 0.5-2% from the price
            side = rng.choice([BUY, SELL])
            offset = px * rng.randint(5, 20) // 1000 // 5 * 5
            price = px - offset if side == BUY else px + offset
            await w.submit(token=token, side=side, quantity=rng.randint(1, 40), order_type=trading_pb2.ORDER_TYPE_LIMIT,
                           price_paise=price, product=MIS)
        elif roll < 0.9:
            engaged = rng.random() < 0.6
            await w.risk.set_kill_switch(risk_pb2.SetKillSwitchRequest(
                engaged=engaged, reason="fuzz", cancel_open_orders=engaged and rng.random() < 0.5))
            await w.settle()
        else:
            w.clock.advance(rng.randint(2, 120))
            await w.candle(token, rng)
            await w.tick(token)


def non_mis_positions(w: World) -> dict[tuple[int, int], int]:
    return {key: p.net_quantity for key, p in w.oms.engine.positions.positions.items() if p.product != MIS}


async def check(w: World, before_non_mis: dict[tuple[int, int], int]) -> None:
    engine = w.oms.engine
    mis = {key: p.net_quantity for key, p in engine.positions.positions.items() if p.product == MIS}
    assert all(q == 0 for q in mis.values()), f"MIS positions left open: {mis}"
    risk_mis = {key: p.net_quantity for key, p in w.risk.engine.positions.positions.items() if p.product == MIS}
    assert all(q == 0 for q in risk_mis.values()), f"risk still sees MIS positions: {risk_mis}"
    assert non_mis_positions(w) == before_non_mis, "NRML/CNC positions moved"
    working_mis = [u.client_order_id for u in engine.open_orders() if u.request.product == MIS]
    assert working_mis == [], f"MIS orders left working: {working_mis}"
    tags = Counter(vo.request.client_order_id for vo in w.broker.book.values())
    assert [t for t, n in tags.items() if n > 1] == [], "a client_order_id was placed twice at the broker"
    assert set(w.risk.engine.open_orders) == {u.client_order_id for u in engine.open_orders()}
    for u in engine.orders.values():
        stored = await w.ledger.get(u.internal_id)
        assert stored is not None, f"{u.client_order_id} is not in the ledger"
        assert (stored.status, stored.filled_quantity, stored.sequence) == (u.status, u.filled_quantity, u.sequence)
    # Replay the fills in sequence order: a square-off fill only ever shrinks its position, never flips it.
    net: dict[tuple[int, int], int] = {}
    for u in sorted((u for u in w.updates if u.last_fill_quantity > 0), key=lambda u: u.sequence):
        key = (u.request.token, u.request.product or MIS)
        before = net.get(key, 0)
        after = before + (u.last_fill_quantity if u.request.side == BUY else -u.last_fill_quantity)
        net[key] = after
        if u.request.strategy_tag == SQUAREOFF_TAG:
            assert u.request.product == MIS, f"square-off of a {u.request.product} position: {u.client_order_id}"
            assert abs(after) < abs(before) and after * before >= 0, (
                f"square-off {u.client_order_id} moved {key} from {before} to {after}")
    assert {k: v for k, v in net.items() if k[1] != MIS} == before_non_mis


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
async def test_every_mis_position_is_flat_after_square_off(world: World, seed: int) -> None:
    rng = random.Random(seed)
    w = world
    await build_day(w, rng)
    before_non_mis = non_mis_positions(w)
    assert all(u.status in TERMINAL or u.request.order_type == trading_pb2.ORDER_TYPE_LIMIT
               for u in w.oms.engine.open_orders() if u.request.product != MIS)  # no resting NRML/CNC order

    w.clock.set(ist_ns(DAY, 15, 14, 30))
    tokens = list(w.prices)
    for step in range(40):  # 15:14:30 to about 15:25 in random steps, the timer after each
        w.clock.advance(rng.choice([0.5, 1, 2, 5, 20, 31]))
        if step % 3 == 0 and rng.random() < 0.3:
            engaged = rng.random() < 0.5
            await w.risk.set_kill_switch(risk_pb2.SetKillSwitchRequest(
                engaged=engaged, reason="fuzz late", cancel_open_orders=engaged and rng.random() < 0.5))
        for token in tokens:
            if rng.random() < 0.5:
                await w.candle(token, rng)
            await w.tick(token)
        await w.risk.tick_timer()
        await w.settle()

    await check(w, before_non_mis)
