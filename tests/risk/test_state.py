"""Trading state: REDUCING/HALTED admission, daily loss moving the state, kill switch and its release."""

from __future__ import annotations

from datetime import timedelta

from services.risk.engine import ACTIVE, HALTED, REDUCING, RiskEngine
from shared.clock import ist_ns
from shared.contracts import market_pb2, ops_pb2, trading_pb2
from tests.risk.factories import DAY, RELIANCE, fill, instruments, limits, order, square_off

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
# Reducing at a ₹1,000 loss, halted at ₹2,000.
SMALL_LOSS = dict(daily_loss_reducing_paise=1_000_00, daily_loss_halt_paise=2_000_00)


def long_100(clock, **overrides) -> RiskEngine:
    """An engine holding 100 RELIANCE bought at ₹1,290.00, marked there."""
    engine = RiskEngine(limits(**(SMALL_LOSS | overrides)), clock, instruments())
    engine.on_order_update(fill(BUY, 100, 1290_00))
    engine.last_prices[RELIANCE] = 1290_00
    return engine


def mark(engine: RiskEngine, price_paise: int) -> None:
    engine.on_ticks([market_pb2.Tick(token=RELIANCE, ltp_paise=price_paise)])
    engine.evaluate_loss()


def test_a_new_engine_is_active(engine):
    assert engine.state == ACTIVE


def test_a_mark_to_market_loss_past_the_reducing_threshold_moves_to_reducing(clock):
    engine = long_100(clock)

    mark(engine, 1278_00)  # -₹1,200

    assert engine.state == REDUCING
    assert engine.state_reason == "daily loss ₹1,200.00 reached daily_loss_reducing ₹1,000.00"


def test_a_loss_past_the_halt_threshold_halts_trading(clock):
    engine = long_100(clock)

    mark(engine, 1265_00)  # -₹2,500

    assert engine.state == HALTED


def test_a_loss_below_the_thresholds_keeps_trading_active(clock):
    engine = long_100(clock)

    mark(engine, 1285_00)  # -₹500

    assert engine.state == ACTIVE


def test_a_realised_loss_from_a_fill_moves_the_state_without_a_tick(clock):
    engine = long_100(clock)

    engine.on_order_update(fill(SELL, 100, 1278_00))

    assert engine.state == REDUCING


def test_charges_count_toward_the_daily_loss(clock):
    engine = long_100(clock)
    update = fill(SELL, 100, 1290_00)
    update.last_fill_charges_paise = 1_100_00

    engine.on_order_update(update)

    assert engine.state == REDUCING


def test_crossing_a_threshold_surfaces_one_risk_breach_state_change(clock):
    engine = long_100(clock)
    engine.pop_state_changes()

    mark(engine, 1278_00)
    mark(engine, 1277_00)

    changes = engine.pop_state_changes()
    assert [(c.previous, c.state, c.kind) for c in changes] == [
        (ACTIVE, REDUCING, ops_pb2.NOTIFICATION_KIND_RISK_BREACH)]


def test_a_recovering_price_does_not_lift_a_loss_state_by_itself(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)

    mark(engine, 1300_00)

    assert engine.state == REDUCING


def test_reducing_denies_an_order_that_grows_the_position(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)

    decision = engine.decide(order(quantity=10, price_paise=1278_00))

    assert decision.reason_code == "REDUCING_ONLY" and "net position in token 2885 is 100" in decision.reason


def test_reducing_accepts_an_order_that_shrinks_the_position(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)

    assert engine.decide(order(side=SELL, quantity=100, price_paise=1278_00)).accepted


def test_reducing_denies_a_sell_that_would_flip_the_position_short(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)

    assert engine.decide(order(side=SELL, quantity=150, price_paise=1278_00)).reason_code == "REDUCING_ONLY"


def test_reducing_counts_open_closing_orders_against_the_position(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)
    engine.decide(order(side=SELL, quantity=80, price_paise=1278_00))

    assert engine.decide(order(side=SELL, quantity=30, price_paise=1278_00)).reason_code == "REDUCING_ONLY"


def test_halted_denies_even_a_reducing_order_from_a_strategy(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "test")

    decision = engine.decide(order(side=SELL, quantity=100))

    assert decision.reason_code == "TRADING_HALTED" and "kill switch engaged: test" in decision.reason


def test_a_daily_loss_halt_squares_off_the_mis_positions_at_once(clock):
    """The hard loss limit: a losing intraday position must not run on until square-off time with no exit allowed."""
    engine = long_100(clock)  # 11:00 IST, hours before square-off time

    mark(engine, 1265_00)  # -₹2,500: HALTED
    due = engine.square_off_due()

    assert [(o.strategy_tag, o.side, o.quantity, o.order_type) for o in due] == [
        ("SQUAREOFF", SELL, 100, trading_pb2.ORDER_TYPE_MARKET)]
    assert engine.decide(due[0]).accepted


