"""An NRML position carried from an earlier day and partly exited today, then an OMS restart the same day (review
r8_pnl #1): the book held only today's fills, on a flat book, and showed the day's exit as a new short (-3 while
Kotak held +2), which a square-off would have bought back.

Kotak's positions row keeps the carried part apart (cfBuyQty/cfSellQty/cfBuyAmt/cfSellAmt, positions.md of
kotak-neo-python). The simulator reports every fill as the day's (its cf* fields are always 0), so `overnight`
turns what it has filled so far into the carried part of its rows, as Kotak reports them the next day. Real SDK
against the simulator."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from shared.bus import Topic
from shared.contracts import trading_pb2 as T
from shared.kotak import mapping
from tests.helpers import eventually
from tests.kotak.conftest import RELIANCE, RunningOms
from tests.kotak.test_review_carried_positions import nrml_buy, outside

CARRIED = (("flBuyQty", "cfBuyQty"), ("flSellQty", "cfSellQty"), ("buyAmt", "cfBuyAmt"), ("sellAmt", "cfSellAmt"))


def overnight(sim, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the simulator's positions rows carry its fills so far as Kotak carries an earlier day's: in the
    cf* fields, the day's (fl*, buyAmt, sellAmt) holding only what fills after this."""
    earlier = {(row["tok"], row["prod"]): row for row in sim.exchange.positions()}
    rows = sim.exchange.positions

    def next_day() -> list[dict]:
        out = []
        for row in rows():
            before = earlier.get((row["tok"], row["prod"]))
            for day, carried in CARRIED if before else ():
                row[carried] = before[day]
                row[day] = str(Decimal(row[day]) - Decimal(before[day]))
            out.append(row)
        return out

    monkeypatch.setattr(sim.exchange, "positions", next_day)


def nrml_sell(coid: str, qty: int) -> T.OrderRequest:
    order = nrml_buy(coid, qty)
    order.side = T.SIDE_SELL
    return order


async def held_after_a_restart(sim, monkeypatch: pytest.MonkeyPatch, sold: int) -> tuple[int, int]:
    """Kotak carries +5 NRML from an earlier day; NeoPulse sells `sold` of it today, then restarts. The restarted
    book's (net quantity, average price)."""
    await outside(sim, nrml_buy("carried", qty=5))
    overnight(sim, monkeypatch)
    async with RunningOms(sim) as first:
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 5)  # taken in at its start
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=nrml_sell("exit", sold),
                                                             signal_id="s"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 5 - sold)
    restarted = RunningOms(sim, position_check_s=0.1)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger
    async with restarted:
        await asyncio.sleep(0.5)  # position checks run
        position = restarted.oms.engine.positions.position(RELIANCE, T.PRODUCT_NRML)
    return position.net_quantity, position.average_price_paise


async def test_a_carried_long_partly_sold_today_is_still_long_after_a_restart(sim, monkeypatch):
    """The carried 5 at Kotak's last price (1290.00), the day's sale of 3 closing part of them."""
    assert await held_after_a_restart(sim, monkeypatch, sold=3) == (2, 129_000)


async def test_a_carried_long_sold_in_full_today_is_flat_after_a_restart(sim, monkeypatch):
    assert (await held_after_a_restart(sim, monkeypatch, sold=5))[0] == 0


def test_a_kotak_positions_row_keeps_the_carried_quantity_apart_from_the_days():
    """Today's bought and sold quantities, as the book's Position has them; the net holds the carried part too."""
    row = {"tok": "2885", "exSeg": "nse_cm", "trdSym": "RELIANCE-EQ", "prod": "NRML", "cfBuyQty": "5",
           "cfSellQty": "0", "cfBuyAmt": "6450.00", "cfSellAmt": "0.00", "flBuyQty": "0", "flSellQty": "3",
           "buyAmt": "0.00", "sellAmt": "3869.85", "ltp": "1290.00"}

    pos = mapping.position(row)

    assert (pos.net_quantity, pos.buy_quantity, pos.sell_quantity) == (2, 0, 3)
