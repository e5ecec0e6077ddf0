"""A strategy's max_daily_loss: past it (its own fills' realised P&L, charges and open positions at the last
prices) it is paused, its working orders cancelled and its positions closed at the market, once a day."""

import asyncio
from datetime import date

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.module import StrategyModule
from services.strategy.momentum_rsi import MomentumRsi, MomentumRsiParams
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, oms_pb2, ops_pb2, strategy_pb2, trading_pb2
from shared.errors import ConfigError, InvalidInput
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.helpers import eventually as until

DAY = date(2026, 1, 20)
SBIN, TCS = 3045, 11536
BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
STOPPED = "daily loss limit ₹500.00 reached (-₹510.00 today): its working orders are cancelled and its positions " \
          "closed at the market"


class Desk:
    def __init__(self, limit_paise=500_00):
        self.strategy = MomentumRsi("mom", MomentumRsiParams())
        self.strategy.max_daily_loss_paise = limit_paise
        self.clock = ManualClock(ist_ns(DAY, 10, 0))
        self.engine = StrategyEngine([self.strategy], InstrumentBook(nse_instruments(["SBIN-EQ", "TCS-EQ"])),
                                     self.clock)
        self.sequence = 0

    def tick(self, price, token=SBIN):
        self.clock.advance(1)
        self.engine.on_ticks([market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=self.clock.now_ns(),
                                              ltp_paise=price, ltq=1)])

    def update(self, coid, side, status, fill=0, price=100_00, token=SBIN, charges=0, quantity=100):
        self.sequence += 1
        self.engine.on_order_update(trading_pb2.OrderUpdate(
            client_order_id=coid, status=status, sequence=self.sequence, last_fill_quantity=fill,
            last_fill_price_paise=price, filled_quantity=fill, last_fill_charges_paise=charges,
            ts_ns=self.clock.now_ns(), request=trading_pb2.OrderRequest(
                client_order_id=coid, token=token, side=side, quantity=quantity, strategy_tag="mom",
                order_type=trading_pb2.ORDER_TYPE_LIMIT, price_paise=price, product=trading_pb2.PRODUCT_MIS)))

    def turn(self):
        return self.engine.loss_turn(self.clock.now_ns())


def test_past_its_limit_a_strategy_is_paused_and_its_position_closed_at_the_market_once():
    desk = Desk()
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(96_00)
    assert desk.turn().stopped == []  # -400.00
    info = desk.engine.info(desk.strategy)
    assert (info.day_pnl_paise, info.max_daily_loss_paise) == (-400_00, 500_00)  # ListStrategies, /strategies

    desk.tick(94_90)  # -510.00
    turn = desk.turn()

    assert turn.stopped == [("mom", STOPPED)]
    (exit_,) = turn.signals
    assert (exit_.side, exit_.quantity, exit_.order_type, exit_.product, exit_.reason) == (
        SELL, 100, trading_pb2.ORDER_TYPE_MARKET, trading_pb2.PRODUCT_MIS, f"close-out: {STOPPED}")
    info = desk.engine.info(desk.strategy)
    assert (info.paused, info.paused_by, info.pause_reason) == (True, strategy_pb2.PAUSED_BY_NEOPULSE, STOPPED)
    assert desk.turn().signals == []  # its exit is on its way

    desk.update(exit_.signal_id, SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=94_90)
    desk.tick(90_00)
    turn = desk.turn()
    assert (turn.stopped, turn.signals) == ([], [])


def test_its_working_orders_are_cancelled_first_and_a_position_with_one_working_waits_for_it():
    desk = Desk()
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.update("exit-limit", SELL, trading_pb2.ORDER_STATUS_OPEN, price=99_00)  # its own exit, resting
    desk.update("tcs-entry", BUY, trading_pb2.ORDER_STATUS_OPEN, token=TCS, quantity=1)
    desk.tick(94_00)

    turn = desk.turn()
    assert (turn.cancels, turn.signals) == (["exit-limit", "tcs-entry"], [])
    assert desk.turn().cancels == []  # asked again only after CANCEL_AGAIN_NS

    desk.update("exit-limit", SELL, trading_pb2.ORDER_STATUS_CANCELLED)
    desk.update("tcs-entry", BUY, trading_pb2.ORDER_STATUS_CANCELLED, token=TCS, quantity=1)
    (exit_,) = desk.turn().signals
    assert (exit_.token, exit_.quantity) == (SBIN, 100)

    desk.update(exit_.signal_id, SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=94_00)
    assert desk.turn().finished == ["mom"]  # flat: the close-out ends, and its times to ask again go with it
    assert (desk.engine._closing, desk.engine._cancel_after, desk.engine._close_after) == (set(), {}, {})
    assert desk.engine.durable_state("mom")["closing"] is False and desk.turn().finished == []