def test_a_daily_loss_halt_still_takes_an_exit_of_a_delivery_position(clock):
    """A strategy's stop on an NRML/CNC position (not squared off by risk) must go, or the loss runs unguarded."""
    engine = RiskEngine(limits(**SMALL_LOSS), clock, instruments())
    engine.on_order_update(fill(BUY, 100, 1290_00, product=trading_pb2.PRODUCT_CNC))
    mark(engine, 1265_00)  # HALTED

    stop = order(side=SELL, quantity=100, product=trading_pb2.PRODUCT_CNC, order_type=trading_pb2.ORDER_TYPE_MARKET)
    more = order(side=BUY, quantity=10, product=trading_pb2.PRODUCT_CNC)

    assert engine.state == HALTED and engine.square_off_due() == []
    assert engine.decide(stop).accepted
    assert engine.decide(more).reason_code == "TRADING_HALTED"


def test_a_daily_loss_halt_still_lets_a_delivery_positions_stop_be_moved(clock):
    """A trailing stop on an NRML/CNC position keeps trailing after the hard loss limit; the kill switch freezes it."""
    engine = RiskEngine(limits(**SMALL_LOSS), clock, instruments())
    engine.on_order_update(fill(BUY, 100, 1290_00, product=trading_pb2.PRODUCT_CNC))
    stop = order(side=SELL, quantity=100, product=trading_pb2.PRODUCT_CNC,
                 order_type=trading_pb2.ORDER_TYPE_STOP_MARKET, price_paise=0, trigger_price_paise=1250_00)
    assert engine.decide(stop).accepted
    mark(engine, 1265_00)  # HALTED by the loss
    moved = trading_pb2.OrderRequest()
    moved.CopyFrom(stop)
    moved.trigger_price_paise = 1255_00

    assert engine.decide_modify(moved, 0).accepted
    engine.set_kill_switch(True, "stop everything")
    assert engine.decide_modify(moved, 0).reason_code == "TRADING_HALTED"


def test_a_stop_beside_its_target_can_be_moved_while_the_loss_holds_trading(clock):
    """Stop and target of one position, each accepted alone, together twice the position: moving the stop was
    refused (pending 100 + 100 > 100), so a losing position's stop could not be tightened when it mattered."""
    engine = RiskEngine(limits(**SMALL_LOSS), clock, instruments())
    engine.on_order_update(fill(BUY, 100, 1290_00, product=trading_pb2.PRODUCT_CNC))
    stop = order(client_order_id="stop", side=SELL, quantity=100, product=trading_pb2.PRODUCT_CNC,
                 order_type=trading_pb2.ORDER_TYPE_STOP_MARKET, price_paise=0, trigger_price_paise=1250_00)
    target = order(client_order_id="target", side=SELL, quantity=100, product=trading_pb2.PRODUCT_CNC,
                   price_paise=1330_00)
    assert engine.decide(stop).accepted and engine.decide(target).accepted
    mark(engine, 1265_00)  # HALTED by the loss
    moved, bigger = trading_pb2.OrderRequest(), trading_pb2.OrderRequest()
    moved.CopyFrom(stop)
    moved.trigger_price_paise = 1255_00
    bigger.CopyFrom(moved)
    bigger.quantity = 150

    assert engine.decide_modify(moved, 0).accepted
    assert engine.decide_modify(bigger, 0).reason_code == "TRADING_HALTED"


def test_the_kill_switch_squares_off_nothing_by_itself(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "halt, I will close what I want")

    assert engine.square_off_due() == [] and engine.square_off_cancels() == []


def test_halted_accepts_a_squareoff_order_that_reduces_the_position(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "test")

    assert engine.decide(square_off(side=SELL, quantity=100)).accepted


def test_halted_denies_a_squareoff_tagged_order_that_opens_a_position(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "test")

    decision = engine.decide(square_off(side=BUY, quantity=10))

    assert not decision.accepted and decision.reason_code == "REDUCE_ONLY"  # in every state, HALTED included


def test_engaging_the_kill_switch_halts_and_surfaces_a_kill_switch_change(engine):
    engine.set_kill_switch(True, "manual stop")

    assert engine.state == HALTED
    assert [(c.state, c.kind, c.reason) for c in engine.pop_state_changes()] == [
        (HALTED, ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, "kill switch engaged: manual stop")]


