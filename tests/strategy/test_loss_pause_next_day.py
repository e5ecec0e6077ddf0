"""A strategy's max_daily_loss stop holds for its IST day (services/strategy/loss_limit.py): the first loss turn of a
later day lifts it, said in an INFO notification, a restart on a later day included. A pause it lay over (the
operator's, NeoPulse's positions not restored) is put back instead; a close-out under way finishes first. Before, the
stop held for good: the strategy sat out every following day until someone resumed it.

Real parts: the engine on plain objects (tests/strategy/test_loss_limit.py's Desk); the StrategyModule on a real Bus
with its state in a real PostgreSQL (embedded) for the restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import NOT_RESTORED
from services.strategy.module import StrategyModule
from services.strategy.state import PgStrategyState
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import ingestion_pb2, ops_pb2, strategy_pb2, trading_pb2
from shared.marketdata import nse_instruments
from tests.strategy.test_loss_limit import BUY, DAY, SBIN, SELL, Desk

NEXT_DAY = ist_ns(date(2026, 1, 21), 9, 15)


def stopped_flat() -> Desk:
    """`mom` lost Rs 520 on DAY, past its Rs 500 limit: stopped, and flat (its close-out done)."""
    desk = Desk()
    desk.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100, charges=10_00)
    desk.update("out", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=95_00, charges=10_00)
    assert desk.turn().finished == ["mom"]
    return desk


def test_the_next_days_first_loss_turn_lifts_the_stop_and_says_so():
    desk = stopped_flat()
    desk.clock.set(NEXT_DAY)

    turn = desk.turn()

    info = desk.engine.info(desk.strategy)
    assert (info.paused, info.pause_reason, info.paused_by, info.day_pnl_paise) == (
        False, "", strategy_pb2.PAUSED_BY_UNSPECIFIED, 0)
    assert turn.new_day == [("mom", "its daily loss limit stopped it on 20 Jan; the new day's limit counts from "
                                    "today's P&L: it trades again")]


def test_the_stop_holds_for_the_rest_of_its_own_day():
    desk = stopped_flat()
    desk.clock.set(ist_ns(DAY, 23, 59))

    assert (desk.turn().new_day, desk.strategy.paused) == ([], True)


def test_an_operators_pause_asked_for_while_the_stop_holds_outlasts_the_day():
    desk = stopped_flat()
    desk.engine.set_paused("mom", True, "done for the week")  # the stop's reason stays: it says more today
    desk.clock.set(NEXT_DAY)

    (_, text), = desk.turn().new_day

    info = desk.engine.info(desk.strategy)
    assert (info.paused, info.paused_by, info.pause_reason) == (True, strategy_pb2.PAUSED_BY_OPERATOR,
                                                                 "done for the week")
    assert text.endswith("but it stays paused, by you: done for the week. Resume it to trade it")


def test_an_operators_pause_the_stop_replaced_comes_back_with_its_time():
    desk = Desk()
    desk.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.engine.set_paused("mom", True, "lunch")
    paused_at = desk.strategy.paused_at_ns
    desk.update("out", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=94_00)
    desk.turn()
    assert desk.strategy.pause_reason.startswith("daily loss limit")
    desk.clock.set(NEXT_DAY)

    desk.turn()

    assert (desk.strategy.paused_by, desk.strategy.pause_reason, desk.strategy.paused_at_ns) == (
        strategy_pb2.PAUSED_BY_OPERATOR, "lunch", paused_at)


@pytest.mark.parametrize(("reason", "by"), [
    ("news at 11", strategy_pb2.PAUSED_BY_OPERATOR),
    (f"{NOT_RESTORED}: SBIN held 100, its orders say 50", strategy_pb2.PAUSED_BY_NEOPULSE)])
def test_a_pause_that_is_not_the_loss_stop_is_not_lifted_by_the_day(reason, by):
    desk = Desk()
    desk.engine.set_paused("mom", True, reason, by=by)
    desk.clock.set(NEXT_DAY)

    turn = desk.turn()

    assert (turn.new_day, desk.strategy.paused, desk.strategy.pause_reason) == ([], True, reason)


def test_a_close_out_still_under_way_at_the_day_roll_finishes_before_the_stop_is_lifted():
    desk = Desk()
    desk.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(94_00)
    (exit_,) = desk.turn().signals
    desk.clock.set(NEXT_DAY)
    assert (desk.turn().new_day, desk.strategy.paused) == ([], True)  # its exit is still on its way

    desk.update(exit_.signal_id, SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=94_00)
    assert desk.turn().finished == ["mom"]  # flat now
    turn = desk.turn()

    assert ([name for name, _ in turn.new_day], desk.strategy.paused) == (["mom"], False)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    """start(state, now_ns) -> (a started strategy module with its state in `state`, its notifications)."""
    tasks: list[asyncio.Task] = []

    async def make(state: Any, now_ns: int) -> tuple[StrategyModule, list[ops_pb2.Notification]]:
        bus, notes = Bus(), []

        async def list_instruments(_: Any) -> ingestion_pb2.ListInstrumentsResponse:
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments(["SBIN-EQ"]))

        async def on_note(note: ops_pb2.Notification) -> None:
            notes.append(note)

        bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
        settings = cfg.load(StrategySettings, {"strategy": {"strategies": [
            {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "max_daily_loss": 500}]}})
        module = StrategyModule(bus, settings, ManualClock(now_ns), None, state)
        tasks.append(asyncio.create_task(bus.run()))
        await module.start()
        assert await bus.drain()
        return module, notes

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_restart_on_the_next_day_lifts_the_days_before_stop_and_saves_that(db_pool, start):
    first, _ = await start(PgStrategyState(db_pool), ist_ns(DAY, 10, 0))
    first.engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="in", status=trading_pb2.ORDER_STATUS_TRADED, sequence=1, last_fill_quantity=100,
        last_fill_price_paise=100_00, filled_quantity=100, ts_ns=ist_ns(DAY, 10, 0), request=trading_pb2.OrderRequest(
            client_order_id="in", token=SBIN, side=BUY, quantity=100, strategy_tag="mom",
            product=trading_pb2.PRODUCT_MIS)))
    first.engine.on_order_update(trading_pb2.OrderUpdate(
        client_order_id="out", status=trading_pb2.ORDER_STATUS_TRADED, sequence=2, last_fill_quantity=100,
        last_fill_price_paise=94_00, filled_quantity=100, ts_ns=ist_ns(DAY, 10, 0), request=trading_pb2.OrderRequest(
            client_order_id="out", token=SBIN, side=SELL, quantity=100, strategy_tag="mom",
            product=trading_pb2.PRODUCT_MIS)))
    await first.on_clock()  # stopped: -Rs 600
    assert first.engine.strategies["mom"].paused

    again, notes = await start(PgStrategyState(db_pool), NEXT_DAY)  # a new process the next morning
    assert again.engine.strategies["mom"].paused  # its stop put back: yesterday's, lifted at the first turn

    await again.on_clock()

    assert not again.engine.strategies["mom"].paused
    assert [(n.severity, n.title, n.text) for n in notes] == [(
        ops_pb2.SEVERITY_INFO, "Daily loss limit: a new day", "mom: its daily loss limit stopped it on 20 Jan; the "
        "new day's limit counts from today's P&L: it trades again.")]
    saved = json.loads(await db_pool.fetchval("SELECT value FROM strategy_state WHERE name = 'mom'"))
    assert (saved["paused"], saved["pause_reason"]) == (False, "")


def test_a_restart_on_the_next_day_keeps_an_unfinished_close_out_going_and_the_stop_held():
    desk = Desk()
    desk.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(94_00)
    (exit_,) = desk.turn().signals
    desk.update(exit_.signal_id, SELL, trading_pb2.ORDER_STATUS_REJECTED)  # the exit refused: still long 100
    saved = json.loads(json.dumps(desk.engine.durable_state("mom")))
    after = Desk()  # the restart the next morning: positions from the ledger, then the saved state
    after.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    after.tick(94_00)
    after.clock.set(NEXT_DAY)
    after.engine.restore_state("mom", saved, after.clock.now_ns())
    after.tick(96_00)  # recovered overnight, not past the limit again

    turn = after.turn()

    assert (turn.new_day, after.strategy.paused, [s.side for s in turn.signals]) == ([], True, [SELL])
