"""Delivery (CNC) holdings at start: the shares the account holds from earlier days are put in the OMS book (and so
in risk's) as a CNC long at the previous close, so that selling them reduces a position instead of opening a
short. Real SDK against the simulator, whose holdings read answers in Kotak's shape."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from services.oms.charges import ChargeModel
from services.oms.virtual_broker import VirtualBroker
from services.risk.config import RiskSettings
from services.risk.module import RiskModule
from shared import rpc
from shared.bus import Topic
from shared.clock import ManualClock
from shared.config import load
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, risk_pb2
from shared.contracts import trading_pb2 as T
from shared.errors import RiskRejected
from shared.kotak.broker import KotakBroker
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.kotak.conftest import NOW_NS, RELIANCE, TCS, RunningOms, settings_for, tick
from tests.kotak.test_broker import market_buy
from tests.kotak.test_review_carried_positions import nrml_buy, outside

BSE_RELIANCE = 500325


@pytest.fixture(autouse=True)
def sdk_holdings_cache(tmp_path, monkeypatch):
    """The SDK keeps each holdings read on disk (~/.kotak_neo by default): here, in the test's own directory."""
    monkeypatch.setenv("NEO_HOLDINGS_CACHE_DIR", str(tmp_path / "holdings_cache"))


def cnc(order: T.OrderRequest, side: int = T.SIDE_BUY) -> T.OrderRequest:
    order.product, order.side = T.PRODUCT_CNC, side
    return order


def sell_held(coid: str, qty: int = 10) -> T.OrderRequest:
    return cnc(market_buy(coid, qty), T.SIDE_SELL)


async def positions_of(running: RunningOms) -> list[T.Position]:
    return list((await running.bus.call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())).positions)


async def start_risk(running: RunningOms, **settings: object) -> RiskModule:
    """Risk on the OMS's bus, loading its positions from the OMS as at start (instruments from an ingestion
    stand-in: the bundled NSE universe)."""
    async def list_instruments(request: ingestion_pb2.ListInstrumentsRequest) -> ingestion_pb2.ListInstrumentsResponse:
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

    running.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    risk = RiskModule(running.bus, load(RiskSettings, {}, **settings), ManualClock(NOW_NS))
    await risk.start()
    return risk


async def test_shares_held_at_start_are_in_the_book_as_a_cnc_long_at_the_previous_close(sim):
    """At the close, as a new day carries a held quantity: the gain since they were bought (at 1200.00) is not
    today's, so it must not count for or against today's loss limit."""
    sim.exchange.hold(RELIANCE, 100, 1200_00, closing_price_paise=1285_00)

    async with RunningOms(sim, take_holdings=True) as running:
        listed = await positions_of(running)

    (held,) = listed
    assert (held.token, held.exchange_segment, held.product, held.net_quantity, held.average_price_paise,
            held.last_price_paise, held.unrealised_pnl_paise) == (RELIANCE, "nse_cm", T.PRODUCT_CNC, 100, 1285_00,
                                                                  1285_00, 0)


async def test_holdings_stay_out_of_the_book_unless_take_holdings_is_on(sim):
    """Their price moves would count against the daily loss limit, meant for what NeoPulse trades."""
    sim.exchange.hold(RELIANCE, 100, 1200_00, closing_price_paise=1285_00)

    async with RunningOms(sim) as running:
        listed = await positions_of(running)

    assert listed == []


async def test_selling_some_held_shares_leaves_the_book_long_the_rest_not_short(sim):
    sim.exchange.hold(RELIANCE, 100, 1200_00, closing_price_paise=1285_00)

    async with RunningOms(sim, take_holdings=True) as running:
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=sell_held("sell-10"),
                                                               signal_id="s"))
        await eventually(lambda: running.latest("sell-10") is not None
                         and running.latest("sell-10").status == T.ORDER_STATUS_TRADED)

    assert running.oms.engine.positions.net_quantity(RELIANCE) == 90


