"""Review of the Kotak mapping: positions with a price factor, AMO and placeholder order states, scrip-master ticks
and price factors, a modify answered with an error page, order history order, and a fill the order feed reports
before the place reply.

Kotak's own words are the reference: docs/functions/portfolio/positions.md of Kotak-Neo/kotak-neo-python
(average price = amount / (quantity x multiplier x genNum/genDen x prcNum/prcDen); P&L = (sell amount - buy
amount) + net quantity x LTP x that factor) and neo_api_client/utils/positions_pnl.py, which implements it.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from services.risk.engine import RiskEngine
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import RetryableError
from shared.instruments import InstrumentBook
from shared.kotak import mapping
from shared.positions import PositionBook
from shared.price_factor import factor_of
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RunningOms
from tests.kotak.test_broker import limit_buy, market_buy
from tests.risk.factories import limits

CRUDE = 451669


def crude_position(**factor: str) -> dict[str, str]:
    """A CRUDEOIL futures row as portfolio/v2/positions sends it: bought 2 @ 6000, sold 1 @ 6010, LTP 6005.
    Kotak's amounts already include the price factor (amount = quantity x price x factor)."""
    terms = {"multiplier": "1", "genNum": "1", "genDen": "1", "prcNum": "1", "prcDen": "1", **factor}
    nf = int(terms["multiplier"]) * int(terms["genNum"]) * int(terms["prcNum"]) // (
        int(terms["genDen"]) * int(terms["prcDen"]))
    return {"tok": str(CRUDE), "exSeg": "mcx_fo", "trdSym": "CRUDEOIL26OCTFUT", "prod": "NRML",
            "flBuyQty": "2", "flSellQty": "1", "cfBuyQty": "0", "cfSellQty": "0",
            "buyAmt": f"{2 * 6000 * nf}.00", "sellAmt": f"{6010 * nf}.00", "cfBuyAmt": "0.00", "cfSellAmt": "0.00",
            "lotSz": "1", "precision": "2", "ltp": "6005.00", **terms}


# -- positions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [{"multiplier": "100"}, {"multiplier": "10", "genNum": "20", "genDen": "2"},
                                    {"prcNum": "300", "prcDen": "3"}])
def test_a_position_with_a_price_factor_has_a_price_average_and_pnl_scaled_by_the_factor(factor):
    pos = mapping.position(crude_position(**factor))

    assert pos.net_quantity == 1
    assert pos.average_price_paise == 6000_00  # a price, not amount per unit (Rs 6,00,000)
    assert pos.realised_pnl_paise == 1 * 10_00 * 100  # Rs 10 a unit on 1 closed unit, x100
    assert pos.unrealised_pnl_paise == 1 * 5_00 * 100  # Rs 5 a unit on 1 open unit, x100


@pytest.mark.parametrize(("factor", "expected"), [({"multiplier": "100"}, Fraction(100)),
                                                  ({"genNum": "3", "genDen": "2"}, Fraction(3, 2))])
def test_a_position_with_a_price_factor_carries_the_factor(factor, expected):
    """So that the OMS's book, which takes carried positions from these rows, values later prices by it too."""
    pos = mapping.position(crude_position(**factor))

    assert factor_of(pos.price_factor) == expected


def test_a_position_of_factor_one_leaves_the_factor_unset():
    assert not mapping.position(crude_position()).HasField("price_factor")


def test_position_pnl_adds_up_to_kotaks_total_without_flooring_the_average_prices():
    """Bought 3 for Rs 300.05, sold 2 for Rs 210.00, LTP Rs 100: Kotak's P&L is 210.00 - 300.05 + 100.00 = 9.95."""
    row = {"tok": "2885", "exSeg": "nse_cm", "trdSym": "RELIANCE-EQ", "prod": "MIS", "flBuyQty": "3",
           "flSellQty": "2", "buyAmt": "300.05", "sellAmt": "210.00", "cfBuyQty": "0", "cfSellQty": "0",
           "cfBuyAmt": "0.00", "cfSellAmt": "0.00", "multiplier": "1", "genNum": "1", "genDen": "1", "prcNum": "1",
           "prcDen": "1", "ltp": "100.00"}

    pos = mapping.position(row)

    assert pos.realised_pnl_paise + pos.unrealised_pnl_paise == 9_95
    assert pos.average_price_paise == 100_02  # 100.0166.. to the nearest paisa, not floored to 100.01


