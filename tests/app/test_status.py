"""The run's status line and summary: this run's counts, the trading day's positions and P&L as the OMS books them.

The OMS is the handler of OrderService/ListPositions on the bus (the one thing the board asks it); a run resumed
after a restart is tested end to end in test_run_summary_restart.py.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from datetime import date

import pytest

from services.app.status import StatusBoard
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ist_ns
from shared.contracts import oms_pb2
from shared.contracts import trading_pb2 as t

TOKEN = 2885
MONDAY, TUESDAY = ist_ns(date(2026, 1, 19), 10, 0), ist_ns(date(2026, 1, 20), 10, 0)
DAY_BOOK = oms_pb2.ListPositionsResponse(
    positions=[t.Position(token=TOKEN, symbol="RELIANCE-EQ", product=t.PRODUCT_MIS, net_quantity=-3,
                          average_price_paise=1290_05),
               t.Position(token=1594, symbol="INFY-EQ", product=t.PRODUCT_MIS, net_quantity=0)],
    realised_pnl_paise=40_00, unrealised_pnl_paise=-12_50, charges_paise=1_20)


def fill(coid: str, ts_ns: int) -> t.OrderUpdate:
    req = t.OrderRequest(client_order_id=coid, token=TOKEN, side=t.SIDE_SELL, quantity=1, product=t.PRODUCT_MIS)
    return t.OrderUpdate(internal_id=coid, client_order_id=coid, request=req, status=t.ORDER_STATUS_TRADED,
                         last_fill_quantity=1, last_fill_price_paise=1290_00, ts_ns=ts_ns)


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    bus = Bus()
    task = asyncio.create_task(bus.run())
    yield bus
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def with_oms(bus: Bus) -> Bus:
    async def list_positions(_request: oms_pb2.ListPositionsRequest) -> oms_pb2.ListPositionsResponse:
        return DAY_BOOK

    bus.handle(rpc.LIST_POSITIONS, list_positions)
    return bus


async def test_the_summary_shows_the_day_the_oms_books_and_this_runs_counts(bus):
    board = StatusBoard(with_oms(bus), now_ns=lambda: TUESDAY, out=io.StringIO())
    await bus.publish(Topic.ORDER_UPDATES, fill("a", TUESDAY))
    assert await bus.drain()

    await board.refresh()
    summary = board.summary()

    assert "trading day 2026-01-20" in summary
    assert "RELIANCE-EQ MIS" in summary and "-3 @ ₹1,290.05" in summary and "INFY-EQ" not in summary  # open only
    assert [line.split()[-1] for line in summary.splitlines() if "P&L" in line or "charges" in line] == [
        "₹40.00", "-₹12.50", "₹1.20", "₹26.30"]
    assert re.search(r"^\s+fills\s+1$", summary, re.M)  # this run's
    assert "also filled" not in summary


async def test_the_summary_counts_the_changes_of_working_orders_sent_once_each_and_only_when_there_were(bus):
    board = StatusBoard(with_oms(bus), now_ns=lambda: TUESDAY, out=io.StringIO())
    assert "orders changed" not in board.summary()
    for status, previous in ((t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_OPEN),
                             (t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_MODIFY_PENDING),  # a fill while pending
                             (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_MODIFY_PENDING),
                             (t.ORDER_STATUS_MODIFY_PENDING, t.ORDER_STATUS_PARTIALLY_FILLED)):
        await bus.publish(Topic.ORDER_UPDATES, t.OrderUpdate(internal_id="a", status=status, previous_status=previous))
    assert await bus.drain()

    assert re.search(r"^\s+orders changed \(sent\)\s+2$", board.summary(), re.M)


async def test_the_status_line_shows_the_days_net_pnl(bus):
    board = StatusBoard(with_oms(bus), now_ns=lambda: TUESDAY, out=io.StringIO())

    await board.refresh()

    assert board.line().endswith("day P&L ₹26.30")


async def test_a_run_that_filled_on_an_earlier_day_says_the_days_figures_leave_those_fills_out(bus):
    """A run spanning midnight (a fast simulated session, a live run left on): the OMS's book starts each day
    anew, as the broker's day P&L does."""
    board = StatusBoard(with_oms(bus), now_ns=lambda: TUESDAY, out=io.StringIO())
    await bus.publish(Topic.ORDER_UPDATES, fill("a", MONDAY))
    await bus.publish(Topic.ORDER_UPDATES, fill("b", TUESDAY))
    assert await bus.drain()

    await board.refresh()

    assert "this run also filled orders on 2026-01-19: their P&L is not in the day's figures" in board.summary()


async def test_without_an_oms_the_pnl_is_not_shown_as_zero(bus):
    board = StatusBoard(bus, now_ns=lambda: TUESDAY, out=io.StringIO())

    await board.refresh()

    assert "n/a" in board.summary() and "₹0.00" not in board.summary() and board.line().endswith("day P&L n/a")
