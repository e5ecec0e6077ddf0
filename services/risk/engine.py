"""The risk engine: trading state (ACTIVE/REDUCING/HALTED), one method per pre-trade check, daily loss, square-off.

Pure: no bus, no I/O. RiskModule feeds it orders, fills and prices, and publishes what it decides.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any

from pydantic import ValidationError

from services.oms.ledger import TERMINAL
from services.risk.config import Limits, square_off_problem
from services.risk.orders import (
    PRICED,
    SQUAREOFF_TAG,
    held_instrument,
    order_from_signal,
    order_prices,
    square_off_chunk,
    square_off_orders,
    stop_side_denial,
    stop_waits,
)
from services.risk.rate import TokenBucket
from services.risk.square_off import LeftOpen
from shared.clock import (
    SESSIONS_IST,
    Clock,
    Session,
    day_of,
    fmt_session,
    is_holiday,
    ist_datetime,
    ist_day_number,
    ist_minute_of_day,
    segment_open,
    session_in_force,
    session_of,
    shortest_session,
    special_session,
)
from shared.contracts import market_pb2, ops_pb2, risk_pb2, trading_pb2
from shared.errors import InvalidInput
from shared.ids import MAX_REASON_CHARS, MAX_TEXT_CHARS
from shared.instruments import InstrumentBook, expired, expired_reason, not_tradable
from shared.money import fmt_inr
from shared.order_terms import DAY_ONLY_SEGMENTS, unknown_choice
from shared.positions import PositionBook, PositionState
from shared.price_factor import ONE, factor_of, value_paise

ACTIVE = risk_pb2.TRADING_STATE_ACTIVE
REDUCING = risk_pb2.TRADING_STATE_REDUCING
HALTED = risk_pb2.TRADING_STATE_HALTED
BUY = trading_pb2.SIDE_BUY
SQUARE_OFF_AFTER_CANCEL_NS = 1_000_000_000  # clock time between cancelling resting MIS orders and squaring off
MIS = trading_pb2.PRODUCT_MIS

Denial = tuple[str, str]  # (reason_code, human reason)
Check = Callable[[trading_pb2.OrderRequest, market_pb2.Instrument, int], Denial | None]


def state_name(state: int) -> str:
    return risk_pb2.TradingState.Name(state).removeprefix("TRADING_STATE_")


RESTORED = " (before a restart)"  # a day's state as a restarted risk module found it saved


@dataclass(frozen=True)
class StateChange:
    """A move of the trading state (or a kill-switch action) the module announces as a Notification."""

    previous: risk_pb2.TradingState
    state: risk_pb2.TradingState
    reason: str
    kind: ops_pb2.NotificationKind = ops_pb2.NOTIFICATION_KIND_RISK_BREACH


@dataclass
class RestoredLimits:
    """What restore_limits put back of the limits changed at run time, and what it left at the config's, and why."""

    applied: dict[str, Any]
    dropped: dict[str, str]


@dataclass
class OpenOrder:
    token: int
    side: int
    quantity: int
    filled: int = 0
    product: int = MIS
    square_off: bool = False  # a SQUAREOFF order (the others are cancelled at square-off time)
    segment: str = ""
    price: int = 0  # its limit or trigger price (0 for a market order): values it when its token has no price
    trigger: int = 0  # a stop's trigger: a change that moves it is judged against the market again

    @property
    def remaining(self) -> int:
        return max(0, self.quantity - self.filled)


