"""The paper account (services/oms/paper.py): its funds, and the RMS check the VirtualBroker makes with it, worked out
by hand. Then through the OMS on a real bus: an order beyond the account's margin ends REJECTED with the broker's
text and is in the ledger, an exit always goes, and OrderService/GetFunds reports the account."""

from __future__ import annotations

import asyncio
import re
from fractions import Fraction

import pytest
from prometheus_client import REGISTRY

from services.oms.config import OmsSettings
from services.oms.module import recount_wait_s
from services.oms.paper import PaperAccount
from shared import rpc
from shared.bus import Topic
from shared.clock import ManualClock, SimClock
from shared.contracts import market_pb2, oms_pb2, ops_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotFound
from shared.positions import PositionBook
from shared.price_factor import price_factor
from tests.helpers import eventually as until
from tests.oms.conftest import accepted
from tests.oms.helpers import T0, TOKEN, order, tick

RATES = {t.PRODUCT_MIS: Fraction(1, 5), t.PRODUCT_CNC: Fraction(1), t.PRODUCT_NRML: Fraction(1, 5)}
RUPEE = 100
TEXT_END = " for entity account across exchange across segment across product"


def account(capital_rupees: int, book: PositionBook | None = None,
            clock: ManualClock | None = None) -> tuple[PaperAccount, PositionBook]:
    book, clock = book or PositionBook(), clock or ManualClock(T0)
    return PaperAccount(capital_rupees * RUPEE, RATES, lambda: book, clock.now_ns), book


def last(ltp_paise: int, token: int = TOKEN) -> dict[int, market_pb2.Tick]:
    return {token: market_pb2.Tick(token=token, ltp_paise=ltp_paise)}


def long(book: PositionBook, quantity: int, price_paise: int, product: int = t.PRODUCT_MIS) -> None:
    book.position(TOKEN, product).apply_fill(t.SIDE_BUY, quantity, price_paise)


def buy(quantity: int, price: int = 1_000 * RUPEE, product: int = t.PRODUCT_MIS) -> t.OrderRequest:
    request = order(t.SIDE_BUY, quantity=quantity, price=price)
    request.product = product
    return request


def sell(quantity: int, price: int = 1_000 * RUPEE, product: int = t.PRODUCT_MIS) -> t.OrderRequest:
    request = order(t.SIDE_SELL, quantity=quantity, price=price)
    request.product = product
    return request


def holdings_text(quantity: int, held: int, selling: int) -> str:
    return (f"RMS:Rule: Check holdings,Sell Quantity:{quantity}, Holdings:{held}, Pending Sell:{selling}" + TEXT_END
            + f": a delivery (CNC) sell sells only shares held; sell at most {max(held - selling, 0)}, or sell short "
            "intraday (MIS)")


def test_an_empty_account_has_its_capital_to_trade_with():
    paper, _ = account(50_000)

    funds = paper.funds([], {}, now_ns=7)

    assert (funds.account, funds.total_paise, funds.margin_used_paise, funds.available_paise, funds.as_of_ns) == (
        "paper", 50_000_00, 0, 50_000_00, 7)


def test_a_position_holds_a_fifth_of_its_worth_at_the_last_price_and_a_gain_is_no_margin_until_realised():
    paper, book = account(50_000)
    long(book, 100, 1_000 * RUPEE)
    book.mark(TOKEN, 1_010 * RUPEE)

    funds = paper.funds([], last(1_010 * RUPEE), now_ns=0)

    assert funds.margin_used_paise == 100 * 1_010_00 // 5  # Rs 20,200
    assert funds.total_paise == 50_000_00  # the Rs 1,000 unrealised gain is not counted
    assert funds.available_paise == 50_000_00 - 20_200_00
    assert funds.unrealised_pnl_paise == 1_000_00


def test_total_counts_realised_pnl_charges_and_an_unrealised_loss():
    paper, book = account(50_000)
    pos = book.position(TOKEN)
    pos.apply_fill(t.SIDE_BUY, 10, 1_000 * RUPEE, charges_paise=30_00)
    pos.apply_fill(t.SIDE_SELL, 5, 1_100 * RUPEE, charges_paise=20_00)  # realised +Rs 500
    book.mark(TOKEN, 900 * RUPEE)  # 5 left, Rs 500 under water

    funds = paper.funds([], last(900 * RUPEE), now_ns=0)

    assert funds.total_paise == 50_000_00 + 500_00 - 50_00 - 500_00
    assert (funds.realised_pnl_paise, funds.unrealised_pnl_paise) == (500_00, -500_00)
    assert funds.margin_used_paise == 5 * 900_00 // 5


