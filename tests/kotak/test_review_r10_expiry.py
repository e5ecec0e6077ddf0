"""The scrip master's lExpiryDate read into Instrument.expiry_ns (00:00 IST of the expiry day), as the SDK's
scrip_search reads it: nse_fo (and cde_fo) count from 1980, so 315511200 s are added; mcx_fo and bse_fo give unix
time; the day is the UTC date of the seconds. Cash rows carry none.

The expiry values are Kotak's own: NIFTY23D0720100CE from kotak-neo-api issue #102 (search_scrip shows its pExpiryDate
'07Dec2023'), FINNIFTY24SEP from issue #200, CRUDEOIL from Kotak-neo-api-v2 issue #67 (pExpiryDate
2026-05-14). The SENSEX value is made up (no recorded bse_fo row at hand): the SDK reads bse_fo's as unix time,
as it does mcx_fo's."""

from __future__ import annotations

from datetime import date

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, day_of, ist_ns
from shared.contracts import trading_pb2 as T
from shared.instruments import InstrumentBook
from shared.kotak import mapping
from tests.risk.factories import limits

HEADER = ("pSymbol,pGroup,pExchSeg,pInstType,pSymbolName,pTrdSymbol,pOptionType,pISIN,dTickSize ,lLotSize,"
          "lExpiryDate ,lMultiplier ,lPrecision,dStrikePrice;,dGenNum,dGenDen,dPriceNum,dPriceDen,lFreezeQty")


def master(*rows: str) -> dict[str, date | None]:
    """Symbol -> expiry day (None: no expiry)."""
    return {i.symbol: day_of(i.expiry_ns) if i.expiry_ns else None
            for i in mapping.instruments_from_csv("\n".join([HEADER, *rows]) + "\n")}


@pytest.mark.parametrize(("row", "expiry"), [
    ("43148,XX,nse_fo,OPTIDX,NIFTY,NIFTY23D0720100CE,CE,,5,50,1386426600,-1,2,2010000,1,1,1,1,1801",
     date(2023, 12, 7)),
    ("35011,XX,nse_fo,FUTIDX,FINNIFTY,FINNIFTY24SEPFUT,XX,,5,25,1411655400,-1,2,-1,1,1,1,1,1801", date(2024, 9, 24)),
    ("437000,,mcx_fo,OPTFUT,CRUDEOIL,CRUDEOIL26MAY6000CE,CE,,10,1,1778803199,100,2,600000,1,1,1,1,10000",
     date(2026, 5, 14)),
    ("1140560,,bse_fo,IO,SENSEX,SENSEX2612282000CE,CE,,5,20,1769072400,-1,2,8200000,1,1,1,1,1001", date(2026, 1, 22)),
    ("2885,EQ,nse_cm,,RELIANCE,RELIANCE-EQ,,INE002A01018,10,1,-1,-1,2,-1,1,1,1,1,100000", None),
])
def test_a_contracts_expiry_day_is_read_as_the_sdk_reads_it_for_its_segment(row, expiry):
    (read,) = master(row).values()

    assert read == expiry


def test_risk_refuses_an_entry_in_a_weekly_option_from_the_master_the_day_after_its_expiry():
    expired_at = ist_ns(date(2026, 1, 20), 14, 0) // 10**9 - mapping.KOTAK_1980_EPOCH_S  # Tuesday's weekly
    row = f"40001,,nse_fo,OPTIDX,NIFTY,NIFTY2612024000CE,CE,,5.000000,65,{expired_at},-1,2,2.4e+06,1,1,1,1,1801"
    engine = RiskEngine(limits(), ManualClock(ist_ns(date(2026, 1, 21), 10, 0)),
                        InstrumentBook(mapping.instruments_from_csv(HEADER + "\n" + row + "\n")))
    engine.last_prices[40001] = 12_00

    decision = engine.decide(T.OrderRequest(
        client_order_id="after-expiry", token=40001, side=T.SIDE_BUY, quantity=65, order_type=T.ORDER_TYPE_MARKET,
        product=T.PRODUCT_NRML, validity=T.VALIDITY_DAY, strategy_tag="TEST"))

    assert (decision.accepted, decision.reason_code) == (False, "CONTRACT_EXPIRED")