async def test_risk_in_reducing_accepts_a_sell_of_held_shares_as_reducing(sim):
    """An intraday loss (3 TCS bought at 3450.10, marked at 3400.00: Rs 150.30) puts risk in REDUCING; selling
    10 of the 100 RELIANCE held shrinks a position, so it passes."""
    sim.exchange.hold(RELIANCE, 100, 1200_00, closing_price_paise=1285_00)
    async with RunningOms(sim, take_holdings=True) as running:
        risk = await start_risk(running, daily_loss_reducing=Decimal("100"), daily_loss_halt=Decimal("100000"))
        await running.bus.publish(Topic.ORDERS, T.RiskDecision(
            accepted=True, order=market_buy("tcs-mis", symbol="TCS-EQ", token=TCS), signal_id="t"))
        await eventually(lambda: risk.engine.positions.net_quantity(TCS) == 3)
        await running.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[tick(TCS, 3400_00)]))
        await eventually(lambda: risk.engine.state == risk_pb2.TRADING_STATE_REDUCING)

        try:
            reply = await running.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=sell_held("sell-10")))
        except RiskRejected as exc:
            pytest.fail(f"a sell of held shares was refused in REDUCING: {exc}")

    assert reply.decision.accepted


async def test_a_rising_price_after_selling_held_shares_is_a_gain_not_a_loss(sim):
    """Without the holding, the 10 sold were a short to risk, and a rise of Rs 20 a phantom loss of Rs 200:
    enough here to move it to REDUCING."""
    sim.exchange.hold(RELIANCE, 100, 1200_00, closing_price_paise=1290_00)
    async with RunningOms(sim, take_holdings=True) as running:
        risk = await start_risk(running, daily_loss_reducing=Decimal("100"), daily_loss_halt=Decimal("100000"))
        await running.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[tick(RELIANCE, 1290_00)]))
        await eventually(lambda: risk.engine.last_prices.get(RELIANCE) == 1290_00)
        await running.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=sell_held("sell-10")))
        await eventually(lambda: risk.engine.positions.net_quantity(RELIANCE) != 0
                         and not risk.engine.open_orders)
        await running.bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[tick(RELIANCE, 1310_00)]))
        await eventually(lambda: risk.engine.last_prices.get(RELIANCE) == 1310_00)
        await risk.tick_timer()

    assert (risk.engine.state, risk.engine.daily_pnl_paise() > 0) == (risk_pb2.TRADING_STATE_ACTIVE, True)
    assert risk.engine.positions.net_quantity(RELIANCE) == 90


async def test_shares_listed_again_on_the_other_exchange_are_counted_once(sim):
    """Kotak lists a scrip traded on NSE and BSE twice, the second row flagged isAlternateScrip."""
    sim.exchange.hold(RELIANCE, 100, 1200_00, alternate_token=BSE_RELIANCE)

    async with RunningOms(sim, take_holdings=True) as running:
        listed = await positions_of(running)

    assert [(p.token, p.net_quantity) for p in listed] == [(RELIANCE, 100)]


async def test_a_malformed_holdings_row_is_skipped_and_logged_and_the_others_are_taken(sim, caplog):
    sim.exchange.hold(RELIANCE, 100, 1200_00)
    sim.exchange.holdings += [{"symbol": "TCS", "exchangeSegment": "nse_cm", "quantity": "ten"},
                              {"exchangeIdentifier": "11536", "exchangeSegment": "nse_cm", "quantity": 5,
                               "averagePrice": "not a price"}, "not a row"]
    broker = KotakBroker(settings_for(sim))
    await broker.start()

    with caplog.at_level(logging.WARNING, logger="shared.kotak.mapping"):
        held = await broker.holdings()

    assert [(p.token, p.product, p.net_quantity) for p in held] == [(RELIANCE, T.PRODUCT_CNC, 100)]
    (record,) = [r for r in caplog.records if "holdings" in r.getMessage()]
    assert (record.__dict__["count"], record.__dict__["examples"]) == (
        2, ["nse_cm:? (exchangeIdentifier, quantity, averagePrice)", "nse_cm:11536 (averagePrice)"])