def test_a_buy_that_fits_the_margin_left_goes_and_one_unit_more_is_refused_with_the_brokers_text():
    paper, book = account(50_000)
    long(book, 100, 1_000 * RUPEE)  # Rs 20,000 held, Rs 30,000 left: 150 more units at Rs 200 each

    assert paper.refusal(buy(150), 150, [], last(1_000 * RUPEE)) == ""
    assert paper.refusal(buy(151), 151, [], last(1_000 * RUPEE)) == (
        "RMS:Margin Exceeds,Required:30200.00, Available:30000.00" + TEXT_END)


def test_working_orders_hold_margin_and_a_new_order_counts_them():
    paper, _ = account(50_000)
    resting = [(buy(200), 200)]  # Rs 40,000 of Rs 50,000

    assert paper.funds(resting, last(1_000 * RUPEE), now_ns=0).margin_used_paise == 40_000_00
    assert paper.refusal(buy(50, price=990 * RUPEE), 50, resting, last(1_000 * RUPEE)) == ""
    assert paper.refusal(buy(51), 51, resting, last(1_000 * RUPEE)).startswith(
        "RMS:Margin Exceeds,Required:10200.00, Available:10000.00")


def test_an_exit_is_never_refused_however_much_the_account_lost_and_a_short_beyond_it_is():
    paper, book = account(1_000)
    long(book, 100, 1_000 * RUPEE)
    book.mark(TOKEN, 900 * RUPEE)  # Rs 10,000 lost on Rs 1,000 of capital: nothing available

    assert paper.funds([], last(900 * RUPEE), now_ns=0).available_paise < 0
    assert paper.refusal(sell(100), 100, [], last(900 * RUPEE)) == ""
    assert paper.refusal(sell(101), 101, [], last(900 * RUPEE)) == ""  # long 100 or short 1: no larger
    assert paper.refusal(sell(201), 201, [], last(900 * RUPEE)) == (  # short 101: one unit more
        "RMS:Margin Exceeds,Required:180.00, Available:0.00" + TEXT_END)


def test_a_buy_covering_a_short_and_a_sell_against_a_working_buy_take_nothing():
    paper, book = account(1)
    book.position(TOKEN).apply_fill(t.SIDE_SELL, 10, 1_000 * RUPEE)

    assert paper.refusal(buy(10), 10, [], last(1_000 * RUPEE)) == ""
    assert paper.refusal(buy(20), 20, [], last(1_000 * RUPEE)) == ""  # short 10 to long 10: no larger
    assert paper.refusal(buy(21), 21, [], last(1_000 * RUPEE)) != ""


def test_delivery_is_paid_in_full():
    paper, _ = account(9_999)

    assert paper.refusal(buy(9, product=t.PRODUCT_CNC), 9, [], last(1_000 * RUPEE)) == ""
    assert paper.refusal(buy(10, product=t.PRODUCT_CNC), 10, [], last(1_000 * RUPEE)).startswith(
        "RMS:Margin Exceeds,Required:10000.00, Available:9999.00")


def test_a_contract_is_worth_its_price_factor_times_its_price():
    paper, _ = account(100_000)
    contract = buy(1, price=5_000 * RUPEE, product=t.PRODUCT_NRML)
    contract.price_factor.CopyFrom(price_factor(Fraction(100)))  # a lot of 100 barrels quoted per barrel

    assert paper.refusal(contract, 1, [], last(5_000 * RUPEE)) == ""  # 5,000 x 100 / 5 = Rs 1,00,000
    assert paper.refusal(contract, 2, [], last(5_000 * RUPEE)).startswith("RMS:Margin Exceeds,Required:200000.00")


def test_without_a_price_yet_a_market_order_is_not_refused():
    paper, _ = account(1)
    market = order(t.SIDE_BUY, kind=t.ORDER_TYPE_MARKET, quantity=1_000, price=0)

    assert paper.refusal(market, 1_000, [], {}) == ""


def test_a_change_counts_only_what_it_adds_to_the_order_it_replaces():
    paper, _ = account(50_000)
    resting = buy(200)  # holds Rs 40,000

    assert paper.refusal(resting, 250, [], last(1_000 * RUPEE), replacing=(resting, 200)) == ""
    assert paper.refusal(resting, 251, [], last(1_000 * RUPEE), replacing=(resting, 200)).startswith(
        "RMS:Margin Exceeds,Required:10200.00, Available:10000.00")
    assert paper.refusal(resting, 100, [], last(1_000 * RUPEE), replacing=(resting, 200)) == ""  # smaller


