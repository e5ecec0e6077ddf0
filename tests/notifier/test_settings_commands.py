"""/limits and /params change risk limits and a strategy's parameters from Telegram: the changes are shown, made by
the confirm button (admin chats only), and all or none. The real python-telegram-bot against the fake Bot API, the
real RiskModule and StrategyModule on the bus; only ListInstruments stands in for ingestion."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.notifier.module import NotifierModule
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from services.strategy.config import StrategySettings
from services.strategy.module import StrategyModule
from shared import config as cfg
from shared import rpc
from shared.bus import Bus
from shared.clock import ManualClock
from shared.contracts import ingestion_pb2, market_pb2
from shared.marketdata import nse_instruments
from tests.notifier.conftest import ADMIN, CHAT, settings_for, started
from tests.notifier.test_commands import ask
from tests.notifier.test_confirmations import press

NIFTY_50 = market_pb2.Instrument(token=26000, symbol="Nifty 50", exchange_segment="nse_cm", tick_size_paise=1,
                                 lot_size=1, is_index=True)
STRATEGY = {"strategy": {"strategies": [{"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"],
                                         "params": {"rsi_period": 14, "quantity": 1}}]}}


@pytest.fixture
async def modules(bus: Bus, clock: ManualClock) -> AsyncIterator[tuple[RiskModule, StrategyModule]]:
    async def list_instruments(_: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=[*nse_instruments(["SBIN-EQ"]), NIFTY_50])

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    risk = RiskModule(bus, cfg.load(RiskSettings, {}, max_order_quantity=500), clock)
    strategy = StrategyModule(bus, cfg.load(StrategySettings, STRATEGY), clock)
    await risk.start()
    await strategy.start()
    yield risk, strategy
    await strategy.stop()
    await risk.stop()


@pytest.fixture
async def bot(bus, modules, fake_api, clock) -> AsyncIterator[NotifierModule]:
    async for module in started(NotifierModule(bus, settings_for(fake_api, allowed_chat_ids=[CHAT, ADMIN],
                                                                 admin_chat_ids=[ADMIN]), clock)):
        yield module


async def test_limits_with_changes_shows_them_and_sets_them_on_the_confirm_button(bot, modules, fake_api):
    risk, _ = modules

    prompt = await ask(fake_api, "/limits max_order_quantity=200 max_open_orders=7", chat_id=ADMIN)

    assert prompt == "Change these risk limits?\nmax_order_quantity: 500 → 200\nmax_open_orders: 50 → 7"
    assert risk.engine.limits.max_order_quantity == 500  # nothing until the button
    edited = await press(fake_api, "lim", chat_id=ADMIN)
    assert edited["text"].startswith("Limits changed.") and "Max order qty 200" in edited["text"]
    assert (risk.engine.limits.max_order_quantity, risk.engine.limits.max_open_orders) == (200, 7)


async def test_a_limit_risk_refuses_changes_none_of_them(bot, modules, fake_api):
    risk, _ = modules
    await ask(fake_api, "/limits max_order_quantity=300 max_open_orders=-1", chat_id=ADMIN)

    edited = await press(fake_api, "lim", chat_id=ADMIN)

    assert edited["text"].startswith("⚠️") and "max_open_orders" in edited["text"]
    assert (risk.engine.limits.max_order_quantity, risk.engine.limits.max_open_orders) == (500, 50)


async def test_limits_refuses_an_unknown_name_or_a_bad_value_without_asking(bot, fake_api):
    unknown = await ask(fake_api, "/limits max_everything=1", chat_id=ADMIN)
    bad = await ask(fake_api, "/limits max_order_quantity=lots", chat_id=ADMIN)

    assert unknown.startswith("⚠️ expected NAME=VALUE with NAME one of max_order_quantity")
    assert bad.startswith("⚠️ max_order_quantity: expected a whole number, got 'lots'")
    assert not any(m.get("reply_markup") for m in fake_api.sent(chat_id=ADMIN))


async def test_any_allowed_chat_reads_the_limits_and_only_an_admin_chat_changes_them(bot, modules, fake_api):
    shown = await ask(fake_api, "/limits")
    refused = await ask(fake_api, "/limits max_order_quantity=1")

    assert "Max order qty 500" in shown
    assert refused == "Only admin chats may change what /limits shows."
    assert modules[0].engine.limits.max_order_quantity == 500


async def test_params_shows_a_strategys_parameters_and_changes_them_on_the_confirm_button(bot, modules, fake_api):
    _, strategy = modules
    shown = await ask(fake_api, "/params mom")
    assert shown.startswith("mom (MOMENTUM_RSI): ") and "rsi_period=14" in shown

    prompt = await ask(fake_api, "/params mom rsi_period=10 quantity=2", chat_id=ADMIN)
    assert prompt == "Change mom's parameters?\nrsi_period: 14 → 10\nquantity: 1 → 2"
    edited = await press(fake_api, "par", chat_id=ADMIN)

    assert edited["text"].startswith("Parameters changed: mom (MOMENTUM_RSI): ")
    assert "rsi_period=10" in edited["text"] and "quantity=2" in edited["text"]
    params = strategy.engine.strategies["mom"].params
    assert (params.rsi_period, params.quantity) == (10, 2)


async def test_a_parameter_the_strategy_refuses_changes_none_of_them(bot, modules, fake_api):
    _, strategy = modules
    await ask(fake_api, "/params mom rsi_period=10 quantity=0", chat_id=ADMIN)

    edited = await press(fake_api, "par", chat_id=ADMIN)

    assert edited["text"].startswith("⚠️") and "quantity" in edited["text"]
    assert strategy.engine.strategies["mom"].params.rsi_period == 14


@pytest.mark.parametrize("typed", ["trend_index=Nifty 50", 'trend_index="Nifty 50"',
                                   "trend_index=\u201cNifty 50\u201d"])
async def test_a_parameter_value_with_a_space_is_one_change_quoted_or_not(bot, modules, fake_api, typed):
    _, strategy = modules

    prompt = await ask(fake_api, f"/params mom {typed} rsi_period=10", chat_id=ADMIN)
    await press(fake_api, "par", chat_id=ADMIN)

    assert prompt.endswith("trend_index:  → Nifty 50\nrsi_period: 14 → 10")
    params = strategy.engine.strategies["mom"].params
    assert (params.trend_index, params.rsi_period) == ("Nifty 50", 10)


async def test_an_empty_value_clears_a_text_parameter(bot, modules, fake_api):
    _, strategy = modules
    await ask(fake_api, "/params mom trend_index=Nifty 50", chat_id=ADMIN)
    await press(fake_api, "par", chat_id=ADMIN)

    await ask(fake_api, "/params mom trend_index=", chat_id=ADMIN)
    await press(fake_api, "par", chat_id=ADMIN)

    assert strategy.engine.strategies["mom"].params.trend_index == ""


async def test_params_of_an_unknown_strategy_or_without_a_name_says_so(bot, fake_api):
    unknown = await ask(fake_api, "/params nope")
    nameless = await ask(fake_api, "/params")

    assert unknown == "⚠️ no strategy named 'nope'; configured: mom"
    assert nameless.startswith("⚠️ give a strategy's name")


async def test_keep_them_changes_nothing(bot, modules, fake_api):
    await ask(fake_api, "/limits max_order_quantity=100", chat_id=ADMIN)

    edited = await press(fake_api, "abort", chat_id=ADMIN)

    assert edited["text"] == "Kept; nothing changed."
    assert modules[0].engine.limits.max_order_quantity == 500
