"""Positions the broker holds that the OMS book does not, at start: NRML carried from an earlier day (or opened
outside NeoPulse) are put in the book at the broker's quantity and average price; nothing else is, and the ledger
never gets a fill NeoPulse did not place. Real SDK against the simulator."""

from __future__ import annotations

import asyncio

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from shared import rpc
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import oms_pb2, ops_pb2
from shared.contracts import trading_pb2 as T
from shared.kotak.broker import KotakBroker
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RELIANCE, RunningOms, settings_for
from tests.kotak.test_broker import market_buy


def nrml_buy(coid: str, qty: int = 3) -> T.OrderRequest:
    order = market_buy(coid, qty)
    order.product = T.PRODUCT_NRML
    return order


async def outside(sim, *orders: T.OrderRequest) -> None:
    """Orders placed at Kotak without NeoPulse (the Kotak app, or an earlier day's run)."""
    broker = KotakBroker(settings_for(sim))
    await broker.start()
    try:
        for order in orders:
            await broker.place_order(order)
    finally:
        await broker.stop()


async def test_an_nrml_position_the_broker_holds_at_start_is_put_in_the_book_at_its_last_price(sim):
    """Carried as a new day carries a held quantity: at the last price, so a gain or loss made before now (on
    earlier days, at 1290.05 here) is not counted against today's loss limit."""
    await outside(sim, nrml_buy("carried"))  # filled at the ask, 1290.05; Kotak's last price is 1290.00

    async with RunningOms(sim, position_check_s=0.1) as running:
        listed = await running.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())
        await asyncio.sleep(0.5)  # position checks run: the book now agrees with Kotak

    (position,) = listed.positions
    assert (position.token, position.product, position.net_quantity, position.average_price_paise) == (
        RELIANCE, T.PRODUCT_NRML, 3, 129_000)
    assert position.realised_pnl_paise == 0 and position.charges_paise == 0 and position.unrealised_pnl_paise == 0
    (note,) = running.notes
    assert (note.severity, note.title) == (ops_pb2.SEVERITY_WARNING, "Broker positions taken into the book")
    assert "RELIANCE-EQ NRML: +3 at 1290.00" in note.text


async def test_a_position_taken_from_the_broker_is_not_written_to_the_ledger(sim):
    await outside(sim, nrml_buy("carried"))

    async with RunningOms(sim) as running:
        orders = await running.oms.ledger.list_orders(limit=100)

    assert orders == [] and running.updates == []


async def test_an_intraday_position_the_book_does_not_hold_at_start_is_alerted_not_taken(sim):
    """MIS cannot be carried: at start it is a trade made outside NeoPulse today, and taking it into the book
    would hand it to risk's square-off. It stays an alert."""
    await outside(sim, market_buy("from-the-app"))

    async with RunningOms(sim, position_check_s=0.1) as running:
        await eventually(lambda: running.notes)

    assert running.oms.engine.positions.net_quantity(RELIANCE) == 0
    (note,) = running.notes
    assert note.title == "Positions differ from the broker's"


async def test_with_the_position_check_off_nothing_is_taken_from_the_broker(sim):
    await outside(sim, nrml_buy("carried"))

    async with RunningOms(sim, position_check_s=0) as running:
        pass

    assert running.oms.engine.positions.net_quantity(RELIANCE) == 0 and running.notes == []


async def test_the_paper_broker_never_takes_the_real_accounts_positions_into_its_book(sim):
    """The VirtualBroker passes the real account's positions through: they are not the paper book's."""
    await outside(sim, nrml_buy("real-money"))
    real = KotakBroker(settings_for(sim))
    running = RunningOms(sim, position_check_s=0.1)
    running.oms.broker = running.oms.engine.broker = VirtualBroker(real, ChargeModel.default(), ManualClock(NOW_NS))
    await real.start()
    try:
        async with running:
            pass
    finally:
        await real.stop()

    assert running.oms.engine.positions.net_quantity(RELIANCE) == 0 and running.notes == []


async def test_after_a_restart_a_position_neopulse_opened_today_is_rebuilt_from_the_ledger_once(sim):
    async with RunningOms(sim) as first:
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=nrml_buy("ours"), signal_id="s"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 3)
    restarted = RunningOms(sim, position_check_s=0.1)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger

    async with restarted:
        await asyncio.sleep(0.5)

    assert restarted.oms.engine.positions.net_quantity(RELIANCE) == 3 and restarted.notes == []


async def test_a_carried_position_on_an_instrument_neopulse_traded_today_is_left_to_the_alert(sim):
    """Kotak's row then mixes the carried quantity with today's fills: the carried one's price is not known. (The
    first run took the carried 5 in at its start; the ledger does not keep them, so a second restart cannot.)"""
    await outside(sim, nrml_buy("carried", qty=5))
    async with RunningOms(sim) as first:
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=nrml_buy("ours"), signal_id="s"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 8)
    restarted = RunningOms(sim, position_check_s=0.1)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger

    async with restarted:
        await eventually(lambda: restarted.notes)

    assert restarted.oms.engine.positions.net_quantity(RELIANCE) == 3
    (note,) = restarted.notes
    assert "RELIANCE-EQ NRML: Kotak +8, NeoPulse +3" in note.text


async def test_two_broker_rows_for_one_intraday_position_are_added_up_by_the_position_check(sim):
    """Kotak products NeoPulse does not map (BO, CO, MTF) count as MIS: a row of one beside the MIS row used to
    replace it, and an outside bracket order as large as NeoPulse's own position went unseen."""
    async with RunningOms(sim, position_check_s=0.1) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=market_buy("ours"), signal_id="s"))
        await eventually(lambda: running.oms.engine.positions.net_quantity(RELIANCE) == 3)
        await outside(sim, market_buy("bracket-from-the-app"))
        next(o for o in sim.exchange.orders.values() if o.tag == "bracket-from-the-app").product = "BO"
        await eventually(lambda: running.notes)

    (note,) = running.notes
    assert "RELIANCE-EQ MIS: Kotak +6, NeoPulse +3" in note.text