def test_orders_in_a_burst_take_the_most_they_could_from_what_was_left_and_one_that_might_not_fit_is_counted(
        monkeypatch):
    paper, _ = account(50_000)
    counts = []
    exposures = PaperAccount._exposures
    monkeypatch.setattr(PaperAccount, "_exposures", lambda *args: counts.append(1) or exposures(*args))
    working: list[tuple[t.OrderRequest, int]] = []
    for _ in range(5):  # Rs 10,000 each: the first is counted, the others fit in what it left
        assert paper.refusal(buy(50), 50, working, last(1_000 * RUPEE)) == ""
        working.append((buy(50), 50))
    assert len(counts) == 1

    assert paper.refusal(buy(1), 1, working, last(1_000 * RUPEE)).startswith(
        "RMS:Margin Exceeds,Required:200.00, Available:0.00")
    assert len(counts) == 2


def test_a_count_made_between_orders_serves_the_orders_after_it_without_counting_again(monkeypatch):
    paper, book = account(50_000)
    long(book, 100, 1_000 * RUPEE)
    paper.recount([(buy(100), 100)], last(1_000 * RUPEE))  # Rs 40,000 held: Rs 10,000 left
    counts = []
    exposures = PaperAccount._exposures
    monkeypatch.setattr(PaperAccount, "_exposures", lambda *args: counts.append(1) or exposures(*args))

    assert paper.refusal(buy(50), 50, [(buy(100), 100)], last(1_000 * RUPEE)) == ""
    assert counts == []
    assert paper.refusal(buy(1), 1, [(buy(100), 100), (buy(50), 50)], last(1_000 * RUPEE)).startswith(
        "RMS:Margin Exceeds,Required:200.00, Available:0.00")
    assert counts == [1]


async def test_the_oms_keeps_the_paper_accounts_count_fresh(paper_oms, monkeypatch):
    counted = []
    recount = PaperAccount.recount
    monkeypatch.setattr(PaperAccount, "recount", lambda *args: counted.append(1) or recount(*args))

    await until(lambda: len(counted) >= 2, within=3)  # every half second


@pytest.mark.parametrize("replayed", [False, True])
async def test_a_session_run_at_100x_has_its_paper_count_kept_fresh_at_its_pace(start_oms, monkeypatch, replayed):
    """A simulated session's clock (`make run`), or a replay's moved a second a batch every 10 ms."""
    counted = []
    recount = PaperAccount.recount
    monkeypatch.setattr(PaperAccount, "recount", lambda *args: counted.append(1) or recount(*args))
    clock = ManualClock(T0) if replayed else SimClock(speed=100)
    await start_oms(settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0, paper_capital=50_000), clock=clock)

    for _ in range(30):
        await asyncio.sleep(0.01)
        if replayed:
            clock.advance(1.0)

    # A count serves a second of the market's clock, 10 ms here: one every ~5 ms, not one every half second.
    assert len(counted) >= 10


@pytest.mark.parametrize(("real_s", "market_s", "wait_s"), [
    (0.5, 0.5, 0.5),  # the real clock
    (0.5, 30.0, 1 / 120),  # a session at 60x
    (0.5, 0.0, 0.5),  # a clock standing still (a replay between batches): as the real one
    (0.001, 1000.0, 0.001),  # a replay at a million times: at most every millisecond
])
def test_the_paper_count_waits_half_a_count_life_at_the_market_clocks_pace(real_s, market_s, wait_s):
    assert recount_wait_s(real_s, int(market_s * 1e9)) == pytest.approx(wait_s)


def test_a_count_of_what_is_left_serves_for_a_second_of_the_markets_clock_at_most():
    clock = ManualClock(T0)
    paper, book = account(50_000, clock=clock)
    assert paper.refusal(buy(100), 100, [], last(1_000 * RUPEE)) == ""  # counted: Rs 30,000 left after it
    long(book, 100, 1_000 * RUPEE)
    book.mark(TOKEN, 700 * RUPEE)  # Rs 30,000 lost: Rs 6,000 left in truth (50,000 - 30,000 - 100 x 700 / 5)

    clock.advance(0.9)
    assert paper.refusal(buy(140), 140, [], last(700 * RUPEE)) == ""  # Rs 19,600 of the count's Rs 30,000
    clock.advance(0.2)
    assert paper.refusal(buy(50), 50, [], last(700 * RUPEE)) == (  # Rs 7,000: within the count, but it is stale
        "RMS:Margin Exceeds,Required:7000.00, Available:6000.00" + TEXT_END)


