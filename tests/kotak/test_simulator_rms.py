"""The simulator's RMS, as Kotak's: an order that needs more margin than the account has left is rejected with its
reason ("RMS:Margin Exceeds,Required:..., Available:..."), and the OMS over the real SDK books it REJECTED
(BROKER_REJECTED) with that reason, which the notifier tells as any broker's rejection. Margin: a fifth of what an
order is worth (margin_paise); what is left is the cash less today's buys and the buys still working. A sell of
what is held needs none."""

from __future__ import annotations

import pytest

from shared import rpc
from shared.bus import Topic
from shared.contracts import oms_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected
from tests.helpers import eventually
from tests.kotak.conftest import RunningOms
from tests.kotak.test_broker import limit_buy, market_buy

PRICE = 120_000  # a resting buy limit (RELIANCE trades at 1,290.00): margin 24,000 paise a share
CASH = 100_000  # Rs 1,000: margin for 4 such shares, not 5


def market_sell(coid: str, qty: int) -> T.OrderRequest:
    order = market_buy(coid, qty)
    order.side = T.SIDE_SELL
    return order


async def placed(running: RunningOms, order: T.OrderRequest, *statuses: int) -> T.OrderUpdate:
    await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=order,
                                                           signal_id=order.client_order_id))
    await eventually(lambda: (u := running.latest(order.client_order_id)) is not None and u.status in statuses)
    return running.latest(order.client_order_id)


async def test_an_order_beyond_the_accounts_margin_is_rejected_by_rms_with_the_reason(sim):
    sim.exchange.cash_paise = CASH
    async with RunningOms(sim) as running:
        fits = await placed(running, limit_buy("coid-fits", PRICE, qty=4), T.ORDER_STATUS_OPEN)
        # The working buy of 4 holds all but 40.00: one more share does not fit.
        over = await placed(running, limit_buy("coid-over", PRICE, qty=1), T.ORDER_STATUS_REJECTED)

    assert fits.status == T.ORDER_STATUS_OPEN
    assert over.reason_code == "BROKER_REJECTED"
    assert over.reason.startswith("RMS:Margin Exceeds,Required:240.00, Available:40.00")  # 1,000 - 4 x 240
    assert [o.status for o in sim.exchange.orders.values()] == ["open", "rejected"]


async def test_one_order_worth_more_than_the_margin_left_is_rejected_and_a_smaller_one_is_not(sim):
    sim.exchange.cash_paise = CASH
    async with RunningOms(sim) as running:
        over = await placed(running, limit_buy("coid-five", PRICE, qty=5), T.ORDER_STATUS_REJECTED)
        fits = await placed(running, limit_buy("coid-four", PRICE, qty=4), T.ORDER_STATUS_OPEN)

    assert over.reason.startswith("RMS:Margin Exceeds,Required:1200.00, Available:1000.00")
    assert fits.status == T.ORDER_STATUS_OPEN


async def test_selling_what_is_held_needs_no_margin_and_a_short_beyond_it_does(sim):
    async with RunningOms(sim) as running:
        await placed(running, market_buy("coid-buy", qty=3), T.ORDER_STATUS_TRADED)
        sim.exchange.cash_paise = 0  # no margin left at all
        sold = await placed(running, market_sell("coid-sell", 3), T.ORDER_STATUS_TRADED)
        short = await placed(running, market_sell("coid-short", 1), T.ORDER_STATUS_REJECTED)

    assert sold.filled_quantity == 3
    assert short.reason.startswith("RMS:Margin Exceeds")


async def test_a_position_bought_and_sold_again_holds_no_margin(sim):
    async with RunningOms(sim) as running:
        await placed(running, market_buy("coid-in", qty=3), T.ORDER_STATUS_TRADED)
        held = sim.exchange.margin_used_paise()
        await placed(running, market_sell("coid-out", 3), T.ORDER_STATUS_TRADED)

    assert held == 3 * sim.exchange.fills[0].price // 5
    assert sim.exchange.margin_used_paise() == 0


async def no_check(request: T.OrderRequest, filled: int) -> None:
    """Risk's word on a change: yes (RMS is the broker's own check here)."""


async def test_a_change_beyond_the_margin_is_refused_and_the_order_keeps_its_terms(sim):
    sim.exchange.cash_paise = CASH
    async with RunningOms(sim) as running:
        await placed(running, limit_buy("coid-grow", PRICE, qty=2), T.ORDER_STATUS_OPEN)
        grown = await running.oms.engine.modify("coid-grow", (4, 0, 0), no_check)  # 4 x 240 of 1,000: fits
        with pytest.raises(BrokerRejected, match=r"RMS:Margin Exceeds,Required:1200.00, Available:1000.00"):
            await running.oms.engine.modify("coid-grow", (5, 0, 0), no_check)
        await eventually(lambda: running.latest("coid-grow").status == T.ORDER_STATUS_OPEN)
        kept = running.latest("coid-grow")

    assert (grown.request.quantity, kept.request.quantity) == (4, 4)
    assert [o.quantity for o in sim.exchange.orders.values()] == [4]


async def test_get_funds_reports_kotaks_limits_through_the_oms_live(sim):
    sim.exchange.cash_paise = CASH
    async with RunningOms(sim) as running:
        await placed(running, market_buy("coid-held", qty=1), T.ORDER_STATUS_TRADED)
        funds = await running.bus.call(rpc.GET_FUNDS, oms_pb2.GetFundsRequest())

    used = 129_005 // 5  # a share bought at the ask: a fifth of it held
    assert (funds.account, funds.total_paise, funds.margin_used_paise, funds.available_paise) == (
        "kotak", CASH, used, CASH - used)