class RiskEngine:
    """Decides every order; tracks open orders, positions and the daily loss that moves the trading state."""

    def __init__(self, limits: Limits, clock: Clock, instruments: InstrumentBook,
                 positions: PositionBook | None = None, square_off_retry_s: float = 30.0,
                 sessions: Mapping[str, Session] | None = None,
                 square_off_times: Mapping[str, tuple[int, int]] | None = None) -> None:
        now = clock.now_ns()
        # Market hours by exchange segment (MCX trades into the night), and the segments whose MIS positions
        # are squared off at their own time rather than limits.square_off_time_ist.
        self.sessions: dict[str, Session] = {**SESSIONS_IST, **(sessions or {})}
        self.square_off_times: dict[str, tuple[int, int]] = dict(square_off_times or {})
        # This engine's run, in square-off order ids: a restarted risk module must not reuse an id.
        self.run_tag = _base36(now // 1_000_000_000)
        self.limits = limits
        # The limits the config gives (the engine is built with them), and those changed at run time: field ->
        # (the value set, the config's value then). See durable_state.
        self._config_limits = limits
        self._limit_overrides: dict[str, tuple[Any, Any]] = {}
        self.clock = clock
        self.instruments = instruments
        self.positions = positions if positions is not None else PositionBook()
        self.state: risk_pb2.TradingState = ACTIVE
        self.state_reason = ""
        self.kill_switch_engaged = False
        self._kill_reason = ""
        self.last_prices: dict[int, int] = {}
        self._last_price_ns: dict[int, int] = {}  # when each last price traded: which are today's (_todays_last)
        self.open_orders: dict[str, OpenOrder] = {}
        # client_order_ids accepted today and the trading day before (a replay across midnight is a duplicate
        # too: the OMS would ignore it, and it would stay counted open here); older ones are let go.
        self._accepted: set[str] = set()
        self._accepted_before: set[str] = set()
        self._changes: list[StateChange] = []
        self._bucket = TokenBucket(limits.max_orders_per_second, now)
        self._loss_level: risk_pb2.TradingState = ACTIVE
        # The day's worst loss (paise) the engine measured: what a release of the kill switch and the loss's
        # cancels judge by, not the loss of the moment (a bounce after the hard limit does not undo it).
        self._worst_loss = 0
        self._day: date = day_of(now)
        self._day_number = ist_day_number(now)
        # Square-off attempts: the next one is due at this clock time; the attempt number keeps ids unique.
        self._square_off_retry_ns = int(square_off_retry_s * 1e9)
        self._next_square_off_ns = 0
        self._square_off_attempt = 0
        self._square_off_day: date | None = None
        self.left_open = LeftOpen(self.sessions)  # MIS positions the square-off could not close before the close
        self._last_update_sequence = 0
        self._cancel_asked: dict[str, int] = {}  # order -> when square_off_cancels may offer it again
        # After a restart: the sequence each loaded order and the loaded positions are as of.
        self._loaded_order_sequence: dict[str, int] = {}
        self._positions_as_of = 0
        # The square-off rule first: a SQUAREOFF order that does not reduce is REDUCE_ONLY in every state, the answer
        # the OMS's SquareOff waits out (risk has not seen the cancels of the position's orders yet), never HALTED's.
        self._checks: tuple[Check, ...] = (
            self.check_square_off_reduces, self.check_validity, self.check_trading_state, self.check_contract_expiry,
            self.check_quantity, self.check_price, self.check_stop_side, self.check_price_band, self.check_order_value,
            self.check_position, self.check_position_value, self.check_gross_exposure, self.check_open_orders,
            self.check_market_hours, self.check_square_off_time, self.check_submit_rate)
        # A change of a working order: the checks of a new order but the count of open orders (it adds none), and its
        # stop's side judged in _first_change_denial (it knows the trigger the order had).
        self._change_checks = tuple(c for c in self._checks if c not in (self.check_open_orders, self.check_stop_side))

    # -- decisions ------------------------------------------------------------
    def decide(self, order: trading_pb2.OrderRequest) -> trading_pb2.RiskDecision:
        """Accept or reject one order; an accepted order counts as open until a terminal update."""
        decision = self._decision(order, self._first_denial)
        if not decision.accepted:
            if order.strategy_tag == SQUAREOFF_TAG:
                self.left_open.ended((order.token, product_of(order.product)), f"refused by risk: {decision.reason}")
            return decision
        self.open_orders[order.client_order_id] = _open_order(decision.order)  # its instrument's segment
        self._accepted.add(order.client_order_id)
        return decision

    def decide_modify(self, order: trading_pb2.OrderRequest, filled: int) -> trading_pb2.RiskDecision:
        """Accept or reject a change of a working order: `order` is the order with its new terms, `filled` units of it
        are done. The whole order's quantity and value are checked as a new order's would be; the rest still to fill
        is what the position, exposure, state and time checks count, in place of what the order works now. Accepted,
        it counts at the larger of its old and new quantity and price until the OMS's next update of it says which
        terms the broker holds."""
        decision = self._decision(order, functools.partial(self._first_change_denial, filled=filled))
        if not decision.accepted:
            return decision
        tracked = self.open_orders[order.client_order_id]
        tracked.quantity = max(tracked.quantity, order.quantity)
        tracked.price = max(tracked.price, _own_price(order))
        return decision

    def _decision(self, order: trading_pb2.OrderRequest,
                  first_denial: Callable[[trading_pb2.OrderRequest, int], Denial | None]) -> trading_pb2.RiskDecision:
        """The decision on `order` at the clock's now (the day rolled first): the first denial, or accepted, stamped
        with the instrument's symbol, segment and price factor and counted against the submit rate."""
        now = self.clock.now_ns()
        self._roll_day(now)
        decision = trading_pb2.RiskDecision(order=order, ts_ns=now, strategy=order.strategy_tag,
                                            signal_id=order.signal_id, decided_wall_ns=time.time_ns())
        denial = first_denial(order, now)
        if denial is not None:
            decision.reason_code, decision.reason = denial
            return decision
        decision.accepted = True
        _stamp_instrument(decision.order, self._instrument(order))
        self._bucket.take(now)
        return decision

    def _first_change_denial(self, order: trading_pb2.OrderRequest, now: int, *, filled: int) -> Denial | None:
        cid = order.client_order_id
        tracked = self.open_orders.get(cid)
        if tracked is None:
            return "NOT_WORKING", (f"order {cid or '(no client_order_id)'} is not a working order here; only an "
                                   "order still open at the broker can be changed")
        if (order.token, order.side, product_of(order.product)) != (tracked.token, tracked.side, tracked.product):
            return "INVALID_ORDER", (f"order {cid}: a change keeps the instrument, side and product; cancel it and "
                                     "place a new order instead")
        if not filled < order.quantity:
            return "INVALID_QUANTITY", (f"quantity {order.quantity} must stay above the {filled} units already "
                                        "filled; cancel the rest instead")
        if self.state == HALTED and self.kill_switch_engaged:  # by the loss: a change that keeps it an exit passes
            return "TRADING_HALTED", (f"trading is HALTED ({self.state_reason}); a working order may be cancelled, "
                                      "not changed")
        inst = self._instrument(order)  # a working exit in a token the book no longer lists: its position's stand-in
        if inst is None:
            return "UNKNOWN_INSTRUMENT", f"token {order.token} is not in the instrument master"
        for whole in (self.check_quantity, self.check_order_value):
            denial = whole(order, inst, now)
            if denial is not None:
                return denial
        # A trigger left where it was is not judged by the market again: the stop may have triggered, its limit chased.
        moved = order.trigger_price_paise != tracked.trigger
        denial = stop_side_denial(order, self._todays_last(order.token) if moved else 0)
        if denial is not None:
            return denial
        rest = trading_pb2.OrderRequest()
        rest.CopyFrom(order)
        # The rest still to fill as risk's own books count it: fills the OMS has and risk has not taken yet (their
        # updates on their way) are in neither its position nor, counted as `filled`, in the rest.
        rest.quantity = order.quantity - min(filled, tracked.filled)
        del self.open_orders[cid]  # counted as the change leaves it, not twice
        try:
            for check in self._change_checks:
                denial = check(rest, inst, now)
                exit_kept = check == self.check_trading_state and self._stays_an_exit(rest, tracked)
                if denial is not None and not exit_kept:
                    return denial
        finally:
            self.open_orders[cid] = tracked
        return None

    def _stays_an_exit(self, rest: trading_pb2.OrderRequest, tracked: OpenOrder) -> bool:
        """Under REDUCING or a daily-loss HALT: a change that does not grow the order, of one that closes on its own
        (no more than the position): a stop moved beside its target, the two together larger than the position, as
        each was accepted alone. It cannot make the worst case worse than what was already accepted."""
        net = self._net(rest.token, rest.product)
        closes = net != 0 and (net > 0) != (rest.side == BUY)
        return closes and rest.quantity <= min(tracked.remaining, abs(net))

    def decide_signal(self, signal: trading_pb2.Signal) -> trading_pb2.RiskDecision:
        if not signal.signal_id:
            return trading_pb2.RiskDecision(
                accepted=False, reason_code="INVALID_SIGNAL", ts_ns=self.clock.now_ns(), strategy=signal.strategy,
                reason="signal_id is empty; a signal needs an id so a replay is not a new order")
        return self.decide(order_from_signal(signal))

    def _first_denial(self, order: trading_pb2.OrderRequest, now: int) -> Denial | None:
        denial = self.check_identity(order)
        if denial is not None:
            return denial
        inst = self.instruments.get(order.token)
        if inst is None:
            inst = self._held_instrument(order)
            if inst is None:
                return "UNKNOWN_INSTRUMENT", f"token {order.token} is not in the instrument master"
            if not (order.strategy_tag == SQUAREOFF_TAG or self.reduces_position(order)):
                return "UNKNOWN_INSTRUMENT", (f"token {order.token} is not in the instrument master: only an order "
                                              "that reduces the position held in it ("
                                              f"{self._net(order.token, order.product)} {_product_name(order)}) passes")
        if inst.is_index:
            return "NOT_TRADABLE", not_tradable(inst)
        for check in self._checks:
            denial = check(order, inst, now)
            if denial is not None:
                return denial
        return None

    def _instrument(self, order: trading_pb2.OrderRequest) -> market_pb2.Instrument | None:
        """The order's instrument: the book's, else the stand-in of a position held in it (_held_instrument)."""
        inst = self.instruments.get(order.token)
        return inst if inst is not None else self._held_instrument(order)

    def _held_instrument(self, order: trading_pb2.OrderRequest) -> market_pb2.Instrument | None:
        """For a token the book does not list (a symbol dropped from the config, a carried position in one never
        configured) but a position of the order's product is held in: an instrument built from that position
        (held_instrument), to judge an order closing it, which must not be refused for want of the master's row. A
        SQUAREOFF order that would not reduce it is then REDUCE_ONLY, the answer the OMS's SquareOff waits out."""
        pos = self.positions.positions.get((order.token, product_of(order.product)))
        return held_instrument(pos) if pos is not None and pos.net_quantity else None

    # -- checks: each returns (reason_code, reason) or None -------------------
    def check_identity(self, order: trading_pb2.OrderRequest) -> Denial | None:
        if not order.client_order_id:
            return "INVALID_ORDER", "client_order_id is empty; every order needs an idempotency key"
        for field in ("client_order_id", "strategy_tag", "symbol", "signal_id"):
            if len(getattr(order, field)) > MAX_TEXT_CHARS:
                return "INVALID_ORDER", f"{field} is longer than {MAX_TEXT_CHARS} characters"
        if len(order.reason) > MAX_REASON_CHARS:
            return "INVALID_ORDER", f"reason is longer than {MAX_REASON_CHARS} characters"
        if order.client_order_id in self._accepted or order.client_order_id in self._accepted_before:
            return "DUPLICATE_ORDER", (f"client_order_id {order.client_order_id} was already accepted; "
                                       "a replayed order is not placed twice")
        if order.side not in (trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL):
            return "INVALID_ORDER", "side is unspecified; use BUY or SELL"
        if order.order_type == trading_pb2.ORDER_TYPE_UNSPECIFIED:
            return "INVALID_ORDER", "order_type is unspecified; use MARKET, LIMIT, STOP_LIMIT or STOP_MARKET"
        unknown = unknown_choice(order)
        if unknown is not None:
            return "INVALID_ORDER", f"{unknown[0]}: {unknown[1]}"
        return None

    def check_contract_expiry(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                              now: int) -> Denial | None:
        """After its expiry day's close a contract takes no new position: the exchange refuses the order, and a
        strategy's signal into it must say why. An order reducing a position in it is left to the exchange."""
        if not inst.expiry_ns or not expired(inst, now, self.sessions) or self.reduces_position(order):
            return None
        return "CONTRACT_EXPIRED", expired_reason(inst, self.sessions)

    def check_validity(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument, now: int) -> Denial | None:
        segment = (inst.exchange_segment or order.exchange_segment).lower()
        if order.validity != trading_pb2.VALIDITY_IOC or segment not in DAY_ONLY_SEGMENTS:
            return None
        return "INVALID_ORDER", (f"validity IOC: {segment} takes DAY orders only (Kotak refuses IOC there); send "
                                 "VALIDITY_DAY")

    def check_trading_state(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                            now: int) -> Denial | None:
        if self.state == HALTED and self.kill_switch_engaged and not self._is_square_off(order):
            return "TRADING_HALTED", (f"trading is HALTED ({self.state_reason}); only {SQUAREOFF_TAG} orders "
                                      "that reduce a position pass")
        if self.state == HALTED and not self.reduces_position(order):
            # The daily loss: its MIS positions are being squared off (square_off_due); an exit of any other (a
            # strategy's stop on an NRML position) must still go, or the loss would run on unguarded.
            return "TRADING_HALTED", (f"trading is HALTED ({self.state_reason}); only orders that shrink a position "
                                      f"pass, net position in token {order.token} is "
                                      f"{self._net(order.token, order.product)} ({_product_name(order)})")
        if self.state == REDUCING and not self.reduces_position(order):
            return "REDUCING_ONLY", (f"trading is REDUCING ({self.state_reason}); only orders that shrink "
                                     f"a position pass, net position in token {order.token} is "
                                     f"{self._net(order.token, order.product)} ({_product_name(order)})")
        return None

    def check_square_off_reduces(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                                 now: int) -> Denial | None:
        """A SQUAREOFF order closes at market and only ever closes: with its side's working orders it may not flip or
        open a position. A resting SQUAREOFF limit would count as closing its position without ever filling: square-off
        time would wait for it instead of closing, and the kill switch would leave it working."""
        if order.strategy_tag != SQUAREOFF_TAG:
            return None
        if order.order_type != trading_pb2.ORDER_TYPE_MARKET:
            return "INVALID_ORDER", (f"{SQUAREOFF_TAG} orders close at market; a {_type_name(order)} order may not "
                                     f"carry the tag (leave strategy_tag empty for MANUAL)")
        if self.reduces_position(order):
            return None
        return "REDUCE_ONLY", (f"{SQUAREOFF_TAG} orders are reduce-only; {order.quantity} more with working "
                               f"orders on the same side would not shrink the net position "
                               f"{self._net(order.token, order.product)} in token {order.token} "
                               f"({_product_name(order)})")

    def check_quantity(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument, now: int) -> Denial | None:
        qty, lot = order.quantity, inst.lot_size or 1
        if qty <= 0:
            return "INVALID_QUANTITY", f"quantity {qty} must be positive"
        if qty % lot:
            return "LOT_SIZE", f"quantity {qty} is not a multiple of lot_size {lot} of {inst.symbol}"
        if qty > self.limits.max_order_quantity and not self._is_square_off(order):  # closing must not be capped
            return "MAX_ORDER_QUANTITY", f"quantity {qty} exceeds max_order_quantity {self.limits.max_order_quantity}"
        if inst.freeze_quantity and qty > inst.freeze_quantity:
            return "FREEZE_QUANTITY", (f"quantity {qty} exceeds the exchange freeze_quantity "
                                       f"{inst.freeze_quantity} of {inst.symbol}; split the order")
        return None

    def check_price(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument, now: int) -> Denial | None:
        for field, price in order_prices(order):
            if price <= 0:
                return "INVALID_PRICE", f"{field} {price} must be positive for a {_type_name(order)} order"
            tick = inst.tick_size_paise
            if tick > 0 and price % tick:
                return "TICK_SIZE", (f"{field} {price} is not a multiple of tick_size_paise {tick} "
                                     f"of {inst.symbol}")
        return None

    def check_stop_side(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                        now: int) -> Denial | None:
        return stop_side_denial(order, self._todays_last(order.token))

    def check_price_band(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                         now: int) -> Denial | None:
        band, last = self.limits.price_band_bps, self.last_prices.get(order.token, 0)
        if not band or not last:
            return None  # no band, or no last price to measure against
        waits = stop_waits(order, last)
        for field, price in order_prices(order):
            if waits and field == "trigger_price_paise":
                continue  # a protective stop's distance is the trader's risk to take, not a fat finger
            # A waiting stop-limit's limit trades once its trigger is reached: it is measured from there.
            ref, what = (order.trigger_price_paise, "its trigger") if waits else (last, "the last price")
            if abs(price - ref) * 10_000 > band * ref:
                distance = abs(price - ref) * 10_000 // ref
                return "PRICE_BAND", (f"{field} {price} is {distance} bps from {what} {ref}; "
                                      f"price_band_bps {band} allows no more")
        return None

    def check_order_value(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                          now: int) -> Denial | None:
        if self._is_square_off(order):
            return None  # closing must not be capped: one lot may be worth more than max_order_value
        price = self._valuation_price(order)
        if order.side == trading_pb2.SIDE_SELL and order.order_type == trading_pb2.ORDER_TYPE_LIMIT:
            price = max(price, self._market_price(order.token))  # a sell fills at its limit or above: the market's
        if price <= 0:
            return "NO_PRICE", (f"no last price for token {order.token} to value a market order; "
                                "wait for a tick or send a limit order")
        value = value_paise(price, order.quantity, factor_of(inst.price_factor))
        limit = self.limits.max_order_value_paise
        if value > limit:
            return "MAX_ORDER_VALUE", f"order value {fmt_inr(value)} exceeds max_order_value {fmt_inr(limit)}"
        return None

    def check_position(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument, now: int) -> Denial | None:
        if self._is_square_off(order):
            # Closing an intraday position must not be refused: another product's position in the token (or a
            # lowered limit) may put the net over the limit, and an MIS position left open is squared off by the
            # broker anyway, later and at a worse price.
            return None
        net, worst = self._worst_position(order)
        limit = self.limits.max_position_quantity
        # Past the limit only an order that shrinks the position on its own side passes (the limit may have
        # been lowered under a position); one that grows it or flips it to the other side does not.
        if abs(worst) > limit and _grows(net, worst):
            return "MAX_POSITION_QUANTITY", (f"resulting position {worst} in {inst.symbol} (with open orders) "
                                             f"exceeds max_position_quantity {limit}")
        return None

    def check_position_value(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                             now: int) -> Denial | None:
        """The position check in rupees: the resulting position (as check_position counts it) at the order's price."""
        limit = self.limits.max_position_value_paise
        if not limit or self._is_square_off(order):
            return None  # no limit; closing must not be capped
        net, worst = self._worst_position(order)
        price = self._exposure_price(order)  # > 0: check_order_value refused an order without a price
        value = value_paise(price, abs(worst), factor_of(inst.price_factor))
        if value > limit and _grows(net, worst):
            return "MAX_POSITION_VALUE", (f"resulting position {worst} in {inst.symbol} (with open orders) is worth "
                                          f"{fmt_inr(value)} at {fmt_inr(price)}, over max_position_value "
                                          f"{fmt_inr(limit)}")
        return None

    def check_gross_exposure(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                             now: int) -> Denial | None:
        limit = self.limits.max_gross_exposure_paise
        if not limit or self._is_square_off(order):
            return None  # no limit; closing must not be capped
        net, worst = self._worst_position(order)
        if not _grows(net, worst):
            return None  # shrinking a position never adds exposure on its side
        gross = self._gross_exposure(order, self._exposure_price(order))
        if gross > limit:
            return "MAX_GROSS_EXPOSURE", (f"gross exposure {fmt_inr(gross)} with this order (every position and "
                                          f"working order) exceeds max_gross_exposure {fmt_inr(limit)}")
        return None

    def check_open_orders(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                          now: int) -> Denial | None:
        if self.reduces_position(order):
            # Closing positions must not wait for room: a grid of resting entries at the cap would hold a stop's
            # exit back. Such an order adds no exposure, and the working exits it counts with bound how many pass.
            return None
        limit = self.limits.max_open_orders
        if len(self.open_orders) >= limit:
            return "MAX_OPEN_ORDERS", f"open orders {len(self.open_orders)} reached max_open_orders {limit}"
        return None

    def check_market_hours(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                           now: int) -> Denial | None:
        if not self.limits.enforce_market_hours:
            return None
        segment = inst.exchange_segment or order.exchange_segment  # the token's instrument, as placed (stamped)
        if segment_open(segment, now, self.sessions):
            return None
        session = session_in_force(segment, now, self.sessions)
        if special_session(segment, now) is not None:
            return "MARKET_CLOSED", (f"market is closed at {ist_datetime(now):%H:%M} IST: {day_of(now)} holds a "
                                     f"special session for {segment or 'nse_cm'}, {fmt_session(session)} IST "
                                     "(special_sessions); enforce_market_hours is on")
        if is_holiday(now):
            return "MARKET_CLOSED", (f"market is closed: {day_of(now)} is an exchange holiday (the `holidays` "
                                     "setting); enforce_market_hours is on")
        return "MARKET_CLOSED", (f"market is closed at {ist_datetime(now):%a %H:%M} IST ({segment or 'nse_cm'} "
                                 f"trades {fmt_session(session)} IST on "
                                 "trading days); enforce_market_hours is on")

    def check_square_off_time(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                              now: int) -> Denial | None:
        segment = inst.exchange_segment or order.exchange_segment  # the token's instrument, as placed (stamped)
        if order.product not in (MIS, trading_pb2.PRODUCT_UNSPECIFIED) or not self._past_square_off(now, segment):
            return None
        if self.reduces_position(order):
            return None
        hour, minute = self._square_off_hhmm(segment, now)
        setting = f"square_off_times_ist.{segment}" if segment in self.square_off_times else "square_off_time_ist"
        if special_session(segment, now) is not None:
            setting = "the special session's square-off (its close, less the regular lead)"
        return "SQUARE_OFF_TIME", f"after {setting} {hour:02d}:{minute:02d} no MIS order may increase a position"

    def check_submit_rate(self, order: trading_pb2.OrderRequest, inst: market_pb2.Instrument,
                          now: int) -> Denial | None:
        if self._is_square_off(order) or self._bucket.ready(now):
            return None
        return "RATE_LIMIT", (f"submit rate exceeds max_orders_per_second {self.limits.max_orders_per_second:g}; "
                              "retry in a moment")

    # -- helpers for checks ---------------------------------------------------
    def reduces_position(self, order: trading_pb2.OrderRequest) -> bool:
        """True when the order (plus open orders on the same side) only shrinks the position of its product.

        Per (token, product): an MIS order closes the MIS position even when a CNC position offsets it.
        """
        product = product_of(order.product)
        net = self._net(order.token, product)
        if net == 0 or (net > 0) == (order.side == BUY):
            return False
        return self._pending(order.token, order.side, product) + order.quantity <= abs(net)

    def _net(self, token: int, product: int) -> int:
        pos = self.positions.positions.get((token, product_of(product)))
        return pos.net_quantity if pos is not None else 0

    def _is_square_off(self, order: trading_pb2.OrderRequest) -> bool:
        return order.strategy_tag == SQUAREOFF_TAG and self.reduces_position(order)

    def _pending(self, token: int, side: int, product: int | None = None) -> int:
        """Working quantity on one side of a token: every product, or only `product`."""
        return sum(o.remaining for o in self.open_orders.values()
                   if o.token == token and o.side == side and (product is None or o.product == product))

    def _worst_position(self, order: trading_pb2.OrderRequest) -> tuple[int, int]:
        """The token's net position (across products), and where it ends if this order and every working order
        on its side (any product) fill."""
        net = self.positions.net_quantity(order.token)
        direction = 1 if order.side == BUY else -1
        return net, net + direction * (order.quantity + self._pending(order.token, order.side))

    def _gross_exposure(self, order: trading_pb2.OrderRequest, price: int) -> int:
        """Rupees at stake, in paise, if this order is accepted: every token at the larger of its two extremes (net
        plus all working buys, or net minus all working sells; this order on its side) x price x price factor.
        The order's token is valued at `price`; the others at their last traded price, else their positions' last
        mark, else their average price, else their working orders' own price."""
        nets: dict[int, int] = {}
        marks: dict[int, int] = {}
        costs: dict[int, int] = {}
        factors: dict[int, Fraction] = {}
        for pos in self.positions.positions.values():
            token = pos.token
            nets[token] = nets.get(token, 0) + pos.net_quantity
            marks[token] = max(marks.get(token, 0), pos.last_price_paise)
            costs[token] = max(costs.get(token, 0), pos.average_price_paise)
            factors[token] = pos.price_factor
        buys: dict[int, int] = {}
        sells: dict[int, int] = {}
        quoted: dict[int, int] = {}
        for o in self.open_orders.values():
            side = buys if o.side == BUY else sells
            side[o.token] = side.get(o.token, 0) + o.remaining
            quoted[o.token] = max(quoted.get(o.token, 0), o.price)
        side = buys if order.side == BUY else sells
        side[order.token] = side.get(order.token, 0) + order.quantity
        gross = 0
        for token in nets.keys() | buys.keys() | sells.keys():
            net = nets.get(token, 0)
            size = max(abs(net + buys.get(token, 0)), abs(net - sells.get(token, 0)))
            if not size:
                continue
            inst = self.instruments.get(token)
            factor = factor_of(inst.price_factor) if inst is not None else factors.get(token, ONE)
            known = price if token == order.token else (self.last_prices.get(token) or marks.get(token)
                                                        or costs.get(token) or quoted.get(token, 0))
            gross += value_paise(known, size, factor)
        return gross

    def _valuation_price(self, order: trading_pb2.OrderRequest) -> int:
        if order.order_type in PRICED or order.order_type == trading_pb2.ORDER_TYPE_STOP_MARKET:
            return _own_price(order)
        return self._market_price(order.token)

    def _exposure_price(self, order: trading_pb2.OrderRequest) -> int:
        """What a position in the order's token is valued at by the exposure caps: the order's own price or the
        market's, whichever is higher (a buy limit far below the market must not make the position look small)."""
        return max(self._valuation_price(order), self._market_price(order.token))

    def _todays_last(self, token: int) -> int:
        """The token's last price if it traded today, else 0: yesterday's close (a restart's marks, the feed's first
        snapshot before the open) is not where the market is after a gap."""
        traded = self._last_price_ns.get(token, 0)
        return self.last_prices.get(token, 0) if traded and ist_day_number(traded) == self._day_number else 0

    def _market_price(self, token: int) -> int:
        """The last traded price, else the position's last mark (0: none known)."""
        last = self.last_prices.get(token, 0)
        if last:
            return last
        return max((p.last_price_paise for p in self.positions.positions.values() if p.token == token), default=0)

    def _loss_halted(self) -> bool:
        """HALTED by the daily loss: its MIS positions close now. Not by the kill switch alone (its operator decides
        what to close), but a switch engaged over a loss halt (a trader answering the alert with /kill) leaves that
        square-off going: the switch only adds restrictions, and the strategies' stops are refused under it."""
        if self.state != HALTED:
            return False
        return not self.kill_switch_engaged or self._level_of(self._worst_loss) == HALTED

    def _past_any_square_off(self, now: int) -> bool:
        """Past the earliest square-off time of any segment, or halted by the daily loss: MIS closes now."""
        if self._loss_halted():
            return True
        earliest = min(self._square_off_hhmm(segment, now) for segment in self.sessions)
        return ist_minute_of_day(now) >= earliest[0] * 60 + earliest[1]

    def _square_off_hhmm(self, segment: str, now: int) -> tuple[int, int]:
        """The segment's square-off time on the day of `now`: its own, else square_off_time_ist; in a special session
        (special_sessions), as far before that session's close as the regular time is before the regular close."""
        regular = self.square_off_times.get(segment) or self.limits.square_off_hhmm
        special = special_session(segment, now)
        if special is None:
            return regular
        close = shortest_session(session_of(segment, self.sessions))[1]
        lead = close[0] * 60 + close[1] - (regular[0] * 60 + regular[1])
        at = max(special[0][0] * 60 + special[0][1], special[1][0] * 60 + special[1][1] - lead)
        return at // 60, at % 60

    def _past_square_off(self, now: int, segment: str) -> bool:
        if self._loss_halted():
            return True
        hour, minute = self._square_off_hhmm(segment, now)
        return ist_minute_of_day(now) >= hour * 60 + minute

    # -- order updates, prices, daily loss ------------------------------------
    def on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        """Track open orders and apply the fill the update carries; a fill re-evaluates the daily loss.
        After a restart, what the OMS's snapshots already include is not applied again."""
        # A new day's first fill belongs to the new day: roll before applying it (as the OMS does), not after.
        self._roll_day(self.clock.now_ns())
        seq = update.sequence
        if seq:
            if seq <= self._last_update_sequence:
                return  # already seen (a resumed stream replays)
            self._last_update_sequence = seq
        cid = update.client_order_id or update.request.client_order_id
        if not (seq and seq <= self._loaded_order_sequence.get(cid, 0)):
            self.track_order(update)
        if update.last_fill_quantity > 0 and not (seq and seq <= self._positions_as_of):
            self.positions.apply_update(update)
            self.evaluate_loss()

    def load_orders(self, orders: Iterable[trading_pb2.OrderUpdate]) -> None:
        """The OMS's orders after a restart: open ones count again, each one's state as of its sequence (an
        older update of it arriving later changes nothing), and asking for any of them again is a duplicate."""
        self._roll_day(self.clock.now_ns())  # a later roll would forget them as accepted ids
        for update in orders:
            self.track_order(update)
            cid = update.client_order_id or update.request.client_order_id
            if cid:
                self._accepted.add(cid)
                self._loaded_order_sequence[cid] = update.sequence

    def restore_positions(self, positions: Iterable[trading_pb2.Position], as_of_sequence: int = 0) -> None:
        """Today's positions from the OMS after a restart; the loss limit applies to them at once. They include
        every fill up to `as_of_sequence`: those updates' fills are not applied again when they arrive."""
        self._roll_day(self.clock.now_ns())  # they are today's: a roll after them would wipe today's P&L
        self._positions_as_of = max(self._positions_as_of, as_of_sequence)
        for position in positions:
            self.positions.restore(position)
            if position.last_price_paise:
                self.last_prices.setdefault(position.token, position.last_price_paise)
        self.evaluate_loss()

    def track_order(self, update: trading_pb2.OrderUpdate) -> None:
        """Count an order as open until it is terminal (also orders placed before a restart)."""
        cid = update.client_order_id or update.request.client_order_id
        if update.status in TERMINAL:
            ended = self.open_orders.pop(cid, None)
            if ended is not None and ended.square_off and update.status != trading_pb2.ORDER_STATUS_TRADED:
                why = update.reason or trading_pb2.OrderStatus.Name(update.status).removeprefix("ORDER_STATUS_")
                self.left_open.ended((ended.token, ended.product), why)
            self._cancel_asked.pop(cid, None)  # ended: nothing more to cancel (a long run holds only working ones)
        elif cid:
            req = update.request
            tracked = self.open_orders.setdefault(cid, _open_order(req))
            if req.quantity and update.status == trading_pb2.ORDER_STATUS_MODIFY_PENDING:
                # The terms asked for, the broker's answer still to come: it may refuse them and keep the old ones.
                tracked.quantity = max(tracked.quantity, req.quantity)
                tracked.price = max(tracked.price, _own_price(req))
            elif req.quantity:  # the terms the OMS holds now: a change (ModifyOrder) moves them
                tracked.quantity, tracked.price = req.quantity, _own_price(req)
                tracked.trigger = req.trigger_price_paise
            tracked.filled = update.filled_quantity
            self._accepted.add(cid)

    def on_ticks(self, ticks: Iterable[market_pb2.Tick]) -> None:
        """Hot path: remember the last price per token; marks are applied when the loss is evaluated. A new
        day's first ticks come after the day is rolled at yesterday's marks."""
        self._roll_day(self.clock.now_ns())
        last, traded = self.last_prices, self._last_price_ns
        for tick in ticks:
            price = tick.ltp_paise
            if price:
                last[tick.token] = price
                traded[tick.token] = tick.ts_ns

    def daily_pnl_paise(self) -> int:
        """Today's realised + mark-to-market P&L, net of charges."""
        book = self.positions
        return book.realised_pnl_paise() - book.charges_paise() + book.unrealised_pnl_paise()

    def evaluate_loss(self) -> None:
        """Mark positions and move the state when the daily loss crosses a threshold (it never relaxes by itself)."""
        now = self.clock.now_ns()
        self._roll_day(now)
        self._mark()
        loss, level = self._loss_level_now()
        self._worst_loss = max(self._worst_loss, loss)
        crossed = level > self._loss_level
        self._loss_level = level
        if crossed and level > self.state:
            limit_name = "daily_loss_halt" if level == HALTED else "daily_loss_reducing"
            limit = self.limits.daily_loss_halt_paise if level == HALTED else self.limits.daily_loss_reducing_paise
            self._move(level, f"daily loss {fmt_inr(loss)} reached {limit_name} {fmt_inr(limit)}")

    def _loss_level_now(self) -> tuple[int, risk_pb2.TradingState]:
        loss = -self.daily_pnl_paise()
        return loss, self._level_of(loss)

    def _level_of(self, loss: int) -> risk_pb2.TradingState:
        if loss >= self.limits.daily_loss_halt_paise:
            return HALTED
        return REDUCING if loss >= self.limits.daily_loss_reducing_paise else ACTIVE

    def _mark(self) -> None:
        last = self.last_prices
        for pos in self.positions.positions.values():
            price = last.get(pos.token)
            if price:
                pos.last_price_paise = price

    # -- state ----------------------------------------------------------------
    def set_kill_switch(self, engaged: bool, reason: str = "") -> None:
        """Engage: HALTED. Release: ACTIVE, or what the daily loss holds (REDUCING, or HALTED past daily_loss_halt: the
        hard limit is not relaxed by the button that releases a manual stop; raising daily_loss_halt first is)."""
        self._roll_day(self.clock.now_ns())  # a release at a new day's open measures today's loss, not yesterday's
        self.kill_switch_engaged = engaged
        self._kill_reason = reason if engaged else ""
        if engaged:
            self._move(HALTED, f"kill switch engaged: {reason or 'no reason given'}",
                       kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, always=True)
            return
        self._mark()
        loss, _ = self._loss_level_now()
        self._worst_loss = max(self._worst_loss, loss)
        # The worst the day's loss reached, against the limits now: a bounce since does not relax it, raising the
        # limit does.
        loss = self._worst_loss
        level = self._level_of(loss)
        self._loss_level = level
        if level == ACTIVE:
            self._move(ACTIVE, f"kill switch released: {reason or 'no reason given'}",
                       kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, always=True)
        elif level == REDUCING:
            self._move(REDUCING, f"kill switch released; the day's loss reached {fmt_inr(loss)}, over "
                                 f"daily_loss_reducing {fmt_inr(self.limits.daily_loss_reducing_paise)}",
                       kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, always=True)
        else:
            self._move(HALTED, f"kill switch released; the day's loss reached {fmt_inr(loss)}, over daily_loss_halt "
                               f"{fmt_inr(self.limits.daily_loss_halt_paise)}: trading stays HALTED (MIS squared off, "
                               "exits only) unless daily_loss_halt is raised",
                       kind=ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, always=True)

    def durable_state(self) -> dict[str, Any]:
        """What must outlive a restart (RiskModule saves it on every state change and limit change): the kill switch
        with its reason, the day's state (a daily-loss REDUCING or HALTED holds for the rest of the day, whatever
        prices do), and the limits changed at run time, each with the config's value it replaced (restore_limits)."""
        return {"kill_switch": self.kill_switch_engaged, "kill_reason": self._kill_reason,
                "day": self._day.isoformat(), "state": risk_pb2.TradingState.Name(self.state),
                "loss_level": risk_pb2.TradingState.Name(self._loss_level), "reason": self.state_reason,
                "worst_loss_paise": self._worst_loss,
                "limits": {name: {"value": value, "config": config}
                           for name, (value, config) in self._limit_overrides.items()}}

    def restore_limits(self, saved: dict[str, Any]) -> RestoredLimits:
        """At start, before the positions are restored (the limits in force decide the loss state they give): put
        back the limits changed at run time, whatever day they were set on (like the kill switch, they are the
        operator's and hold until changed; without a restart they would have held across the day too), all at once,
        but not one whose config value has changed since (the config file edited after: its value holds). Not valid
        with this config (a square-off time outside a session changed since), none is applied."""
        entries = saved.get("limits")
        if not isinstance(entries, dict):
            return RestoredLimits({}, {})
        config = self._config_limits.model_dump()
        applied: dict[str, Any] = {}
        dropped: dict[str, str] = {}
        for name, entry in sorted(entries.items()):
            if name not in config or not isinstance(entry, dict) or "value" not in entry:
                dropped[name] = "not understood"
            elif entry.get("config") != config[name]:
                dropped[name] = (f"the config's value changed since (was {entry.get('config')!r}, now "
                                 f"{config[name]!r}): the config's holds")
            else:
                applied[name] = entry["value"]
        if applied:
            try:
                self.set_limits(Limits(**{**config, **applied}))
            except (ValidationError, InvalidInput) as exc:
                why = f"not valid with the config now: {exc}".replace("\n", " ")
                dropped.update({name: why for name in applied})
                applied = {}
        return RestoredLimits(applied, dropped)

    def restore_durable_state(self, saved: dict[str, Any]) -> None:
        """After a restart: the kill switch engaged again if it was; today's daily-loss state kept if it was worse
        than what today's P&L gives now (yesterday's is not: a new day resets the loss limits)."""
        if saved.get("day") == self._day.isoformat() and isinstance(saved.get("worst_loss_paise"), int):
            self._worst_loss = max(self._worst_loss, saved["worst_loss_paise"])
        if saved.get("kill_switch"):
            self.set_kill_switch(True, str(saved.get("kill_reason") or ""))
            return
        if saved.get("day") != self._day.isoformat():
            return
        names = risk_pb2.TradingState.keys()
        level = risk_pb2.TradingState.Value(saved["loss_level"]) if saved.get("loss_level") in names else ACTIVE
        state = risk_pb2.TradingState.Value(saved["state"]) if saved.get("state") in names else ACTIVE
        self._loss_level = max(self._loss_level, level)
        if state > self.state:
            reason = str(saved.get("reason") or "the daily loss")
            self._move(state, reason if reason.endswith(RESTORED) else reason + RESTORED)

    def set_limits(self, limits: Limits) -> None:
        """Replace the limits whole; new loss thresholds take effect at once. InvalidInput (nothing changed) for a
        square-off time outside the market hours of a segment it applies to."""
        problem = square_off_problem(limits.square_off_hhmm, self.square_off_times, self.sessions)
        if problem:
            raise InvalidInput("limits.square_off_time_ist", problem)
        self.limits = limits
        config = self._config_limits
        for name, value in limits.model_dump().items():
            if value == getattr(config, name):
                self._limit_overrides.pop(name, None)  # back at the config's: nothing of its own to keep
            else:
                self._limit_overrides[name] = (value, getattr(config, name))
        self._bucket.set_rate(limits.max_orders_per_second, self.clock.now_ns())
        self.evaluate_loss()

    def _move(self, state: risk_pb2.TradingState, reason: str,
              kind: ops_pb2.NotificationKind = ops_pb2.NOTIFICATION_KIND_RISK_BREACH, always: bool = False) -> None:
        previous = self.state
        self.state, self.state_reason = state, reason
        if always or previous != state:
            self._changes.append(StateChange(previous, state, reason, kind))

    @property
    def state_changes_pending(self) -> int:
        """How many state changes are waiting to be taken (pop_state_changes)."""
        return len(self._changes)

    def pop_state_changes(self, count: int | None = None) -> list[StateChange]:
        """State changes since the last call, oldest first (the module turns them into notifications); only the
        oldest `count` when given (those a save covered: the others are left for the next one)."""
        taken = len(self._changes) if count is None else count
        changes, self._changes = self._changes[:taken], self._changes[taken:]
        return changes

    def _roll_day(self, now: int) -> None:
        day_number = ist_day_number(now)  # an integer compare on every order; the date only on a new day
        if day_number == self._day_number:
            return
        self._day_number, self._day = day_number, day_of(now)
        # Today's P&L starts from yesterday's close: positions held overnight are carried at their last marks
        # (without them a carried position's gain or loss since entry would count today).
        self._mark()
        self.positions.start_day()
        self._accepted_before, self._accepted = self._accepted, set()
        self._loss_level, self._worst_loss = ACTIVE, 0
        self.left_open.new_day()
        if not self.kill_switch_engaged and self.state != ACTIVE:
            self._move(ACTIVE, f"new trading day {self._day}: daily loss limits reset")

    # -- square-off and state -------------------------------------------------
    def square_off_cancels(self) -> list[str]:
        """At a segment's square-off time, the working MIS orders of that segment other than square-off ones, to
        be cancelled (as the broker's own square-off does): a resting exit far from the price would keep its
        position open (square_off_due counts it as closing), and a resting entry could still open one. Each id is
        offered again after square_off_retry_s while it is still working."""
        now = self.clock.now_ns()
        if not self._past_any_square_off(now):
            return []  # the timer asks several times a second; most of the day there is nothing to look at
        out = []
        for cid, o in self.open_orders.items():
            if o.square_off or o.product != MIS or now < self._cancel_asked.get(cid, 0):
                continue
            if self._past_square_off(now, self._segment_of(o.token, o.segment)):
                self._cancel_asked[cid] = now + self._square_off_retry_ns
                out.append(cid)
        if out:  # the market orders follow as soon as the cancels are confirmed, not a retry interval later
            self._next_square_off_ns = min(self._next_square_off_ns, now + SQUARE_OFF_AFTER_CANCEL_NS)
        return out

    def loss_cancels(self) -> list[str]:
        """While the daily loss holds trading at REDUCING or HALTED: the working orders that would grow a position
        (resting entries), to be cancelled: the state refuses such orders, and one left working could still fill
        and grow the loss the limit stopped. Exits and square-off orders are kept. Each id is offered again after
        square_off_retry_s while it is still working. (The kill switch alone cancels only when asked to.)"""
        if self.state == ACTIVE or self._level_of(self._worst_loss) == ACTIVE:
            return []  # the kill switch alone; or no loss limit reached today
        now = self.clock.now_ns()
        out = []
        for cid, o in self.open_orders.items():
            if o.square_off or now < self._cancel_asked.get(cid, 0) or not self._grows(o):
                continue
            self._cancel_asked[cid] = now + self._square_off_retry_ns
            out.append(cid)
        return out

    def _grows(self, o: OpenOrder) -> bool:
        """The order, filled, would grow its position (of its product): a buy when flat or long, a sell when flat or
        short, or one larger than the position it closes (it would open the other side). Each exit is judged alone:
        a stop and a target of one position (together twice it) are both kept, since cancelling either could leave
        the position without its stop; once one fills, the other would grow a flat position and goes at the next
        pass."""
        net = self._net(o.token, o.product)
        return net == 0 or (net > 0) == (o.side == BUY) or o.remaining > abs(net)

    def square_off_due(self) -> list[trading_pb2.OrderRequest]:
        """At square_off_time_ist, and every square_off_retry_s after it that day while an MIS position is
        still open and not being closed by a working order: market orders closing it. A square-off order
        that was rejected or cancelled is thus replaced; one still working is never doubled. Other working
        orders are cancelled first (square_off_cancels); until they are, the position waits for them."""
        now = self.clock.now_ns()
        self._roll_day(now)
        if self._square_off_day != self._day:
            self._square_off_day, self._square_off_attempt, self._next_square_off_ns = self._day, 0, 0
        if now < self._next_square_off_ns or not self._past_any_square_off(now):
            return []
        due = [pos for pos in self.positions.positions.values() if pos.product == MIS and pos.net_quantity != 0
               and self._past_square_off(now, self._segment_of(pos.token, pos.exchange_segment))]
        if not due:
            return []
        self._next_square_off_ns = now + self._square_off_retry_ns
        self._mark()
        orders: list[trading_pb2.OrderRequest] = []
        for pos in due:
            if self._market_closed(pos, now):
                continue
            listed = self.instruments.get(pos.token)
            inst = listed if listed is not None else held_instrument(pos)  # lot 1, no freeze: what is known of it
            side = trading_pb2.SIDE_SELL if pos.net_quantity > 0 else BUY
            if any(not o.square_off and o.token == pos.token and o.product == pos.product
                   for o in self.open_orders.values()):
                # Being cancelled (square_off_cancels): a market order now could, with a late fill of one of
                # them, close more than the position. Look again shortly.
                self._next_square_off_ns = min(self._next_square_off_ns, now + SQUARE_OFF_AFTER_CANCEL_NS)
                continue
            quantity = abs(pos.net_quantity) - self._pending(pos.token, side, pos.product)
            # An unlisted token's lot is unknown: pieces of the position might not be whole lots (the exchange refuses
            # them), so it goes whole, as it was bought (risk's own caps do not hold back a square-off).
            chunk = square_off_chunk(self.limits, inst, pos.last_price_paise) if listed is not None else quantity
            orders += square_off_orders(pos, inst, quantity, chunk, self._day, self._square_off_attempt, self.run_tag)
        if orders:
            self._square_off_attempt += 1
        return orders

    def _market_closed(self, pos: PositionState, now: int) -> bool:
        """Whether the position's segment is closed now (enforce_market_hours): a square-off would only come back
        refused MARKET_CLOSED, every retry until midnight. Past its session, the position is told as left open."""
        segment = self._segment_of(pos.token, pos.exchange_segment)
        if not self.limits.enforce_market_hours or segment_open(segment, now, self.sessions):
            return False
        working = [cid for cid, o in self.open_orders.items() if (o.token, o.product) == (pos.token, pos.product)]
        inst = self.instruments.get(pos.token)
        self.left_open.found(pos, pos.symbol or (inst.symbol if inst is not None else ""), segment, working, now)
        return True

    def _segment_of(self, token: int, segment: str) -> str:
        """A position's or open order's segment: its own, else its instrument's."""
        inst = self.instruments.get(token)
        return segment or (inst.exchange_segment if inst is not None else "")

    def snapshot(self) -> risk_pb2.GetRiskStateResponse:
        self._mark()
        return risk_pb2.GetRiskStateResponse(
            state=self.state, limits=self.limits.to_proto(), open_orders=len(self.open_orders),
            realised_pnl_paise=self.positions.realised_pnl_paise(),
            unrealised_pnl_paise=self.positions.unrealised_pnl_paise(), state_reason=self.state_reason,
            positions=self.positions.to_protos())


def _stamp_instrument(order: trading_pb2.OrderRequest, inst: market_pb2.Instrument | None) -> None:
    """The instrument master's symbol, segment and price factor on an accepted order, whatever the client sent.
    Every check judged the token's instrument, and Kotak places by symbol and segment: a symbol naming another
    instrument, or no segment, would trade what risk never judged. The OMS, its ledger and every position book
    value the order's fills and charges by the factor."""
    order.ClearField("price_factor")
    if inst is None:
        return
    if inst.HasField("price_factor"):
        order.price_factor.CopyFrom(inst.price_factor)
    order.symbol = inst.symbol or order.symbol
    order.exchange_segment = inst.exchange_segment or order.exchange_segment


def _open_order(order: trading_pb2.OrderRequest) -> OpenOrder:
    return OpenOrder(order.token, order.side, order.quantity, product=product_of(order.product),
                     square_off=order.strategy_tag == SQUAREOFF_TAG, segment=order.exchange_segment,
                     price=_own_price(order), trigger=order.trigger_price_paise)


def _own_price(order: trading_pb2.OrderRequest) -> int:
    """The price an order values itself at: its limit price, a stop-market order's trigger, 0 for a market order."""
    if order.order_type in PRICED:
        return order.price_paise
    if order.order_type == trading_pb2.ORDER_TYPE_STOP_MARKET:
        return order.trigger_price_paise
    return 0


def _grows(net: int, worst: int) -> bool:
    """Whether going from `net` to `worst` grows the position or flips it to the other side (not only shrinks it)."""
    return abs(worst) > abs(net) or worst * net < 0


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if not n:
            return out


def product_of(product: int) -> int:
    """The product an order or position counts under: unspecified means MIS (the default everywhere)."""
    return product or MIS


def _product_name(order: trading_pb2.OrderRequest) -> str:
    return trading_pb2.Product.Name(product_of(order.product)).removeprefix("PRODUCT_")  # type: ignore[arg-type]


def _type_name(order: trading_pb2.OrderRequest) -> str:
    return trading_pb2.OrderType.Name(order.order_type).removeprefix("ORDER_TYPE_")
