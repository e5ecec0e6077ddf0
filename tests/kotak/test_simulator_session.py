"""The simulator keeps NSE's hours, as Kotak does: no ticks while a segment is closed, and a regular order placed
then is rejected instead of filling at the last price of the day; an after-market order (am YES) waits for the open.

Each test runs a simulator on a hand-moved clock and checks what it streams or how the order ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import pytest

from services.simulator.server import Simulator
from shared.clock import ManualClock, ist_ns
from shared.contracts import trading_pb2 as T
from shared.kotak import mapping
from shared.kotak.broker import KotakBroker
from tests.kotak.conftest import NOW_NS, settings_for, tick
from tests.kotak.test_broker import market_buy

TUESDAY = date(2025, 11, 25)  # NOW_NS is 09:15 IST that day


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[Simulator, ManualClock]]:
    clock = ManualClock(NOW_NS)
    simulator = Simulator(tick_interval=None, clock=clock)
    await simulator.start()
    await simulator.push_ticks([tick()])
    yield simulator, clock
    await simulator.stop()


@pytest.mark.parametrize(("day", "hour", "minute", "expected"), [
    (TUESDAY, 10, 0, 50), (TUESDAY, 15, 30, 0), (TUESDAY, 16, 0, 0), (date(2025, 11, 29), 11, 0, 0)])
async def test_the_market_steps_only_in_the_session_of_a_trading_day(clocked, day, hour, minute, expected):
    sim, clock = clocked
    clock.set(ist_ns(day, hour, minute))

    assert len(await sim.step()) == expected


async def test_a_market_order_placed_after_the_close_is_rejected_not_filled_at_the_last_price(clocked):
    sim, clock = clocked
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    clock.set(ist_ns(TUESDAY, 16, 0))

    await broker.place_order(market_buy("coid-late"))

    order = await broker.find_by_tag("coid-late")
    assert (order.status, order.filled_quantity) == (T.ORDER_STATUS_REJECTED, 0)
    assert "market is closed: nse_cm trades 09:15-15:30 IST" in order.reason
    assert sim.exchange.fills == []


async def test_an_after_market_order_waits_for_the_first_tick_of_the_next_session(clocked):
    sim, clock = clocked
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    clock.set(ist_ns(TUESDAY, 18, 0))
    await broker.session.call("place_order", is_order=True, amo="YES", **mapping.place_params(market_buy("coid-amo")))
    waiting = await broker.find_by_tag("coid-amo")

    clock.set(ist_ns(date(2025, 11, 26), 9, 15))
    await sim.push_ticks([tick(ts_ns=clock.now_ns(), ask=129_500)])

    filled = await broker.find_by_tag("coid-amo")
    assert (waiting.status, waiting.raw["ordSt"]) == (T.ORDER_STATUS_SUBMITTED, "after market order req received")
    assert (filled.status, filled.filled_quantity, filled.average_price_paise) == (T.ORDER_STATUS_TRADED, 3, 129_500)
