"""A DAY order given up with its outcome unknown is looked for in the broker's book through its day; it ended at that
day's close, so a later day drops it from memory and stops polling for it (both used to go on for good)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.oms.broker import BrokerAck
from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.ledger import MemoryLedger
from services.oms.module import OmsModule
from shared.bus import Bus, Topic
from shared.clock import ManualClock
from shared.contracts import trading_pb2 as t
from shared.errors import RetryableError
from tests.helpers import eventually as until
from tests.helpers import stop_worlds
from tests.oms.conftest import NoOrderFeed, accepted
from tests.oms.helpers import T0, order

HOUR_S = 3600  # T0 is 21:30 IST: two hours on is the same day, twenty-four the next


class AnswerLost(NoOrderFeed):
    """A broker outside the process whose placement answer is lost and whose book never lists the order (it never
    reached the exchange): the OMS gives it up. Counts its order book reads (the OMS's polls)."""

    book_reads = 0

    async def place_order(self, order: t.OrderRequest) -> BrokerAck:
        raise RetryableError("broker timed out")

    async def order_book(self):
        self.book_reads += 1
        return await super().order_book()


@contextlib.asynccontextmanager
async def given_up_order() -> AsyncIterator[tuple[ManualClock, OmsModule, AnswerLost]]:
    """A running OMS polling every 10 ms and checking for a new day every 10 ms, with order "c-1" given up."""
    bus, clock = Bus(), ManualClock(T0 + 1)
    broker = AnswerLost(None, ChargeModel.default(), clock)
    settings = OmsSettings(lookup_backoff_s=0, unknown_outcome_lookups=1, poll_interval_s=0.01, position_check_s=0)
    module = OmsModule(bus, settings, broker, MemoryLedger(), clock)
    module.day_check_s = 0.01
    tasks = [asyncio.create_task(bus.run())]
    try:
        await module.start()
        tasks.append(asyncio.create_task(module.run()))
        await bus.publish(Topic.ORDERS, accepted(order(client_order_id="c-1", validity=t.VALIDITY_DAY)))
        await until(lambda: module.engine.given_up_tags() == {"c-1"})
        yield clock, module, broker
    finally:
        await stop_worlds(tasks, [module])


async def test_a_day_order_given_up_today_is_still_looked_for_in_the_brokers_book_late_that_day():
    async with given_up_order() as (clock, module, broker):
        clock.advance(2 * HOUR_S)
        reads = broker.book_reads

        await until(lambda: broker.book_reads >= reads + 5)  # polls, and day checks between them

        assert module.engine.given_up_tags() == {"c-1"}


async def test_a_day_order_given_up_yesterday_leaves_memory_at_the_days_roll_but_not_the_ledger():
    async with given_up_order() as (clock, module, _):
        (internal_id,) = module.engine.orders
        clock.advance(24 * HOUR_S)

        await until(lambda: module.engine.lookup("c-1") is None)
        recorded = await module.engine.ledger.get(internal_id)

    assert recorded is not None and (recorded.status, recorded.reason_code) == (t.ORDER_STATUS_REJECTED,
                                                                                 "OUTCOME_UNKNOWN")


async def test_the_brokers_book_is_no_longer_polled_for_a_day_order_given_up_yesterday():
    async with given_up_order() as (clock, module, broker):
        clock.advance(24 * HOUR_S)
        await until(lambda: module.engine.lookup("c-1") is None)
        reads = broker.book_reads

        await asyncio.sleep(0.1)  # ten poll intervals

        assert broker.book_reads == reads
