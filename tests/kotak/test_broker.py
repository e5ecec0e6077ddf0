"""KotakBroker through the real SDK against the simulator: login, every order call, account and market reads.

Each test arranges the simulator's market or fault knobs, calls the broker once, and checks values.
"""

from __future__ import annotations

import pytest

from services.simulator.server import SimCredentials
from shared import logs
from shared.contracts import trading_pb2 as T
from shared.errors import BrokerRejected, ConfigError, NotSent
from shared.kotak.broker import KotakBroker
from tests.kotak.conftest import RELIANCE, TCS, settings_for, tick


def market_buy(coid: str, qty: int = 3, symbol: str = "RELIANCE-EQ", token: int = RELIANCE) -> T.OrderRequest:
    return T.OrderRequest(client_order_id=coid, token=token, exchange_segment="nse_cm", symbol=symbol,
                          side=T.SIDE_BUY, quantity=qty, order_type=T.ORDER_TYPE_MARKET, product=T.PRODUCT_MIS,
                          validity=T.VALIDITY_DAY)


def limit_buy(coid: str, price: int, qty: int = 2) -> T.OrderRequest:
    order = market_buy(coid, qty)
    order.order_type, order.price_paise = T.ORDER_TYPE_LIMIT, price
    return order


async def test_login_with_totp_and_mpin_gives_a_trade_session(sim, broker):
    assert sim.logins == 1
    assert broker.session.client.configuration.edit_token in sim.sessions


async def test_the_session_tokens_of_a_login_are_masked_in_every_log_line(sim, broker):
    conf = broker.session.client.configuration

    line = logs.scrub(f"reply sid={conf.edit_sid} token={conf.edit_token}")

    assert conf.edit_sid not in line and conf.edit_token not in line and line.count("***") == 2


async def test_login_with_a_wrong_mpin_raises_config_error_without_the_mpin(sim):
    bad = SimCredentials(mpin="000000")
    broker = KotakBroker(settings_for(sim, bad))
    with pytest.raises(ConfigError) as err:
        await broker.start()
    assert "Invalid MPIN" in str(err.value)
    assert "000000" not in str(err.value)


async def test_market_buy_fills_at_the_ask_and_shows_in_the_order_book(sim, broker):
    ack = await broker.place_order(market_buy("coid-1"))
    book = await broker.order_book()
    assert ack.status == T.ORDER_STATUS_SUBMITTED
    assert [(e.exchange_order_id, e.client_order_id, e.status, e.filled_quantity, e.average_price_paise)
            for e in book] == [(ack.exchange_order_id, "coid-1", T.ORDER_STATUS_TRADED, 3, 129_005)]


async def test_before_the_first_order_of_the_day_every_list_read_is_empty_not_an_error(sim, broker):
    """Kotak answers an empty book with {"stat": "Not_Ok", "errMsg": "No Data", "stCode": 5203}, as the simulator
    does: start-up reconciliation and polling must read that as nothing to list."""
    assert (await broker.order_book(), await broker.trades(), await broker.positions()) == ([], [], [])
    assert await broker.find_by_tag("coid-none") is None


async def test_find_by_tag_returns_the_order_placed_with_that_client_order_id(sim, broker):
    ack = await broker.place_order(market_buy("coid-tag"))
    found = await broker.find_by_tag("coid-tag")
    assert found is not None and found.exchange_order_id == ack.exchange_order_id
    assert await broker.find_by_tag("no-such-tag") is None


async def test_limit_below_the_ask_rests_open_then_modify_to_a_crossing_price_fills(sim, broker):
    ack = await broker.place_order(limit_buy("coid-lim", 128_000))
    assert (await broker.find_by_tag("coid-lim")).status == T.ORDER_STATUS_OPEN
    mod = await broker.modify_order(ack.exchange_order_id, price_paise=129_100, quantity=4)
    final = await broker.find_by_tag("coid-lim")
    assert mod.status == T.ORDER_STATUS_MODIFY_PENDING
    assert (final.status, final.filled_quantity, final.average_price_paise) == (T.ORDER_STATUS_TRADED, 4, 129_005)


async def test_resting_limit_fills_when_the_market_crosses_it(sim, broker):
    await broker.place_order(limit_buy("coid-cross", 128_900))
    await sim.push_ticks([tick(RELIANCE, 128_890, bid=128_880, ask=128_895)])
    final = await broker.find_by_tag("coid-cross")
    assert (final.status, final.average_price_paise) == (T.ORDER_STATUS_TRADED, 128_895)


async def test_cancel_of_an_open_order_cancels_it(sim, broker):
    ack = await broker.place_order(limit_buy("coid-cxl", 120_000))
    cancel = await broker.cancel_order(ack.exchange_order_id)
    assert cancel.status == T.ORDER_STATUS_CANCEL_PENDING
    assert (await broker.find_by_tag("coid-cxl")).status == T.ORDER_STATUS_CANCELLED


async def test_cancel_of_a_completed_order_is_rejected_with_kotaks_reason(sim, broker):
    ack = await broker.place_order(market_buy("coid-done"))
    with pytest.raises(BrokerRejected, match="order is completed"):
        await broker.cancel_order(ack.exchange_order_id)