def test_a_delivery_sell_beyond_the_shares_held_less_those_already_being_sold_is_refused_naming_them():
    """Kotak's RMS refuses a retail client's short in delivery; the paper account opened one and carried it."""
    paper, book = account(1_000_000)
    long(book, 100, 1_000 * RUPEE, product=t.PRODUCT_CNC)
    long(book, 500, 1_000 * RUPEE)  # an intraday long is no holding
    working = [(sell(60, product=t.PRODUCT_CNC), 60), (sell(500), 500)]

    assert paper.refusal(sell(40, product=t.PRODUCT_CNC), 40, working, last(1_000 * RUPEE)) == ""
    assert paper.refusal(sell(41, product=t.PRODUCT_CNC), 41, working, last(1_000 * RUPEE)) == holdings_text(
        41, 100, 60)


def test_an_intraday_or_carry_forward_sell_may_still_go_short_against_margin():
    paper, _ = account(1_000_000)

    assert [paper.refusal(sell(100, product=product), 100, [], last(1_000 * RUPEE))
            for product in (t.PRODUCT_MIS, t.PRODUCT_NRML)] == ["", ""]


def test_a_change_of_a_delivery_sell_may_lower_it_but_not_raise_it_beyond_the_shares_held():
    paper, book = account(1_000_000)
    long(book, 50, 1_000 * RUPEE, product=t.PRODUCT_CNC)
    resting = sell(50, product=t.PRODUCT_CNC)

    assert paper.refusal(resting, 40, [], last(1_000 * RUPEE), replacing=(resting, 50)) == ""
    assert paper.refusal(resting, 51, [], last(1_000 * RUPEE), replacing=(resting, 50)) == holdings_text(51, 50, 0)


# -- through the OMS and its VirtualBroker ------------------------------------------------------------------
@pytest.fixture
async def paper_oms(start_oms):
    """The OMS with a Rs 50,000 paper account; RELIANCE at Rs 1,000 on the broker's last tick."""
    oms = await start_oms(settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2,
                                               paper_capital=50_000))
    await oms.bus.publish(Topic.TICKS, tick(1_000 * RUPEE, bid=999 * RUPEE, ask=1_000 * RUPEE))
    await oms.bus.drain()
    return oms


async def funds(oms) -> oms_pb2.GetFundsResponse:
    return await oms.bus.call(rpc.GET_FUNDS, oms_pb2.GetFundsRequest())


async def test_an_order_beyond_the_paper_accounts_margin_is_rejected_with_the_brokers_text_and_recorded(paper_oms):
    oms = paper_oms
    await oms.bus.publish(Topic.ORDERS, accepted(order(quantity=200, price=990_00, client_order_id="fits")))
    await oms.until_status("fits", t.ORDER_STATUS_OPEN)

    await oms.bus.publish(Topic.ORDERS, accepted(order(quantity=51, price=990_00, client_order_id="over")))
    over = await oms.until_status("over", t.ORDER_STATUS_REJECTED)

    assert over.reason_code == "BROKER_REJECTED"
    assert over.reason == "RMS:Margin Exceeds,Required:10200.00, Available:10000.00" + TEXT_END
    recorded = await oms.ledger.get("over")
    assert (recorded.status, recorded.reason) == (t.ORDER_STATUS_REJECTED, over.reason)
    assert "over" not in {vo.request.client_order_id for vo in oms.broker.book.values()}  # never in its book
    assert (await funds(oms)).margin_used_paise == 40_000_00


async def test_get_funds_reports_the_paper_account_and_a_fill_moves_it(paper_oms):
    oms = paper_oms
    assert (await funds(oms)).available_paise == 50_000_00

    await oms.bus.publish(Topic.ORDERS, accepted(order(kind=t.ORDER_TYPE_MARKET, quantity=100, price=0,
                                                       client_order_id="mkt")))
    traded = await oms.until_status("mkt", t.ORDER_STATUS_TRADED)
    await oms.bus.drain()
    got = await funds(oms)

    assert got.account == "paper"
    assert got.margin_used_paise == 100 * 1_000_00 // 5
    assert got.total_paise == 50_000_00 - traded.last_fill_charges_paise
    assert got.available_paise == got.total_paise - got.margin_used_paise