def test_releasing_the_kill_switch_without_losses_returns_to_active(engine):
    engine.set_kill_switch(True, "manual stop")

    engine.set_kill_switch(False, "all clear")

    assert (engine.state, engine.state_reason) == (ACTIVE, "kill switch released: all clear")


def test_releasing_the_kill_switch_while_over_the_reducing_limit_leaves_reducing(clock):
    engine = long_100(clock)
    mark(engine, 1278_00)  # -₹1,200: over daily_loss_reducing only
    engine.set_kill_switch(True, "manual stop")

    engine.set_kill_switch(False, "resume")

    assert engine.state == REDUCING and "over daily_loss_reducing ₹1,000.00" in engine.state_reason


def test_releasing_the_kill_switch_past_the_halt_limit_keeps_the_loss_halt_and_its_square_off(clock):
    """/kill then /unkill to take stock relaxed the hard limit to REDUCING for the rest of the day: the MIS square-off
    stopped and no later loss, however large, halted again. Raising daily_loss_halt is the way to trade on."""
    engine = long_100(clock)
    mark(engine, 1265_00)  # -₹2,500: halted by the loss limit
    engine.set_kill_switch(True, "take stock")

    engine.set_kill_switch(False, "resume")

    assert engine.state == HALTED and "stays HALTED" in engine.state_reason
    assert [o.strategy_tag for o in engine.square_off_due()] == ["SQUAREOFF"]


def test_a_bounce_after_the_halt_limit_does_not_let_a_release_relax_it(clock):
    """The day's loss reached the hard limit, then prices bounced: /kill and /unkill gave ACTIVE with full limits."""
    engine = long_100(clock)
    mark(engine, 1265_00)  # -₹2,500: HALTED
    mark(engine, 1289_00)  # -₹100: the state holds
    engine.set_kill_switch(True, "take stock")

    engine.set_kill_switch(False, "resume")

    assert engine.state == HALTED and "reached ₹2,500.00" in engine.state_reason


def test_after_a_bounce_the_loss_state_still_cancels_an_order_that_would_now_grow_a_position(clock):
    """A stop and a target of one long, kept as exits when the limit tripped; the target filled, the loss recovered:
    the stop on a flat book would open a short while trading is HALTED."""
    engine = RiskEngine(limits(**SMALL_LOSS), clock, instruments())
    engine.on_order_update(fill(BUY, 100, 1290_00, product=trading_pb2.PRODUCT_CNC))
    engine.last_prices[RELIANCE] = 1290_00
    stop = order(client_order_id="stop", side=SELL, quantity=100, product=trading_pb2.PRODUCT_CNC,
                 order_type=trading_pb2.ORDER_TYPE_STOP_MARKET, price_paise=0, trigger_price_paise=1250_00)
    assert engine.decide(stop).accepted
    mark(engine, 1265_00)  # HALTED
    engine.on_order_update(fill(SELL, 100, 1300_00, product=trading_pb2.PRODUCT_CNC))  # out at a profit elsewhere
    mark(engine, 1300_00)

    assert engine.state == HALTED and engine.loss_cancels() == ["stop"]


def test_a_release_after_raising_the_halt_limit_trades_on_reducing(clock):
    engine = long_100(clock)
    mark(engine, 1265_00)
    engine.set_limits(limits(daily_loss_reducing_paise=1_000_00, daily_loss_halt_paise=5_000_00))

    engine.set_kill_switch(False, "limit raised")

    assert engine.state == REDUCING


def test_the_kill_switch_survives_a_new_trading_day(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "manual stop")

    clock.set(ist_ns(DAY + timedelta(days=1), 9, 30))
    engine.evaluate_loss()

    assert engine.state == HALTED


def test_a_new_trading_day_resets_a_loss_driven_state(clock):
    engine = long_100(clock)
    engine.on_order_update(fill(SELL, 100, 1265_00))  # realised -₹2,500: halted

    clock.set(ist_ns(DAY + timedelta(days=1), 9, 30))
    engine.evaluate_loss()

    assert engine.state == ACTIVE and engine.daily_pnl_paise() == 0
    assert engine.snapshot().realised_pnl_paise == 0  # GetRiskState shows today's P&L, as the limits count it


