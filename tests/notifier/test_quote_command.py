"""/quote and StrategyService.GetQuotes: the latest tick the strategy module took of each instrument, an index's
value too. The real python-telegram-bot against the fake Bot API, the real StrategyModule on the bus (its ticks
published as ingestion publishes them); only ListInstruments stands in for ingestion."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from services.strategy.candles import CandleBuilder
from shared import rpc
from shared.bus import Topic
from shared.clock import NS, ist_ns
from shared.contracts import market_pb2, strategy_pb2
from shared.errors import InvalidInput, NotFound
from tests.notifier.test_commands import ask
from tests.notifier.test_settings_commands import bot, modules  # noqa: F401 - the fixtures

SBIN, NIFTY_50 = 3045, 26000
T1031 = ist_ns(date(2026, 1, 20), 10, 31, 5)


def tick(token: int, ltp: int, close: int, ts_ns: int = T1031) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, close_paise=close,
                           ltq=1, recv_ns=1)


async def published(bus, *ticks: market_pb2.Tick) -> None:
    """Ticks on the bus, as ingestion publishes them, until the strategy module has taken the last."""
    await bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=ticks))

    async def taken() -> bool:
        reply = await bus.call(rpc.GET_QUOTES, strategy_pb2.GetQuotesRequest())
        return any(q.tick.ts_ns == ticks[-1].ts_ns and q.instrument.token == ticks[-1].token for q in reply.quotes)

    for _ in range(500):
        if await taken():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the strategy module never took the ticks")


async def test_quote_without_a_symbol_shows_the_indices(bot, modules, fake_api):  # noqa: F811
    _, strategy = modules
    await published(strategy.bus, tick(SBIN, 600_00, 590_00), tick(NIFTY_50, 24_096_00, 24_000_00))

    reply = await ask(fake_api, "/quote")

    assert reply == "<b>Nifty 50</b> 24,096.00 ▲ 96.00 (+0.40%) · 10:31:05"


async def test_quote_names_stocks_and_an_index_whose_name_holds_a_space(bot, modules, fake_api):  # noqa: F811
    _, strategy = modules
    await published(strategy.bus, tick(SBIN, 580_50, 590_00), tick(NIFTY_50, 24_000_00, 24_000_00))

    one = await ask(fake_api, "/quote nifty 50")
    both = await ask(fake_api, "/quote Nifty 50, sbin-eq")

    assert one == "<b>Nifty 50</b> 24,000.00 = 0.00 (+0.00%) · 10:31:05"
    assert both.split("\n") == ["<b>Nifty 50</b> 24,000.00 = 0.00 (+0.00%) · 10:31:05",
                                "<b>SBIN-EQ</b> ₹580.50 ▼ ₹9.50 (-1.61%) · 10:31:05"]


async def test_quote_of_an_unknown_symbol_or_one_without_a_tick_says_so(bot, modules, fake_api):  # noqa: F811
    unknown = await ask(fake_api, "/quote NOPE-EQ")
    quiet = await ask(fake_api, "/quote SBIN-EQ")

    assert unknown.startswith("⚠️ no instrument 'NOPE-EQ'")
    assert quiet == "<b>SBIN-EQ</b> no tick yet"


async def test_get_quotes_lists_every_instrument_indices_first_and_refuses_too_many(modules):  # noqa: F811
    _, strategy = modules

    every = await strategy.bus.call(rpc.GET_QUOTES, strategy_pb2.GetQuotesRequest())
    with pytest.raises(InvalidInput, match="at most 200"):
        await strategy.bus.call(rpc.GET_QUOTES, strategy_pb2.GetQuotesRequest(symbols=["SBIN-EQ"] * 201))
    with pytest.raises(NotFound):
        await strategy.bus.call(rpc.GET_QUOTES, strategy_pb2.GetQuotesRequest(symbols=["SBIN-EQ", "NOPE"]))

    assert [(q.instrument.symbol, q.HasField("tick")) for q in every.quotes] == [("Nifty 50", False),
                                                                                ("SBIN-EQ", False)]


def test_the_candle_builder_keeps_the_latest_tick_it_took_and_not_a_late_one():
    builder = CandleBuilder()
    first, newer = tick(SBIN, 600_00, 0), tick(SBIN, 601_00, 0, T1031 + 90 * NS)
    late = tick(SBIN, 599_00, 0, T1031 - 60 * NS)  # of a minute before: the builder ignores it

    builder.on_ticks([first, newer, late])

    assert builder.last_tick(SBIN) is newer and builder.last_tick(NIFTY_50) is None


async def test_status_shows_the_indices_followed(bot, modules, fake_api):  # noqa: F811
    _, strategy = modules
    await published(strategy.bus, tick(NIFTY_50, 24_096_00, 24_000_00))

    reply = await ask(fake_api, "/status")

    assert "\n<b>Nifty 50</b> 24,096.00 ▲ 96.00 (+0.40%) · 10:31:05\n" in f"{reply}\n", reply
