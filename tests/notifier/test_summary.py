"""The daily summary: per-strategy P&L replayed from the day's orders, its schedule, and its delivery."""

from __future__ import annotations

from datetime import date

import pytest

from services.notifier.config import NotifierSettings
from services.notifier.module import NotifierModule
from services.notifier.summary import StrategyDay, next_summary_ns, summarise
from shared.clock import ist_ns
from shared.config import load
from shared.contracts import oms_pb2, trading_pb2
from shared.errors import ConfigError, RetryableError
from tests.notifier.conftest import CHAT, order, settings_for, started

DAY = date(2026, 11, 25)  # a Wednesday
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL


def positions(tcs_last: int = 301_000) -> oms_pb2.ListPositionsResponse:
    return oms_pb2.ListPositionsResponse(
        positions=[trading_pb2.Position(token=11536, symbol="TCS-EQ", net_quantity=5, last_price_paise=tcs_last)],
        realised_pnl_paise=10_000, unrealised_pnl_paise=5_000, charges_paise=2_500)


def day_orders() -> list[trading_pb2.OrderUpdate]:
    newest_first = [
        order("TCS-EQ", BUY, qty=5, filled=5, avg=300_000, tag="", token=11536, ts_ns=ist_ns(DAY, 13, 0)),
        order("SBIN-EQ", SELL, filled=10, avg=81_000, ts_ns=ist_ns(DAY, 12, 0)),
        order("SBIN-EQ", BUY, filled=0, avg=0, status=trading_pb2.ORDER_STATUS_CANCELLED, ts_ns=ist_ns(DAY, 11, 30)),
        order("SBIN-EQ", BUY, filled=10, avg=80_000, ts_ns=ist_ns(DAY, 11, 0)),
        order("SBIN-EQ", BUY, filled=10, avg=70_000, ts_ns=ist_ns(date(2026, 11, 24), 11, 0)),
    ]
    return newest_first


def test_summary_replays_each_strategys_filled_orders_of_the_day():
    summary = summarise(DAY, day_orders(), positions())

    assert summary.trades == 3
    assert summary.strategies == {"MOMENTUM_RSI": StrategyDay(trades=2, realised_pnl_paise=10_000),
                                  "manual": StrategyDay(trades=1, unrealised_pnl_paise=5_000)}


def test_a_contracts_pnl_in_the_summary_is_its_price_move_times_its_price_factor():
    """Crude oil is quoted per barrel and traded by the contract of 100 barrels: Rs 10 a barrel is Rs 1,000."""
    crude = [order("CRUDEOIL", side, filled=1, avg=avg, token=4321, ts_ns=ist_ns(DAY, hour, 0))
             for side, avg, hour in ((BUY, 5_000_00, 10), (SELL, 5_010_00, 11))]
    for o in crude:
        o.request.price_factor.numerator = 100

    summary = summarise(DAY, crude, oms_pb2.ListPositionsResponse())

    assert summary.strategies["MOMENTUM_RSI"].realised_pnl_paise == 1_000_00


def test_summary_totals_and_charges_come_from_the_oms_positions():
    summary = summarise(DAY, day_orders(), positions())

    assert (summary.realised_pnl_paise, summary.unrealised_pnl_paise, summary.charges_paise) == (10_000, 5_000, 2_500)
    assert summary.net_pnl_paise == 12_500


def test_next_summary_is_today_before_the_time_and_monday_after_friday():
    assert next_summary_ns(ist_ns(DAY, 15, 0), "15:45") == ist_ns(DAY, 15, 45)
    assert next_summary_ns(ist_ns(DAY, 15, 45), "15:45") == ist_ns(date(2026, 11, 26), 15, 45)
    assert next_summary_ns(ist_ns(date(2026, 11, 27), 16, 0), "15:45") == ist_ns(date(2026, 11, 30), 15, 45)


def test_no_summary_is_due_on_an_exchange_holiday(exchange_holidays):
    exchange_holidays(date(2026, 11, 26))

    assert next_summary_ns(ist_ns(DAY, 16, 0), "15:45") == ist_ns(date(2026, 11, 27), 15, 45)


async def test_the_summary_is_sent_once_the_clock_passes_the_summary_time(bus, standins, fake_api, clock):
    standins.orders = day_orders()
    standins.positions = positions()
    clock.set(ist_ns(DAY, 15, 44))
    settings = settings_for(fake_api, daily_summary_time_ist="15:45", summary_check_seconds=0.01)
    async for _ in started(NotifierModule(bus, settings, clock)):
        clock.set(ist_ns(DAY, 15, 46))
        sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"] == ("📊 <b>Daily summary 2026-11-25</b>\n"
                               "Trades 3 · net ₹125.00\n"
                               "Realised ₹100.00 · unrealised ₹50.00 · charges ₹25.00\n"
                               "• MOMENTUM_RSI: 2 trades, ₹100.00 realised, ₹0.00 open\n"
                               "• manual: 1 trades, ₹0.00 realised, ₹50.00 open\n"
                               "Funds (kotak): -₹1,234.50 available of ₹1,00,000.00")


async def test_a_summary_whose_funds_the_oms_cannot_read_goes_without_them(bus, standins, fake_api, clock):
    standins.orders = day_orders()
    standins.positions = positions()

    standins.funds = RetryableError("kotak limits: timed out")
    clock.set(ist_ns(DAY, 15, 44))
    settings = settings_for(fake_api, daily_summary_time_ist="15:45", summary_check_seconds=0.01)
    async for _ in started(NotifierModule(bus, settings, clock)):
        clock.set(ist_ns(DAY, 15, 46))
        sent = await fake_api.wait_sent(1, chat_id=CHAT)

    assert sent[0]["text"].endswith("• manual: 1 trades, ₹0.00 realised, ₹50.00 open")


def test_summary_time_must_be_hh_mm():
    with pytest.raises(ConfigError, match=r"\[notifier\].daily_summary_time_ist"):
        load(NotifierSettings, {"notifier": {"daily_summary_time_ist": "25:00"}})
