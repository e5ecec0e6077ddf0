"""A cancel Kotak took but the exchange has not done yet ("cancel pending"), with fills meanwhile: the real SDK and
the simulator (cancel_pending_s). The OMS does not send the cancel a second time while it is under way (Kotak refuses
it), yet sends it again once it has been under way too long (the exchange may have dropped it)."""

from __future__ import annotations

import pytest

from services.oms import cancelling
from shared.bus import Topic
from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected, OrderStateError
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RELIANCE, RunningOms, tick
from tests.kotak.test_broker import limit_buy
from tests.kotak.test_throttled import no_check


async def resting_then_cancelled_and_half_filled(sim, running: RunningOms) -> None:
    """A limit buy of 2 at Rs 1,280 resting, its cancel sent (pending at the exchange), then 1 of it filled."""
    await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=limit_buy("c-1", 128_000),
                                                           signal_id="c-1"))
    await eventually(lambda: (u := running.latest("c-1")) is not None and u.status == T.ORDER_STATUS_OPEN)
    answered = await running.oms.engine.cancel("c-1")
    assert answered.status == T.ORDER_STATUS_CANCEL_PENDING
    one_at_the_limit = tick(RELIANCE, 128_000, ts_ns=NOW_NS + 10**9, bid=127_995, ask=128_000)
    one_at_the_limit.ask_qty = 1
    await sim.push_ticks([one_at_the_limit])
    await eventually(lambda: running.latest("c-1").filled_quantity == 1)
    assert running.latest("c-1").status == T.ORDER_STATUS_PARTIALLY_FILLED  # a fill, the cancel still under way


async def test_a_cancel_asked_again_while_kotak_works_the_first_is_not_sent_twice(sim):
    sim.cancel_pending_s = 1.0
    async with RunningOms(sim) as running:
        await resting_then_cancelled_and_half_filled(sim, running)

        again = await running.oms.engine.cancel("c-1")  # a user's second /cancel, a square-off's retry

        assert again.status == T.ORDER_STATUS_PARTIALLY_FILLED and sim.calls["cancel_order"] == 1
        await eventually(lambda: running.latest("c-1").status == T.ORDER_STATUS_CANCELLED, within=5)
        assert running.latest("c-1").filled_quantity == 1 and sim.calls["cancel_order"] == 1


async def test_an_order_whose_cancel_is_under_way_is_not_changed(sim):
    sim.cancel_pending_s = 1.0
    async with RunningOms(sim) as running:
        await resting_then_cancelled_and_half_filled(sim, running)

        with pytest.raises(OrderStateError, match="PARTIALLY_FILLED with a cancel under way"):
            await running.oms.engine.modify("c-1", (2, 127_500, 0), no_check)

        assert sim.calls["modify_order"] == 0


async def test_a_cancel_under_way_too_long_is_sent_again(sim, monkeypatch):
    monkeypatch.setattr(cancelling, "CANCEL_SETTLE_S", 0.2)
    sim.cancel_pending_s = 30.0  # the exchange never answers within the test
    async with RunningOms(sim) as running:
        await resting_then_cancelled_and_half_filled(sim, running)
        await eventually(lambda: not running.oms.engine.cancel_under_way(running.latest("c-1").internal_id))

        with pytest.raises(BrokerRejected, match="already cancel pending"):  # the simulator still has the first
            await running.oms.engine.cancel("c-1")

        assert sim.calls["cancel_order"] == 2
        await eventually(lambda: running.latest("c-1").status == T.ORDER_STATUS_PARTIALLY_FILLED)


async def test_an_order_feed_row_from_before_the_cancel_does_not_take_the_order_back_to_open(sim):
    """Kotak's order feed lags its REST answers: the row saying the order is open can arrive after the cancel's
    answer. It is old news: the order stays CANCEL_PENDING (a second cancel would be sent for an OPEN one)."""
    sim.order_feed_delay_s, sim.cancel_pending_s = 0.3, 0.6
    async with RunningOms(sim) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=limit_buy("c-1", 128_000),
                                                               signal_id="c-1"))
        await eventually(lambda: (u := running.latest("c-1")) is not None and u.status == T.ORDER_STATUS_OPEN)
        assert [h["ordSt"] for h in sim.exchange.orders["251125000000001"].history[-1:]] == ["open"]

        await running.oms.engine.cancel("c-1")  # the feed's "open" row is still on its way
        await eventually(lambda: running.latest("c-1").status == T.ORDER_STATUS_CANCELLED, within=5)

        after = [u.status for u in running.updates if u.client_order_id == "c-1"]
        assert after[after.index(T.ORDER_STATUS_CANCEL_PENDING):] == [T.ORDER_STATUS_CANCEL_PENDING,
                                                                      T.ORDER_STATUS_CANCELLED]
        assert sim.calls["cancel_order"] == 1


async def test_a_cancel_the_exchange_refuses_shows_the_order_open_again_once_the_wait_is_over(sim, monkeypatch):
    """The exchange's "open" row comes while the cancel is under way, looking like one from before it: held back,
    and applied when the wait is over. Kotak's order feed sends it once (and the OMS's poll of the order book is
    off here): a row held back and then dropped would leave the order CANCEL_PENDING for good."""
    monkeypatch.setattr(cancelling, "CANCEL_SETTLE_S", 0.3)
    sim.cancel_pending_s, sim.refuse_pending_cancels = 0.1, "cancel rejected by the exchange"
    async with RunningOms(sim) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=limit_buy("c-1", 128_000),
                                                               signal_id="c-1"))
        await eventually(lambda: (u := running.latest("c-1")) is not None and u.status == T.ORDER_STATUS_OPEN)

        await running.oms.engine.cancel("c-1")
        await eventually(lambda: sim.exchange.orders["251125000000001"].status == "open")  # refused
        await eventually(lambda: running.latest("c-1").status == T.ORDER_STATUS_OPEN, within=5)

        statuses = [u.status for u in running.updates if u.client_order_id == "c-1"]
        assert statuses[-2:] == [T.ORDER_STATUS_CANCEL_PENDING, T.ORDER_STATUS_OPEN]
        again = await running.oms.engine.cancel("c-1")  # goes again: the first did not hold

    assert again.status == T.ORDER_STATUS_CANCEL_PENDING and sim.calls["cancel_order"] == 2
