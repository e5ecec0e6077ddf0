"""The regular sessions are one table for the whole process, as the holidays are: `[risk] sessions` (MCX agri
contracts closing at 17:00, say) is set at start and closes the segment for the paper broker and every other part
that asks shared.clock, not for risk alone. A part that passes its own table (risk) still decides by it."""

from __future__ import annotations

import asyncio
from datetime import date

from services.app.config import AppSettings, set_market_calendar
from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from shared.clock import SESSIONS_IST, ManualClock, ist_ns, segment_open
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t

DAY = date(2026, 1, 21)  # a Wednesday: MCX's built-in session runs 09:00-23:55 IST
AGRI = {"risk": {"sessions": {"mcx_fo": "09:00-17:00"}, "square_off_times_ist": {"mcx_fo": "16:45"}}}


def cotton_tick(ts_ns: int) -> market_pb2.TickBatch:
    return market_pb2.TickBatch(ticks=[market_pb2.Tick(token=449_534, exchange_segment="mcx_fo", ts_ns=ts_ns,
                                                       ltp_paise=5_500_000, bid_paise=5_499_000, ask_paise=5_501_000)])


def test_the_configured_sessions_are_the_processs_once_the_calendar_is_set(exchange_holidays, special_sessions,
                                                                          market_sessions):
    """The fixtures put the built-in calendar back after the test."""
    set_market_calendar(AppSettings(use_database=False), AGRI)

    assert segment_open("mcx_fo", ist_ns(DAY, 18, 0)) is False


def test_a_table_passed_explicitly_still_decides(market_sessions):
    market_sessions(mcx_fo="09:00-17:00")

    assert segment_open("mcx_fo", ist_ns(DAY, 18, 0), SESSIONS_IST) is True


async def test_a_paper_day_order_expires_at_the_configured_close(market_sessions):
    market_sessions(mcx_fo="09:00-17:00")
    clock = ManualClock(ist_ns(DAY, 16, 0))
    broker = VirtualBroker(None, ChargeModel.default(), clock)
    await broker.on_ticks(cotton_tick(clock.now_ns()))
    ack = await broker.place_order(t.OrderRequest(
        client_order_id="c-1", token=449_534, exchange_segment="mcx_fo", symbol="COTTONCNDY26JANFUT",
        side=t.SIDE_BUY, quantity=1, order_type=t.ORDER_TYPE_LIMIT, price_paise=5_400_000, product=t.PRODUCT_NRML,
        validity=t.VALIDITY_DAY, strategy_tag="TEST"))
    await asyncio.sleep(0)
    clock.set(ist_ns(DAY, 17, 1))

    await broker.on_ticks(cotton_tick(clock.now_ns()))

    vo = broker.book[ack.exchange_order_id]
    assert (vo.status, vo.reason) == (
        t.ORDER_STATUS_CANCELLED, "DAY order expired at the end of 2026-01-21: the exchange closed mcx_fo at 17:00 IST")
