"""ModifyOrder end to end: OrderService and the real risk module on a bus, the OMS over the real SDK and the simulator.

Orders are placed and changed through rpc.PLACE_ORDER / rpc.MODIFY_ORDER (risk's CheckModify decides each change);
Kotak's side is read back through the broker, the OMS's through its updates and its ledger (memory or PostgreSQL).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.oms.broker import BrokerOrderEvent
from services.oms.ledger import Ledger
from services.oms.ledger_pg import PgLedger
from services.oms.module import OmsModule
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.simulator.server import Simulator
from shared import rpc
from shared.config import load
from shared.contracts import ingestion_pb2, oms_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected, InvalidInput
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually
from tests.kotak.conftest import RELIANCE, RunningOms, settings_for, tick
from tests.kotak.test_broker import limit_buy

ASK = 129_005  # what the simulator's RELIANCE tick (conftest.tick) asks, 60 shown


class Trading(RunningOms):
    """RunningOms with the real risk module beside it (instruments: the simulator's), on the ledger given."""

    def __init__(self, sim: Simulator, ledger: Ledger | None = None, **settings: Any) -> None:
        super().__init__(sim, **settings)
        self.sim = sim
        if ledger is not None:
            self.oms = OmsModule(self.bus, self.oms.settings, self.broker, ledger, self.oms.clock)
        self.risk = RiskModule(self.bus, load(RiskSettings, {}), self.oms.clock)

        async def list_instruments(_: Any) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=sim.instruments)

        self.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)

    async def __aenter__(self) -> Trading:
        await super().__aenter__()
        await self.risk.start()  # after the OMS: it reads the OMS's positions and open orders
        self.tasks.append(asyncio.create_task(self.risk.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        risk = self.tasks.pop()
        risk.cancel()
        await asyncio.gather(risk, return_exceptions=True)
        await super().__aexit__(*exc)

    async def place(self, order: T.OrderRequest, status: int = T.ORDER_STATUS_OPEN) -> T.OrderUpdate:
        """Through OrderService and risk; returns once the OMS has the order in `status`."""
        await self.bus.call(rpc.PLACE_ORDER, oms_pb2.PlaceOrderRequest(order=order))
        await eventually(lambda: (u := self.latest(order.client_order_id)) is not None and u.status == status)
        return self.order(order.client_order_id)

    async def modify(self, order_id: str, quantity: int = 0, price_paise: int = 0) -> T.OrderUpdate:
        reply = await self.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(
            order_id=order_id, quantity=quantity, price_paise=price_paise))
        return reply.order

    def order(self, client_order_id: str) -> T.OrderUpdate:
        """The OMS's latest update of the order."""
        update = self.latest(client_order_id)
        assert update is not None, f"no update of {client_order_id}"
        return update

    async def recorded(self, client_order_id: str) -> T.OrderUpdate:
        row = await self.oms.ledger.get(client_order_id)
        assert row is not None, f"{client_order_id} is not in the ledger"
        return row

    async def at_kotak(self, client_order_id: str) -> BrokerOrderEvent:
        row = await self.broker.find_by_tag(client_order_id)
        assert row is not None, f"{client_order_id} is not in Kotak's order book"
        return row

    async def kotak_net(self, token: int) -> list[int]:
        return [p.net_quantity for p in await self.broker.positions() if p.token == token]

    async def polls(self, count: int) -> None:
        """Until the broker has read Kotak's order book `count` times more."""
        done = self.sim.calls["order_book"] + count
        await eventually(lambda: self.sim.calls["order_book"] >= done)

    def fills(self, client_order_id: str) -> list[int]:
        return [u.last_fill_quantity for u in self.updates
                if u.client_order_id == client_order_id and u.last_fill_quantity]


def terms(request: T.OrderRequest) -> tuple[int, int]:
    return request.quantity, request.price_paise


async def outside_change(sim: Simulator, exchange_order_id: str, quantity: int, price_paise: int) -> None:
    """A change made in Kotak's app: another session of the same account, through the SDK."""
    outside = KotakBroker(settings_for(sim))
    await outside.start()
    try:
        await outside.modify_order(exchange_order_id, quantity=quantity, price_paise=price_paise)
    finally:
        await outside.stop()


@pytest.fixture(params=["memory", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Ledger | None:
    """The rig's ledger (in memory: None), and PostgreSQL's (embedded), for what the ledger must keep."""
    return None if request.param == "memory" else PgLedger(request.getfixturevalue("db_pool"))


async def test_a_resting_buy_raised_but_still_below_the_ask_rests_at_kotak_with_the_new_terms(sim, ledger):
    async with Trading(sim, ledger) as running:
        placed = await running.place(limit_buy("coid-raise", 120_000, qty=2))

        changed = await running.modify("coid-raise", quantity=5, price_paise=125_000)

        kotak = await running.at_kotak("coid-raise")
        await running.polls(2)  # Kotak's rows of the change, as the feed and the order book bring them
        recorded = await running.recorded("coid-raise")
    assert (changed.internal_id, changed.status, terms(changed.request), changed.filled_quantity) == (
        placed.internal_id, T.ORDER_STATUS_OPEN, (5, 125_000), 0)
    # A trader's change (no strategy_tag): counted and marked by hand, never taken for one made in Kotak's app.
    assert (changed.changes_sent, changed.changed_by_hand) == (1, True)
    assert (recorded.changes_sent, recorded.changed_by_hand) == (1, True)
    assert [u.reason_code for u in running.updates if u.reason_code] == []
    assert (kotak.status, kotak.quantity, kotak.price_paise, kotak.filled_quantity) == (
        T.ORDER_STATUS_OPEN, 5, 125_000, 0)
    assert (recorded.status, terms(recorded.request)) == (T.ORDER_STATUS_OPEN, (5, 125_000))
    assert (sim.calls["modify_order"], sim.exchange.fills, running.fills("coid-raise")) == (1, [], [])


async def test_a_buy_raised_to_the_ask_fills_at_kotak_and_is_booked_once_as_kotaks_position_shows(sim):
    async with Trading(sim) as running:
        await running.place(limit_buy("coid-cross", 120_000, qty=4))

        await running.modify("coid-cross", price_paise=ASK)

        await eventually(lambda: running.order("coid-cross").status == T.ORDER_STATUS_TRADED)
        await running.polls(2)  # the fill's row comes again with each poll: booked twice, it would show now
        kotak_net = await running.kotak_net(RELIANCE)
    assert [(f.quantity, f.price) for f in sim.exchange.fills] == [(4, ASK)]
    assert [(u.last_fill_quantity, u.last_fill_price_paise) for u in running.updates if u.last_fill_quantity] == [
        (4, ASK)]
    assert (kotak_net, running.oms.engine.positions.net_quantity(RELIANCE)) == ([4], 4)


async def test_a_change_the_exchange_refuses_leaves_the_order_open_with_its_old_terms(sim, ledger):
    """Risk has no last price here (no ticks on the bus), so it lets a price outside the exchange's band (20% around
    the previous close, 1285.00) through; the simulator refuses it, as NSE does, and the order works on unchanged."""
    async with Trading(sim, ledger) as running:
        await running.place(limit_buy("coid-band", 120_000, qty=2))

        with pytest.raises(BrokerRejected, match="outside the price band"):
            await running.modify("coid-band", quantity=3, price_paise=100_000)

        kotak = await running.at_kotak("coid-band")
        recorded = await running.recorded("coid-band")
    pending, back = [u for u in running.updates if u.client_order_id == "coid-band"][-2:]
    assert (pending.status, terms(pending.request)) == (T.ORDER_STATUS_MODIFY_PENDING, (3, 100_000))
    assert (back.status, terms(back.request), back.reason.startswith("change refused")) == (
        T.ORDER_STATUS_OPEN, (2, 120_000), True)
    assert (recorded.status, terms(recorded.request)) == (T.ORDER_STATUS_OPEN, (2, 120_000))
    assert (kotak.quantity, kotak.price_paise) == (2, 120_000)


async def test_a_price_off_the_tick_size_is_refused_by_risk_and_never_reaches_kotak(sim):
    async with Trading(sim) as running:
        await running.place(limit_buy("coid-tick", 120_000, qty=2))

        with pytest.raises(InvalidInput, match="tick_size_paise 5"):
            await running.modify("coid-tick", price_paise=120_003)

        last = running.order("coid-tick")
    assert (last.status, terms(last.request), sim.calls["modify_order"]) == (T.ORDER_STATUS_OPEN, (2, 120_000), 0)


async def test_a_change_made_in_kotaks_app_is_taken_into_the_book_as_a_same_state_update(sim, ledger):
    async with Trading(sim, ledger) as running:
        placed = await running.place(limit_buy("coid-app", 120_000, qty=2))

        await outside_change(sim, placed.exchange_order_id, quantity=6, price_paise=121_000)

        await eventually(lambda: terms(running.order("coid-app").request) == (6, 121_000))
        recorded = await running.recorded("coid-app")
    taken = running.order("coid-app")
    assert (taken.previous_status, taken.status, taken.filled_quantity) == (T.ORDER_STATUS_OPEN, T.ORDER_STATUS_OPEN, 0)
    assert (recorded.status, terms(recorded.request)) == (T.ORDER_STATUS_OPEN, (6, 121_000))
    assert sim.calls["modify_order"] == 1  # the app's: the OMS sent nothing
    assert (taken.reason_code, taken.changes_sent, taken.changed_by_hand) == ("CHANGED_AT_BROKER", 0, True)
    assert (recorded.reason_code, recorded.changed_by_hand) == ("CHANGED_AT_BROKER", True)


async def test_an_order_cancelled_in_kotaks_app_is_marked_cancelled_at_broker(sim):
    """A trader's stop-loss can vanish this way (Kotak's app, its RMS, the exchange): the notifier warns on it."""
    async with Trading(sim) as running:
        placed = await running.place(limit_buy("coid-gone", 120_000, qty=2))
        outside = KotakBroker(settings_for(sim))
        await outside.start()
        try:
            await outside.cancel_order(placed.exchange_order_id)
        finally:
            await outside.stop()

        await eventually(lambda: running.order("coid-gone").status == T.ORDER_STATUS_CANCELLED)
    assert running.order("coid-gone").reason_code == "CANCELLED_AT_BROKER"


async def test_an_order_neopulse_cancelled_is_not_marked_cancelled_at_broker(sim):
    async with Trading(sim) as running:
        await running.place(limit_buy("coid-ours", 120_000, qty=2))

        await running.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id="coid-ours"))

        await eventually(lambda: running.order("coid-ours").status == T.ORDER_STATUS_CANCELLED)
    assert running.order("coid-ours").reason_code == ""


async def test_with_the_order_feed_silent_the_order_book_poll_brings_a_change_made_in_kotaks_app(sim):
    async with Trading(sim) as running:
        placed = await running.place(limit_buy("coid-poll", 120_000, qty=2))
        sim.mute_order_feed = True

        await outside_change(sim, placed.exchange_order_id, quantity=4, price_paise=119_000)

        await eventually(lambda: terms(running.order("coid-poll").request) == (4, 119_000))
    assert running.order("coid-poll").status == T.ORDER_STATUS_OPEN


async def test_a_fill_beyond_the_quantity_the_oms_placed_after_an_outside_increase_is_booked(sim):
    """Raised in Kotak's app from 2 to 6 and filled: the 6 are the account's, not an overfill to leave out."""
    async with Trading(sim) as running:
        placed = await running.place(limit_buy("coid-more", 120_000, qty=2))

        await outside_change(sim, placed.exchange_order_id, quantity=6, price_paise=ASK)

        await eventually(lambda: running.order("coid-more").status == T.ORDER_STATUS_TRADED)
        kotak_net = await running.kotak_net(RELIANCE)
    last = running.order("coid-more")
    assert (last.filled_quantity, terms(last.request), running.fills("coid-more")) == (6, (6, ASK), [6])
    assert (running.oms.engine.overfills, kotak_net, running.oms.engine.positions.net_quantity(RELIANCE)) == (
        0, [6], 6)


async def test_a_partly_filled_buy_raised_fills_the_rest_with_the_next_tick_and_is_booked_once(sim):
    """60 of 100 fill on the ask's 60; raised to 120 (the new total), the next tick's 60 fill the rest."""
    async with Trading(sim) as running:
        await running.place(limit_buy("coid-part", ASK, qty=100), T.ORDER_STATUS_PARTIALLY_FILLED)

        changed = await running.modify("coid-part", quantity=120)
        await sim.push_ticks([tick()])  # the ask shows 60 again

        await eventually(lambda: running.order("coid-part").status == T.ORDER_STATUS_TRADED)
        kotak = await running.at_kotak("coid-part")
        kotak_net = await running.kotak_net(RELIANCE)
    assert (changed.status, changed.request.quantity, changed.filled_quantity) == (
        T.ORDER_STATUS_PARTIALLY_FILLED, 120, 60)
    assert (kotak.quantity, kotak.filled_quantity, running.fills("coid-part")) == (120, 120, [60, 60])
    assert (kotak_net, running.oms.engine.positions.net_quantity(RELIANCE)) == ([120], 120)
