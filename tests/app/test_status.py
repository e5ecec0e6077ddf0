"""The run's status line and summary: what this run traded, whatever the days it spans."""

from __future__ import annotations

import asyncio
import io

from services.app.status import StatusBoard
from shared.bus import Bus, Topic
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t

TOKEN = 2885


def fill(side: int, quantity: int, price: int, charges: int, coid: str) -> t.OrderUpdate:
    req = t.OrderRequest(client_order_id=coid, token=TOKEN, exchange_segment="nse_cm", symbol="RELIANCE-EQ",
                         side=side, quantity=quantity, product=t.PRODUCT_CNC)
    return t.OrderUpdate(internal_id=coid, client_order_id=coid, request=req, status=t.ORDER_STATUS_TRADED,
                         last_fill_quantity=quantity, last_fill_price_paise=price, last_fill_charges_paise=charges)


async def test_the_summary_counts_every_fill_of_the_run_across_trading_days():
    """A replay over several days: the OMS's P&L is each day's (it starts a new day at midnight), the run's
    summary is the whole run's."""
    bus = Bus()
    board = StatusBoard(bus, out=io.StringIO())
    task = asyncio.create_task(bus.run())
    try:
        await bus.publish(Topic.ORDER_UPDATES, fill(t.SIDE_BUY, 10, 100_00, 30, "day-1"))  # day 1
        await bus.publish(Topic.ORDER_UPDATES, fill(t.SIDE_SELL, 4, 110_00, 20, "day-2"))  # the next day
        bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(token=TOKEN, ltp_paise=105_00)]))
        assert await bus.drain()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    summary = board.summary()

    assert "realised P&L" in summary and "₹40.00" in summary  # 4 x (110 - 100)
    assert "₹30.00" in summary  # unrealised: 6 x (105 - 100)
    assert "₹0.50" in summary  # charges 30 + 20 paise
    assert "₹69.50" in summary  # net