async def test_order_history_lists_every_state_of_the_order(sim, broker):
    ack = await broker.place_order(market_buy("coid-hist"))
    history = await broker.order_history(ack.exchange_order_id)
    # Newest first, as Kotak lists them (order_history.md).
    assert [e.raw["ordSt"] for e in history] == ["complete", "open", "validation pending", "put order req received"]


async def test_trade_report_carries_the_fill_and_the_tag(sim, broker):
    ack = await broker.place_order(market_buy("coid-trd", qty=5))
    trades = await broker.trades()
    assert [(t["nOrdNo"], t["GuiOrdId"], t["fldQty"], t["avgPrc"]) for t in trades] == [
        (ack.exchange_order_id, "coid-trd", 5, "1290.05")]


async def test_positions_net_the_fills_in_paise(sim, broker):
    await broker.place_order(market_buy("coid-p1", qty=3))
    sell = market_buy("coid-p2", qty=1)
    sell.side = T.SIDE_SELL
    await broker.place_order(sell)
    [pos] = await broker.positions()
    assert (pos.token, pos.symbol, pos.product, pos.net_quantity, pos.average_price_paise, pos.buy_quantity,
            pos.sell_quantity) == (RELIANCE, "RELIANCE-EQ", T.PRODUCT_MIS, 2, 129_005, 3, 1)
    assert pos.realised_pnl_paise == (128_995 - 129_005) * 1


async def test_limits_report_net_cash_and_margin_used_in_paise(sim, broker):
    await broker.place_order(market_buy("coid-lmt", qty=10))
    limits = await broker.limits()
    used = 10 * 129_005 // 5
    assert (limits["margin_used_paise"], limits["net_paise"]) == (used, 10_000_000_00 - used)


async def test_funds_are_kotaks_limits_in_paise(sim, broker):
    before = await broker.funds()
    await broker.place_order(market_buy("coid-funds", qty=10))
    after = await broker.funds()

    used = 10 * 129_005 // 5
    assert (before.account, before.total_paise, before.margin_used_paise, before.available_paise) == (
        "kotak", 10_000_000_00, 0, 10_000_000_00)
    assert (after.total_paise, after.margin_used_paise, after.available_paise) == (
        10_000_000_00, used, 10_000_000_00 - used)
    assert after.as_of_ns > 0


async def test_quotes_return_the_simulators_last_prices(sim, broker):
    ticks = await broker.quotes([("nse_cm", RELIANCE), ("nse_cm", TCS)])
    assert [(t.token, t.ltp_paise, t.bid_paise, t.ask_paise) for t in ticks] == [
        (RELIANCE, 129_000, 128_995, 129_005), (TCS, 345_000, 344_990, 345_010)]


async def test_scrip_master_lists_the_real_nse_tokens_tick_and_lot_sizes(sim, broker):
    instruments = {i.symbol: i for i in await broker.scrip_master()}
    rel = instruments["RELIANCE-EQ"]
    assert (rel.token, rel.exchange_segment, rel.tick_size_paise, rel.lot_size) == (2885, "nse_cm", 5, 1)
    assert instruments["SBIN-EQ"].token == 3045


async def test_synchronous_rejection_raises_broker_rejected_with_kotaks_reason(sim, broker):
    sim.reject_next_order("RMS:Margin Exceeds", synchronous=True)
    with pytest.raises(BrokerRejected, match="RMS:Margin Exceeds"):
        await broker.place_order(market_buy("coid-rej"))
    assert sim.exchange.orders == {}


async def test_stop_market_sell_waits_for_its_trigger_then_fills_at_the_bid(sim, broker):
    order = market_buy("coid-stop", qty=1)
    order.side, order.order_type, order.trigger_price_paise = T.SIDE_SELL, T.ORDER_TYPE_STOP_MARKET, 128_500
    await broker.place_order(order)
    assert (await broker.find_by_tag("coid-stop")).status == T.ORDER_STATUS_TRIGGER_PENDING
    await sim.push_ticks([tick(RELIANCE, 128_450, bid=128_440, ask=128_460)])
    final = await broker.find_by_tag("coid-stop")
    assert (final.status, final.average_price_paise) == (T.ORDER_STATUS_TRADED, 128_440)


async def test_holdings_and_margin_answer_through_the_sdk(sim, broker):
    holdings = await broker.session.call("holdings")
    margin = await broker.session.call("margin_required", exchange_segment="nse_cm", price="1290.05",
                                       order_type="L", product="MIS", quantity="10", instrument_token="2885",
                                       transaction_type="B")
    assert holdings == {"data": []}
    assert margin["data"]["reqdMrgn"] == "2580.10"


async def test_modify_of_an_order_kotak_does_not_list_is_not_sent(sim, broker):
    with pytest.raises(NotSent, match="999"):
        await broker.modify_order("999", price_paise=129_000)
    assert sim.calls["modify_order"] == 0


async def test_the_margin_check_reports_required_and_available_cash_in_paise(sim, broker):
    check = await broker.margin_required(limit_buy("coid-mrg", 129_000, qty=10))
    # The simulator asks 20% of the order value: 10 x Rs 1,290 / 5 = Rs 2,580, against Rs 1 crore of cash.
    assert (check["required_paise"], check["available_paise"], check["sufficient"]) == (2_580_00, 10_000_000_00, True)
    assert sim.calls["margin"] == 1


async def test_holdings_pass_through_the_sdk(sim, broker):
    assert await broker.holdings() == []
    assert sim.calls["holdings"] == 1