async def test_a_holding_on_an_instrument_neopulse_traded_cnc_today_is_left_out_and_logged(sim, caplog):
    """After a restart the book has today's fills from the ledger; Kotak's figures for the instrument may mix
    them with the holding (a sale today), so the holding is not added on top."""
    sim.exchange.hold(RELIANCE, 100, 1200_00)
    async with RunningOms(sim, take_holdings=True) as first:
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=sell_held("sell-10"),
                                                             signal_id="s"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 90)
    restarted = RunningOms(sim, take_holdings=True)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger

    with caplog.at_level(logging.WARNING, logger="services.oms.reconcile"):
        async with restarted:
            pass

    assert restarted.oms.engine.positions.net_quantity(RELIANCE) == -10
    assert any("traded CNC today" in r.getMessage() and r.__dict__.get("token") == RELIANCE
               for r in caplog.records)


async def test_shares_bought_cnc_today_are_counted_once_after_a_restart(sim):
    """Until settlement they are in Kotak's positions, not its holdings: the book has them from the ledger."""
    async with RunningOms(sim, take_holdings=True) as first:
        await first.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=cnc(market_buy("buy-5", 5)),
                                                             signal_id="b"))
        await eventually(lambda: first.oms.engine.positions.net_quantity(RELIANCE) == 5)
    restarted = RunningOms(sim, take_holdings=True)
    restarted.oms.ledger = restarted.oms.engine.ledger = first.oms.ledger

    async with restarted:
        listed = await positions_of(restarted)

    assert [(p.token, p.product, p.net_quantity) for p in listed] == [(RELIANCE, T.PRODUCT_CNC, 5)]


async def test_a_delivery_buy_made_outside_neopulse_today_is_not_taken_from_positions(sim):
    """Only settled holdings are taken: today's CNC rows in Kotak's positions stay out, as before."""
    await outside(sim, cnc(market_buy("from-the-app", 5)))

    async with RunningOms(sim, take_holdings=True) as running:
        listed = await positions_of(running)

    assert listed == []


async def test_a_holdings_read_that_fails_at_start_takes_nothing_and_the_oms_starts(sim):
    """Nothing half-taken: the carried NRML positions and the holdings are read before either goes in the book."""
    await outside(sim, nrml_buy("carried"))
    sim.exchange.hold(RELIANCE, 100, 1200_00)
    sim.fail_next("holdings", 503, text="<html>Service Unavailable</html>")

    async with RunningOms(sim, take_holdings=True) as running:
        listed = await positions_of(running)

    assert listed == [] and running.oms.ready.is_set()


async def test_the_paper_broker_never_takes_the_real_accounts_holdings_into_its_book(sim):
    sim.exchange.hold(RELIANCE, 100, 1200_00)
    real = KotakBroker(settings_for(sim))
    running = RunningOms(sim, take_holdings=True)
    running.oms.broker = running.oms.engine.broker = VirtualBroker(real, ChargeModel.default(), ManualClock(NOW_NS))
    await real.start()
    try:
        async with running:
            listed = await positions_of(running)
    finally:
        await real.stop()

    assert listed == []


def test_the_sdks_holdings_cache_is_private_to_this_user_unless_placed_elsewhere():
    """The SDK writes the account's holdings at every holdings() and positions() call; by default to ~/.kotak_neo,
    readable by every user of the machine."""
    code = ("import os, stat, shared.kotak; d = os.environ['NEO_HOLDINGS_CACHE_DIR']; "
            "print(d.startswith(os.path.expanduser('~')), oct(stat.S_IMODE(os.stat(d).st_mode)))")
    env = {k: v for k, v in os.environ.items() if k != "NEO_HOLDINGS_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0o700"]
