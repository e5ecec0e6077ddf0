"""SquareOff of a position the book holds on the other side of Kotak's (review r8_pnl #1, its safe minimum): the
book's close would grow the real position, so it is refused and named. Here the "carried" 5 were bought outside
NeoPulse today (the simulator's rows report them as the day's), NeoPulse sold 3, and a restart rebuilt the book from
the ledger alone: -3 against Kotak's +2. Real SDK against the simulator."""

from __future__ import annotations

import pytest

from shared import rpc
from shared.bus import Topic
from shared.contracts import oms_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import OrderStateError
from tests.helpers import eventually
from tests.kotak.conftest import RELIANCE, RunningOms
from tests.kotak.test_review_carried_positions import nrml_buy, outside


async def test_a_square_off_that_would_grow_the_real_position_is_refused_and_named(sim):
    await outside(sim, nrml_buy("outside", qty=5))
    async with RunningOms(sim) as first:
        exit_ = nrml_buy("exit", qty=3)
        exit_.side = T.SIDE_SELL
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=exit_, signal_id="s"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 2)
    restarted = RunningOms(sim)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger

    async with restarted:
        with pytest.raises(OrderStateError) as info:
            await restarted.bus.call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest(symbol="RELIANCE-EQ"))

    assert "NOT squared off: RELIANCE-EQ NRML (NeoPulse holds -3, Kotak +2" in str(info.value)