# -- order states ---------------------------------------------------------------------------------------
def test_an_after_market_order_cancelled_is_cancelled_not_an_unknown_state_the_oms_reads_as_open():
    event = mapping.order_event({"nOrdNo": "7", "GuiOrdId": "c7", "ordSt": "cancelled after market order",
                                 "qty": 5, "fldQty": 0, "avgPrc": "0.00"})

    assert event.status == T.ORDER_STATUS_CANCELLED


def test_modifying_an_after_market_order_keeps_it_submitted():
    event = mapping.order_event({"nOrdNo": "7", "ordSt": "modify after market order req received", "qty": 5})

    assert event.status == T.ORDER_STATUS_SUBMITTED


@pytest.mark.parametrize("placeholder", ["--", "NA"])
def test_kotaks_no_rejection_placeholder_is_no_reason(placeholder):
    """Kotak's order book and history say rejRsn "--" for an order nothing rejected (order_report.md)."""
    event = mapping.order_event({"nOrdNo": "7", "ordSt": "open", "qty": 5, "rejRsn": placeholder})

    assert event.reason == ""


# -- scrip master ---------------------------------------------------------------------------------------
# Column names as Kotak writes them (stray space after dTickSize, lExpiryDate and lMultiplier; ";" after
# dStrikePrice), from a recorded mcx_fo.csv header and search_scrip.md.
HEADER = ("pSymbol,pGroup,pExchSeg,pInstType,pSymbolName,pTrdSymbol,pOptionType,pISIN,dTickSize ,lLotSize,"
          "lExpiryDate ,lMultiplier ,lPrecision,dStrikePrice;,dGenNum,dGenDen,dPriceNum,dPriceDen,lFreezeQty")


def master(*rows: str) -> list[market_pb2.Instrument]:
    return mapping.instruments_from_csv("\n".join([HEADER, *rows]) + "\n")


def test_a_tick_below_a_paisa_is_not_imported_as_five_paise():
    """USDINR ticks Rs 0.0025 (0.25 paise, 4 decimals): integer paise cannot price it, and rounding the tick
    to 0 and then defaulting it to 5 paise snaps every price to a grid the exchange does not use."""
    instruments = master("1201,,cde_fo,FUTCUR,USDINR,USDINR26OCTFUT,XX,,0.250000,1,1477328400,-1,4,-1,1,1,1,1,10001",
                         "2885,EQ,nse_cm,,RELIANCE,RELIANCE-EQ,,INE002A01018,10.000000,1,-1,-1,2,-1,1,1,1,1,100000")

    assert [(i.symbol, i.tick_size_paise) for i in instruments] == [("RELIANCE-EQ", 10)]


@pytest.mark.parametrize(("terms", "factor"), [
    ("100,2,-1,1,1,1,1", Fraction(100)), ("-1,2,-1,100,1,1,1", Fraction(100)), ("-1,2,-1,1,1,10,1", Fraction(10)),
    ("-1,2,-1,1,1,1,100", Fraction(1, 100)), ("10,2,-1,20,3,1,1", Fraction(200, 3))])
def test_a_contract_with_a_price_factor_is_imported_with_the_factor_exactly(terms, factor):
    """P&L, order value and margin of such a contract are price x quantity x factor: the Instrument carries the
    factor (multiplier x genNum/genDen x prcNum/prcDen) as an exact ratio; a contract of factor 1 leaves it unset."""
    instruments = master(f"451669,,mcx_fo,FUTCOM,CRUDEOIL,CRUDEOIL26OCTFUT,XX,,100.000000,1,1476921600,{terms},"
                         "10000",
                         "451670,,mcx_fo,FUTCOM,CRUDEOIL,CRUDEOIL26NOVFUT,XX,,100.000000,100,1479600000,1,2,-1,1,1,1,1,"
                         "10000")

    assert [(i.symbol, i.lot_size, i.tick_size_paise, factor_of(i.price_factor), i.HasField("price_factor"))
            for i in instruments] == [("CRUDEOIL26OCTFUT", 1, 100, factor, True),
                                      ("CRUDEOIL26NOVFUT", 100, 100, Fraction(1), False)]


def test_a_contract_whose_price_factor_no_int64_ratio_holds_is_left_out():
    instruments = master("451669,,mcx_fo,FUTCOM,CRUDEOIL,CRUDEOIL26OCTFUT,XX,,100.000000,1,1476921600,"
                         "100000000000000000000,2,-1,1,1,1,1,10000")

    assert instruments == []


