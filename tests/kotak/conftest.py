"""Fixtures: a Kotak simulator on 127.0.0.1 with no automatic ticks, settings pointing the SDK at it, a KotakBroker.

Tests push known ticks with sim.push_ticks and use the simulator's fault knobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from services.simulator.server import SimCredentials, Simulator
from shared import config as cfg
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import market_pb2, ops_pb2, trading_pb2
from shared.kotak.broker import KotakBroker
from shared.kotak.config import KotakSettings

RELIANCE, TCS = 2885, 11536
NOW_NS = 1_764_049_500 * 10**9  # 2025-11-25 09:15 IST


def tick(token: int = RELIANCE, ltp: int = 129_000, *, ts_ns: int = NOW_NS, volume: int = 100, ltq: int = 10,
         bid: int = 128_995, ask: int = 129_005) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=ltq, volume=volume,
                           bid_paise=bid, ask_paise=ask, bid_qty=40, ask_qty=60, open_paise=128_000,
                           high_paise=129_500, low_paise=127_500, close_paise=128_500, atp_paise=128_800)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(tick_interval=None)
    await simulator.start()
    await simulator.push_ticks([tick(RELIANCE), tick(TCS, 345_000, bid=344_990, ask=345_010)])
    yield simulator
    await simulator.stop()


def settings_for(sim: Simulator, creds: SimCredentials | None = None, **overrides) -> KotakSettings:
    c = creds or sim.creds
    values = dict(consumer_key=SecretStr(c.consumer_key), mobile=SecretStr(c.mobile), ucc=c.ucc,
                  mpin=SecretStr(c.mpin), totp_secret=SecretStr(c.totp_secret), base_url=sim.base_url,
                  request_timeout_s=2.0, poll_interval_s=0.2, reconnect_initial_s=0.05, reconnect_max_s=0.2,
                  requests_per_second=200.0, orders_per_second=200.0,
                  start_login_wait_s=0.0)  # one login try at start: the tests of a failed start see it fail
    values.update(overrides)
    return cfg.load(KotakSettings, {}, **values)


@pytest.fixture
def settings(sim: Simulator) -> KotakSettings:
    return settings_for(sim)


@pytest.fixture
async def broker(settings: KotakSettings) -> AsyncIterator[KotakBroker]:
    b = KotakBroker(settings)
    await b.start()
    yield b
    await b.stop()



class RunningOms:
    """An OMS running over the real SDK against the simulator (`async with`), collecting what it publishes."""

    def __init__(self, sim: Simulator, kotak: dict[str, Any] | None = None, **settings: Any) -> None:
        self.bus = Bus()
        self.updates: list[trading_pb2.OrderUpdate] = []
        self.notes: list[ops_pb2.Notification] = []
        # A grace as short as the tests' position checks (0.1 s): a difference that lasts alerts within 0.3 s.
        oms = OmsSettings(**{"poll_interval_s": 0, "position_grace_s": 0.3, **settings})
        self.broker = KotakBroker(settings_for(sim, **{"request_timeout_s": 5.0, **(kotak or {})}),
                                  max_order_age_s=oms.max_decision_age_s)
        self.oms = OmsModule(self.bus, oms, self.broker, MemoryLedger(), ManualClock(NOW_NS))

    def latest(self, client_order_id: str) -> trading_pb2.OrderUpdate | None:
        return next((u for u in reversed(self.updates) if u.client_order_id == client_order_id), None)

    async def __aenter__(self) -> RunningOms:
        async def on_update(update: trading_pb2.OrderUpdate) -> None:
            self.updates.append(update)

        async def on_note(note: ops_pb2.Notification) -> None:
            self.notes.append(note)

        self.bus.subscribe(Topic.ORDER_UPDATES, "test", on_update)
        self.bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
        await self.broker.start()
        self.tasks = [asyncio.create_task(self.bus.run())]
        await self.oms.start()
        self.tasks.append(asyncio.create_task(self.oms.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.tasks[1].cancel()
        await asyncio.gather(self.tasks[1], return_exceptions=True)
        assert await self.bus.drain()
        await self.oms.stop()
        self.tasks[0].cancel()
        await asyncio.gather(self.tasks[0], return_exceptions=True)
        await self.broker.stop()