def test_a_position_held_overnight_counts_only_todays_move_against_the_loss_limits(clock):
    """Yesterday's close is today's start: a carried position that gained yesterday and gives some back today
    is a loss today (not a gain since entry), and one that lost yesterday does not halt today's open."""
    engine = long_100(clock, daily_loss_reducing_paise=10_000_00, daily_loss_halt_paise=20_000_00)
    mark(engine, 1590_00)  # +₹30,000 yesterday
    clock.set(ist_ns(DAY + timedelta(days=1), 9, 15))
    mark(engine, 1590_00)  # the day rolls at yesterday's mark

    mark(engine, 1440_00)  # -₹15,000 today (still +₹15,000 since entry)

    assert (engine.daily_pnl_paise(), engine.state) == (-15_000_00, REDUCING)

    losing = long_100(clock, daily_loss_reducing_paise=10_000_00, daily_loss_halt_paise=20_000_00)
    clock.set(ist_ns(DAY + timedelta(days=1), 15, 0))
    mark(losing, 1040_00)  # -₹25,000 on the day it was bought
    clock.set(ist_ns(DAY + timedelta(days=2), 9, 15))

    mark(losing, 1040_00)  # unchanged overnight

    assert (losing.daily_pnl_paise(), losing.state) == (0, ACTIVE)


def test_lowering_the_loss_limit_below_the_current_loss_moves_the_state(clock):
    engine = long_100(clock, daily_loss_reducing_paise=10_000_00, daily_loss_halt_paise=20_000_00)
    mark(engine, 1278_00)  # -₹1,200: fine under ₹10,000

    engine.set_limits(limits(**SMALL_LOSS))

    assert engine.state == REDUCING


def test_an_already_seen_order_update_sequence_is_ignored(clock):
    engine = RiskEngine(limits(), clock, instruments())
    update = fill(BUY, 10, 1290_00)
    update.sequence = 7

    engine.on_order_update(update)
    engine.on_order_update(update)

    assert engine.positions.net_quantity(RELIANCE) == 10


def restarted(engine: RiskEngine, clock, **overrides) -> RiskEngine:
    """A new engine (a restarted risk module) holding the same position, given what the first one saved."""
    again = long_100(clock, **overrides)
    again.restore_durable_state(engine.durable_state())
    return again


def test_an_engaged_kill_switch_is_engaged_again_after_a_restart(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "runaway strategy")

    again = restarted(engine, clock)

    assert (again.state, again.kill_switch_engaged) == (HALTED, True)
    assert again.state_reason == "kill switch engaged: runaway strategy"
    assert restarted(again, clock).state_reason == again.state_reason  # a second restart adds nothing to it


def test_a_released_kill_switch_stays_released_after_a_restart(clock):
    engine = long_100(clock)
    engine.set_kill_switch(True, "lunch")
    engine.set_kill_switch(False, "back")

    assert restarted(engine, clock).state == ACTIVE


def test_a_loss_halt_holds_after_a_restart_though_the_price_has_recovered(clock):
    """Without a restart a recovering price does not lift it; a restart must not either."""
    engine = long_100(clock)
    mark(engine, 1265_00)  # -₹2,500: halted
    mark(engine, 1289_00)  # -₹100 now

    again = restarted(engine, clock)
    again.last_prices[RELIANCE] = 1289_00
    again.evaluate_loss()

    assert again.state == HALTED and again.state_reason.endswith("(before a restart)")
    assert again.decide(order(side=BUY, quantity=10)).reason_code == "TRADING_HALTED"


def test_yesterdays_loss_state_is_not_restored_on_a_new_day(clock):
    engine = long_100(clock)
    mark(engine, 1265_00)

    clock.set(ist_ns(DAY + timedelta(days=1), 9, 30))
    again = restarted(engine, clock)

    assert again.state == ACTIVE


def test_a_loss_state_cancels_the_resting_entries_and_keeps_the_exits(clock):
    """A resting entry left working under REDUCING or HALTED could still fill and grow the loss the limit stopped."""
    engine = long_100(clock)
    for cid, side, quantity, price in (("entry", BUY, 10, 1240_00), ("exit", SELL, 100, 1300_00),
                                       ("flip", SELL, 150, 1310_00)):
        assert engine.decide(order(client_order_id=cid, side=side, quantity=quantity, price_paise=price)).accepted
    assert engine.loss_cancels() == []  # ACTIVE

    mark(engine, 1278_00)  # -₹1,200: REDUCING
    assert engine.loss_cancels() == ["entry", "flip"]  # the flip would open a short
    assert engine.loss_cancels() == []  # offered again only after square_off_retry_s
    mark(engine, 1265_00)  # HALTED
    clock.advance(engine._square_off_retry_ns / 1e9)

    assert engine.loss_cancels() == ["entry", "flip"]


def test_the_kill_switch_alone_cancels_nothing_by_itself(clock):
    engine = long_100(clock)
    assert engine.decide(order(client_order_id="entry", side=BUY, quantity=10, price_paise=1240_00)).accepted
    engine.set_kill_switch(True, "halt, keep my orders")

    assert engine.loss_cancels() == []