async def test_an_exit_goes_when_the_account_has_nothing_left(paper_oms):
    oms = paper_oms
    await oms.bus.publish(Topic.ORDERS, accepted(order(kind=t.ORDER_TYPE_MARKET, quantity=250, price=0,
                                                       client_order_id="all-in")))
    await oms.until_status("all-in", t.ORDER_STATUS_TRADED)
    await oms.bus.publish(Topic.TICKS, tick(900_00, bid=899_00, ask=900_00))  # Rs 25,000 lost: less than nothing
    await oms.bus.drain()
    assert (await funds(oms)).available_paise < 0

    await oms.bus.publish(Topic.ORDERS, accepted(order(t.SIDE_SELL, kind=t.ORDER_TYPE_MARKET, quantity=250, price=0,
                                                       client_order_id="out")))

    assert (await oms.until_status("out", t.ORDER_STATUS_TRADED)).filled_quantity == 250


async def test_a_change_beyond_the_margin_is_refused_by_the_broker_and_the_order_keeps_its_terms(paper_oms):
    oms = paper_oms

    async def risk_allows(request: risk_pb2.CheckModifyRequest) -> risk_pb2.CheckModifyResponse:
        return risk_pb2.CheckModifyResponse()

    oms.bus.handle(rpc.CHECK_MODIFY, risk_allows)
    await oms.bus.publish(Topic.ORDERS, accepted(order(quantity=200, price=990_00)))
    await oms.until_status("c-1", t.ORDER_STATUS_OPEN)

    with pytest.raises(BrokerRejected, match=re.escape("RMS:Margin Exceeds,Required:10200.00, Available:10000.00")):
        await oms.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id="c-1", quantity=251))
    assert (await oms.ledger.get("c-1")).request.quantity == 200
    changed = await oms.bus.call(rpc.MODIFY_ORDER, oms_pb2.ModifyOrderRequest(order_id="c-1", quantity=250))

    assert changed.order.request.quantity == 250


async def test_a_virtual_broker_without_an_account_says_so(start_oms):
    oms = await start_oms()
    oms.broker.account = None

    with pytest.raises(NotFound, match="no paper account"):
        await funds(oms)


async def test_funds_running_low_is_warned_once_until_they_recover_and_the_gauges_follow(start_oms):
    oms = await start_oms(settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0, paper_capital=50_000,
                                               funds_check_s=0.02, low_funds_pct=10))
    await oms.bus.publish(Topic.TICKS, tick(1_000 * RUPEE, bid=999 * RUPEE, ask=1_000 * RUPEE))

    async def trade(side: int, cid: str) -> None:
        await oms.bus.publish(Topic.ORDERS, accepted(order(side, kind=t.ORDER_TYPE_MARKET, quantity=240, price=0,
                                                           client_order_id=cid)))
        await oms.until_status(cid, t.ORDER_STATUS_TRADED)

    def warnings() -> list[ops_pb2.Notification]:
        return [n for n in oms.notifications if n.title == "Funds running low"]

    await until(lambda: REGISTRY.get_sample_value("neopulse_funds_rupees", {"kind": "available"}) == 50_000)
    await trade(t.SIDE_BUY, "in-1")  # Rs 48,000 of margin: under 10 % left
    await until(lambda: warnings())
    await asyncio.sleep(0.1)  # several reads later, still low: said once
    (warned,) = warnings()
    await trade(t.SIDE_SELL, "out-1")
    await until(lambda: REGISTRY.get_sample_value("neopulse_funds_rupees", {"kind": "margin_used"}) == 0)
    await trade(t.SIDE_BUY, "in-2")
    await until(lambda: len(warnings()) == 2)

    assert warned.severity == ops_pb2.SEVERITY_WARNING and warned.fields["account"] == "paper"
    assert " available of ₹" in warned.text and "(₹48,000.00 held as margin) in the paper account" in warned.text


async def test_a_delivery_short_entry_is_rejected_with_the_rms_text_and_a_delivery_exit_goes(paper_oms):
    oms = paper_oms
    await oms.bus.publish(Topic.ORDERS, accepted(buy(10, price=1_000 * RUPEE, product=t.PRODUCT_CNC)))
    await oms.until_status("c-1", t.ORDER_STATUS_TRADED)
    await oms.bus.drain()

    entry = sell(11, price=990 * RUPEE, product=t.PRODUCT_CNC)
    entry.client_order_id = "short"
    await oms.bus.publish(Topic.ORDERS, accepted(entry))
    short = await oms.until_status("short", t.ORDER_STATUS_REJECTED)
    exit_ = sell(10, price=990 * RUPEE, product=t.PRODUCT_CNC)
    exit_.client_order_id = "exit"
    await oms.bus.publish(Topic.ORDERS, accepted(exit_))

    assert (short.reason, (await oms.until_status("exit", t.ORDER_STATUS_TRADED)).filled_quantity) == (
        holdings_text(11, 10, 0), 10)