def test_the_days_realised_pnl_and_charges_count_and_the_next_day_starts_again():
    desk = Desk()
    desk.update("in", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100, charges=10_00)
    desk.update("out", SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=95_00, charges=10_00)  # -500, -20
    assert desk.strategy.day_pnl(desk.clock.now_ns(), lambda token: 0) == -520_00

    (_, text), = desk.turn().stopped
    assert text.startswith("daily loss limit ₹500.00 reached (-₹520.00 today)")

    desk.clock.set(ist_ns(date(2026, 1, 21), 9, 20))
    desk.engine.set_paused("mom", False)
    assert desk.strategy.day_pnl(desk.clock.now_ns(), lambda token: 0) == 0
    desk.update("in-2", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=100_00)
    desk.tick(94_00)
    assert [n for n, _ in desk.turn().stopped] == ["mom"]  # a new day, a new limit


def test_a_strategy_resumed_by_the_operator_the_same_day_is_not_stopped_again_that_day():
    desk = Desk()
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(94_00)
    (exit_,) = desk.turn().signals
    desk.update(exit_.signal_id, SELL, trading_pb2.ORDER_STATUS_TRADED, fill=100, price=94_00)
    desk.engine.set_paused("mom", False)

    desk.update("again", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.clock.advance(60)
    desk.tick(80_00)
    turn = desk.turn()

    assert (turn.stopped, turn.signals) == ([], [])  # nor is the operator's new position closed out


def test_a_square_off_of_its_position_counts_in_its_pnl_without_the_square_offs_charges():
    desk = Desk()
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.engine.on_order_update(trading_pb2.OrderUpdate(
        status=trading_pb2.ORDER_STATUS_TRADED, last_fill_quantity=100, last_fill_price_paise=96_00,
        last_fill_charges_paise=30_00, ts_ns=desk.clock.now_ns(), request=trading_pb2.OrderRequest(
            token=SBIN, side=SELL, quantity=100, strategy_tag="SQUAREOFF", product=trading_pb2.PRODUCT_MIS)))

    assert desk.strategy.day_pnl(desk.clock.now_ns(), lambda token: 90_00) == -400_00


def test_no_limit_no_check_and_the_config_takes_rupees():
    desk = Desk(limit_paise=0)
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(10_00)
    assert desk.turn().stopped == []

    config = {"strategy": {"strategies": [{"name": "mom", "kind": "MOMENTUM_RSI", "max_daily_loss": "2500.50"}]}}
    (strategy,) = build_strategies(cfg.load(StrategySettings, config), InstrumentBook(nse_instruments(["SBIN-EQ"])))
    assert strategy.max_daily_loss_paise == 2_500_50
    config["strategy"]["strategies"][0]["max_daily_loss"] = "1.005"
    with pytest.raises(ConfigError, match="max_daily_loss"):
        cfg.load(StrategySettings, config)


async def test_the_module_notifies_the_stop_and_sends_the_close_out():
    bus, clock = Bus(), ManualClock(ist_ns(DAY, 10, 0))
    settings = cfg.load(StrategySettings, {"strategy": {"close_check_ms": 10, "strategies": [
        {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"], "max_daily_loss": 500}]}})
    module = StrategyModule(bus, settings, clock)
    notes, signals, cancels = [], [], []

    async def list_instruments(request):
        return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments(["SBIN-EQ"]))

    async def list_orders(request):
        return oms_pb2.ListOrdersResponse()

    async def cancel_order(request):  # as the OMS: the cancel goes, its update follows
        cancels.append(request.order_id)
        await bus.publish(Topic.ORDER_UPDATES, update(request.order_id, SELL, trading_pb2.ORDER_STATUS_CANCELLED, 0, 3))
        return oms_pb2.CancelOrderResponse()

    def update(coid, side, status, fill, sequence):
        return trading_pb2.OrderUpdate(
            client_order_id=coid, status=status, sequence=sequence, last_fill_quantity=fill,
            last_fill_price_paise=100_00, filled_quantity=fill, ts_ns=clock.now_ns(), request=trading_pb2.OrderRequest(
                client_order_id=coid, token=SBIN, side=side, quantity=100, strategy_tag="mom",
                product=trading_pb2.PRODUCT_MIS))

    async def on_note(note):
        notes.append(note)

    async def on_signal(signal):
        signals.append(signal)

    bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
    bus.handle(rpc.LIST_ORDERS, list_orders)
    bus.handle(rpc.CANCEL_ORDER, cancel_order)
    bus.subscribe(Topic.NOTIFICATIONS, "test", on_note)
    bus.subscribe(Topic.SIGNALS, "test", on_signal)
    bus_task = asyncio.create_task(bus.run())
    await module.start()
    run_task = asyncio.create_task(module.run())
    try:
        await bus.publish(Topic.ORDER_UPDATES, update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, 100, 1))
        await bus.publish(Topic.ORDER_UPDATES, update("exit-limit", SELL, trading_pb2.ORDER_STATUS_OPEN, 0, 2))
        await bus.publish(Topic.TICKS, market_pb2.TickBatch(ticks=[market_pb2.Tick(
            token=SBIN, exchange_segment="nse_cm", ts_ns=clock.now_ns(), ltp_paise=94_90, ltq=1)]))

        await until(lambda: notes and signals)

        assert cancels == ["exit-limit"]  # its resting exit first, then the close-out at the market

        (note,) = notes
        assert (note.severity, note.title, note.text) == (
            ops_pb2.SEVERITY_CRITICAL, "Strategy stopped: daily loss limit",
            f"mom: {STOPPED}. Resume it to trade it again today.")
        assert [(s.side, s.quantity, s.order_type) for s in signals] == [(SELL, 100, trading_pb2.ORDER_TYPE_MARKET)]
        saved = module.state_store.saved  # in memory here; strategy_state with a database
        assert (saved["mom"]["paused"], saved["mom"]["closing"]) == (True, True)

        await bus.publish(Topic.ORDER_UPDATES, update(signals[0].signal_id, SELL, trading_pb2.ORDER_STATUS_TRADED,
                                                      100, 4))
        await until(lambda: not module.state_store.saved["mom"]["closing"])  # flat: a restart has nothing to close
        assert module.state_store.saved["mom"]["paused"]
    finally:
        for task in (run_task, bus_task):
            task.cancel()
        await asyncio.gather(run_task, bus_task, return_exceptions=True)


def test_the_loss_limit_is_set_at_run_time_with_the_params_in_rupees_and_a_bad_one_changes_nothing():
    desk = Desk(limit_paise=0)
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.tick(94_00)
    assert desk.turn().stopped == []

    with pytest.raises(InvalidInput, match=r"params.max_daily_loss: .*decimal places.*\(rupees, 0: off\)"):
        desk.engine.set_params("mom", {"max_daily_loss": "500.005", "stop_loss_pct": "1"})
    assert (desk.strategy.max_daily_loss_paise, desk.strategy.params.stop_loss_pct) == (0, 0)
    with pytest.raises(InvalidInput, match=r"known: .*, max_daily_loss"):
        desk.engine.set_params("mom", {"max_daily_loss": "500", "no_such": "1"})
    assert desk.strategy.max_daily_loss_paise == 0

    strategy, _ = desk.engine.set_params("mom", {"max_daily_loss": "500"})

    info = desk.engine.info(strategy)
    assert (info.max_daily_loss_paise, info.params["max_daily_loss"]) == (500_00, "500")  # /params lists it
    assert [name for name, _ in desk.turn().stopped] == ["mom"]


def test_after_a_restart_the_days_orders_give_the_pnl_back_and_a_strategy_still_past_its_limit_is_stopped_again():
    desk = Desk()
    at = desk.clock.now_ns()
    desk.engine.load_orders([trading_pb2.OrderUpdate(
        client_order_id=coid, sequence=n, status=trading_pb2.ORDER_STATUS_TRADED, filled_quantity=100,
        average_price_paise=price, ts_ns=at, request=trading_pb2.OrderRequest(
            token=SBIN, side=side, quantity=100, strategy_tag="mom", product=trading_pb2.PRODUCT_MIS))
        for n, (coid, side, price) in enumerate((("in", BUY, 100_00), ("out", SELL, 94_80)), start=1)])

    assert desk.strategy.day_pnl(at, lambda token: 0) == -520_00
    assert [name for name, _ in desk.turn().stopped] == ["mom"]


def test_the_stop_of_a_strategy_the_operator_had_paused_says_the_loss_limit_and_closes_it_out():
    desk = Desk()
    desk.update("entry", BUY, trading_pb2.ORDER_STATUS_TRADED, fill=100)
    desk.engine.set_paused("mom", True, "lunch")
    desk.tick(94_90)

    turn = desk.turn()

    info = desk.engine.info(desk.strategy)
    assert (info.paused_by, info.pause_reason, len(turn.signals)) == (strategy_pb2.PAUSED_BY_NEOPULSE, STOPPED, 1)