# -- replies --------------------------------------------------------------------------------------------
async def test_a_modify_answered_with_a_gateway_error_page_is_an_unknown_outcome_not_a_refusal(sim, broker):
    """The SDK's modify_order turns any failure but ApiException (here the JSON decode of an HTML 502 page)
    into {"Error": "Exception has been occurred while connecting to API"}: Kotak may have applied it."""
    ack = await broker.place_order(limit_buy("coid-mod", 128_000))
    sim.fail_next("modify_order", 502, text="<html><body>502 Bad Gateway</body></html>")

    with pytest.raises(RetryableError, match="outcome unknown"):
        await broker.modify_order(ack.exchange_order_id, price_paise=128_100)


async def test_order_history_lists_the_newest_state_first_as_kotak_does(sim, broker):
    """order_history.md: the rows of one order come newest first (complete, open, open pending, ...)."""
    ack = await broker.place_order(limit_buy("coid-hist", 129_100))

    history = await broker.order_history(ack.exchange_order_id)

    assert [e.status for e in history][:2] == [T.ORDER_STATUS_TRADED, T.ORDER_STATUS_OPEN]
    assert history[-1].status == T.ORDER_STATUS_SUBMITTED


# -- the factor in positions and risk ---------------------------------------------------------------------
def test_the_oms_pnl_of_a_contract_with_a_price_factor_matches_kotaks():
    """The orders carry the instrument's factor (risk stamps it on every order it accepts)."""
    kotak = mapping.position(crude_position(multiplier="100"))
    book = PositionBook()
    for side, quantity, price in ((T.SIDE_BUY, 2, 6000_00), (T.SIDE_SELL, 1, 6010_00)):
        req = T.OrderRequest(token=CRUDE, side=side, quantity=quantity, product=T.PRODUCT_NRML,
                             price_factor=market_pb2.PriceFactor(numerator=100))
        book.apply_update(T.OrderUpdate(request=req, last_fill_quantity=quantity, last_fill_price_paise=price))
    book.mark(CRUDE, 6005_00)

    assert (book.realised_pnl_paise(), book.unrealised_pnl_paise()) == (kotak.realised_pnl_paise,
                                                                        kotak.unrealised_pnl_paise)


def test_risk_values_one_lot_of_a_contract_with_a_price_factor_at_price_times_quantity_times_factor():
    """One lot of CRUDEOIL at Rs 6,000 a barrel, factor 100 (100 barrels): Rs 6,00,000, over a Rs 1,00,000 cap."""
    crude = market_pb2.Instrument(token=CRUDE, symbol="CRUDEOIL26OCTFUT", exchange_segment="mcx_fo",
                                  tick_size_paise=100, lot_size=1, price_factor=market_pb2.PriceFactor(numerator=100))
    engine = RiskEngine(limits(max_order_value_paise=1_00_000_00), ManualClock(NOW_NS), InstrumentBook([crude]))
    order = T.OrderRequest(client_order_id="c-crude", token=CRUDE, exchange_segment="mcx_fo",
                           symbol="CRUDEOIL26OCTFUT", side=T.SIDE_BUY, quantity=1, order_type=T.ORDER_TYPE_LIMIT,
                           price_paise=6000_00, product=T.PRODUCT_NRML, validity=T.VALIDITY_DAY)

    denial = engine.check_order_value(order, crude, NOW_NS)

    assert denial is not None and denial[0] == "MAX_ORDER_VALUE"


# -- order events -----------------------------------------------------------------------------------------
async def test_a_fill_the_order_feed_reports_before_the_place_reply_still_reaches_the_oms(sim):
    """A market order fills while Kotak's place reply is still on its way, and the feed's messages carry no tag:
    the OMS cannot tell whose order they are yet and drops them. The order book's row, which has the tag, must
    then still be delivered, not swallowed as a repeat of what the feed said."""
    async with RunningOms(sim) as running:
        sim.order_feed_without_tag = True
        await eventually(lambda: bool(sim.order_sockets))
        sim.delay_next("place_order", 1.0)  # the feed says "complete" before the place reply arrives
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=market_buy("coid-race"),
                                                               signal_id="coid-race"))

        def traded() -> bool:
            update = running.latest("coid-race")
            return update is not None and (update.status, update.filled_quantity) == (T.ORDER_STATUS_TRADED, 3)

        await eventually(traded)
