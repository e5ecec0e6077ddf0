"""The strategy engine: ticks -> candles -> plugins -> Signals, plus pause/resume/re-parametrise.

Transport-free (no bus): the module feeds it and publishes what it returns; the benchmark drives it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError

from services.strategy.candles import MINUTE_NS, CandleBuilder, Closed
from services.strategy.config import StrategySettings
from services.strategy.loss_limit import LOSS_STOPPED, LossStops, Pause, loss_stopped
from services.strategy.orders import WorkingOrders
from services.strategy.plugins import (
    NEVER,
    TERMINAL,
    Decision,
    OrderCancel,
    OrderChange,
    OrderIntent,
    Strategy,
    StrategyContext,
    outcome_unknown,
    strategy_class,
)
from shared.clock import NS, Clock, ist_day_number
from shared.config import RupeesOrOff
from shared.contracts import market_pb2, strategy_pb2, trading_pb2
from shared.errors import ConfigError, InvalidInput, NotFound
from shared.instruments import InstrumentBook, expired_reason, not_tradable, trading_ends_ns
from shared.metrics import start_at_zero
from shared.money import fmt_inr, to_paise
from shared.positions import SQUAREOFF_TAG, exit_side

log = logging.getLogger(__name__)

PLUGIN_ERRORS = Counter("neopulse_strategy_plugin_errors", "Exceptions raised by strategy plugins", ["strategy"])
_SIDE_NAMES: dict[int, str] = {trading_pb2.SIDE_BUY: "BUY", trading_pb2.SIDE_SELL: "SELL"}
OPERATOR_PAUSE = "no reason given"  # the pause_reason of a PauseStrategy without one (paused_by says who)
# How the pause_reason of NeoPulse's two pauses that hold back even exits begins (sends_nothing).
NOT_RESTORED = "its positions could not be restored at start"

Output = tuple[list[market_pb2.Candle], list[trading_pb2.Signal]]
LOSS_LIMIT = "max_daily_loss"  # SetStrategyParams sets the loss limit under this name, beside the plugin's
_RUPEES: TypeAdapter[Decimal] = TypeAdapter(RupeesOrOff)
CANCEL_AGAIN_NS = 10 * NS  # a close-out's cancel of a working order is asked again after this (clock)
CLOSE_AGAIN_NS = 5 * NS  # and its exit of a position, should it have been refused
# A stop's exit (or its cancel or change of a working order: Strategy.stop_exit) refused, by risk, the OMS or the
# broker: the token's ticks are taken again after this long (tick time), twice as long after each refusal in a row
# up to the most (a refusal that holds, the kill switch, costs a rejection a minute, not one a tick), from the first
# after a fill again. Other decisions of a level (an entry, a target) are asked again at the token's next close.
LEVEL_RETRY_NS = 1 * NS
LEVEL_RETRY_MOST_NS = 60 * NS
# Signal ids kept per strategy and token to tell a repeat (a candle's and a tick's at one time): a minute's worth.
ISSUED_IDS_KEPT = 64
# How an order of a level's decision ends with nothing done: refused by the broker, or cancelled unfilled.
_ENDED_UNFILLED = frozenset({trading_pb2.ORDER_STATUS_REJECTED, trading_pb2.ORDER_STATUS_CANCELLED})


@dataclass
class Restored:
    """What restore_state put back of a strategy: the params changed at run time it applied, those it dropped (why),
    why they were not valid (the strategy then starts paused), whether a pause was put back."""

    params: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    invalid: str = ""
    paused: bool = False


@dataclass
class LossTurn:
    """What a loss_turn asks the module to do: the strategies stopped now (name, why), the exits, the cancels, the
    strategies whose close-out ended (flat: their saved state says so), and those whose stop of an earlier day a new
    day lifted (name, what to tell)."""

    stopped: list[tuple[str, str]] = field(default_factory=list)
    signals: list[trading_pb2.Signal] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    new_day: list[tuple[str, str]] = field(default_factory=list)


def build_strategies(settings: StrategySettings, instruments: InstrumentBook) -> list[Strategy]:
    """One plugin instance per configured strategy; an unknown symbol is a ConfigError naming it."""
    out = []
    for cfg in settings.strategies:
        tokens = set()
        for symbol in cfg.symbols:
            inst = instruments.by_symbol(symbol)
            if inst is None:
                raise ConfigError(f"[strategy] strategy {cfg.name!r}: unknown symbol {symbol!r}; "
                                  "use a trading symbol ingestion lists, e.g. RELIANCE-EQ")
            if inst.is_index:
                raise ConfigError(f"[strategy] strategy {cfg.name!r}: symbol {symbol!r}: {not_tradable(inst)}")
            tokens.add(inst.token)
        cls = strategy_class(cfg.kind)
        strategy = cls(cfg.name, cls.Params.model_validate(cfg.params), frozenset(tokens))
        strategy.max_daily_loss_paise = to_paise(cfg.max_daily_loss)
        unknown = unknown_indices(strategy.indices(), instruments)
        if unknown:
            raise ConfigError(f"[strategy] strategy {cfg.name!r}: {unknown}")
        out.append(strategy)
    return out


def unknown_indices(symbols: Iterable[str], instruments: InstrumentBook) -> str:
    """Why the indices a strategy's params name are not all indices NeoPulse follows, or "" when they are."""
    for symbol in sorted(symbols):
        inst = instruments.by_symbol(symbol)
        if inst is None or not inst.is_index:
            known = ", ".join(i.symbol for i in instruments if i.is_index) or "none: list some in [app] indices"
            what = "is not an index" if inst is not None else "is not followed"
            return f"index {symbol!r} {what}; indices followed: {known}"
    return ""


class StrategyEngine:
    def __init__(self, strategies: list[Strategy], instruments: InstrumentBook, clock: Clock) -> None:
        self.strategies = {s.name: s for s in strategies}
        start_at_zero(PLUGIN_ERRORS, *self.strategies)  # NeoPulseHandlerErrors fires from the first one
        self.instruments = instruments
        self.clock = clock
        self.candles = CandleBuilder({i.token: i.symbol for i in instruments})
        self._tick_strategies = [s for s in strategies if hasattr(s, "on_tick")]
        # Indices (Nifty 50): their candles are built and published, but no strategy trades them (a strategy's
        # symbols cannot name one; one without symbols trades every instrument but these).
        self._indices = frozenset(i.token for i in instruments if i.is_index)
        self._ctx = StrategyContext(instruments)
        self._last_update_sequence = 0
        self.orders = WorkingOrders()  # its strategies' working orders: stale ones to cancel, changes to send
        # (strategy, token) -> the signal ids issued lately, each with how often: see _signal_id.
        self._ids_issued: dict[tuple[str, int], dict[str, int]] = {}  # per strategy and token: base id -> count
        # token -> the strategies watching its ticks' prices (Strategy.price_levels), each with its (low, high);
        # and the (strategy, token) pairs whose level a tick reached, to be asked again at the token's next close.
        self._levels: dict[int, tuple[tuple[Strategy, int, int], ...]] = {}
        self._reached: set[tuple[str, int]] = set()
        # (strategy, token) -> the signal id of the last signal a level decided (to know its refusal), and, after a
        # refusal, (tick time before which its levels are not taken, the wait after that one): see _refused.
        self._level_signals: dict[tuple[str, int], str] = {}
        self._holds: dict[tuple[str, int], tuple[int, int]] = {}
        # max_daily_loss: the strategies being closed out, and when to ask again for a cancel or an exit.
        self._closing: set[str] = set()
        self._cancel_after: dict[tuple[str, str], int] = {}  # (strategy, order id) -> when
        self._close_after: dict[tuple[str, int, int], int] = {}
        self.loss_stops = LossStops()  # the pause each stop lies over, put back when a new day lifts the stop
        # The params as the config file gives them (as ListStrategies shows them), and those changed at run time:
        # name -> param -> (the value given, the config's value then). See durable_state.
        self._config_params = {s.name: _params_text(s) for s in strategies}
        self._overrides: dict[str, dict[str, tuple[str, str]]] = {}
        # The strategies whose own saved state changed (Strategy.saved_changed): the module saves and empties it.
        self.saves_due: set[str] = set()
        # (strategy, token, text): stops reached whose exit an order changed by hand blocks; the module tells them.
        self.blocked_stops: list[tuple[str, int, str]] = []
        # (strategy, token, text): tokens released from an order of unknown outcome that ended with its day.
        self.released: list[tuple[str, int, str]] = []
        # token -> when its contract stops trading (trading_ends_ns, 0: never), asked once per token, at its first
        # decision; and the (strategy, token) pairs whose entry in an expired contract was said (_expired_entry).
        self._trading_ends: dict[int, int] = {}
        self._expiry_told: set[tuple[str, int]] = set()

    # -- data ------------------------------------------------------------------
    def on_ticks(self, ticks: Any) -> Output:
        """Fold a batch of ticks; returns the candles it closed and the signals they caused."""
        signals: list[trading_pb2.Signal] = []
        hooked = bool(self._tick_strategies)  # a plugin ran (a stop it reached may be blocked: _take_blocked_stops)
        if hooked:
            signals.extend(self._run_on_tick(ticks))
        closed = self.candles.on_ticks(ticks)
        reached = self.candles.reached
        if reached:
            hooked = True
            signals.extend(self._run_levels(_from_first_reached(ticks, reached) if len(ticks) > 1 else reached))
            reached.clear()
        if not closed:
            if hooked:  # not on every batch of the hot path: only one after which a plugin ran
                self._take_blocked_stops()
            return [], signals
        candles, more = self.on_closed(closed)
        signals.extend(more)
        self._take_blocked_stops()
        return candles, signals

    def close_due(self, now_ns: int) -> Output:
        """Timer: close candles whose minute ended at or before now_ns."""
        closed = self.candles.close_due(now_ns)
        out = self.on_closed(closed) if closed else ([], [])
        self._take_blocked_stops()
        return out

    def _take_blocked_stops(self) -> None:
        """What the strategies' stops reached behind an order changed by hand (Strategy.take_blocked_stops) have to
        say, for the module to tell."""
        for strategy in self.strategies.values():
            if strategy._blocked_stops:
                self.blocked_stops.extend((strategy.name, token, text)
                                          for token, text in strategy.take_blocked_stops().items())
            if strategy._released:  # and the tokens it let go from orders of unknown outcome (Strategy.take_released)
                self.released.extend((strategy.name, token, text) for token, text in strategy.take_released().items())

    def on_closed(self, closed: list[Closed]) -> Output:
        ctx = self._ctx
        candles, signals = [], []
        indices = self._indices
        for candle, recv_ns in closed:
            candles.append(candle)
            if candle.token in indices:
                self._index_candle(candle)
                continue
            ctx.now_ns = candle.start_ns + MINUTE_NS
            for strategy in self.strategies.values():
                if not strategy.wants(candle.token):
                    continue
                try:
                    intents = strategy.on_candle(candle, ctx)
                except Exception:  # one faulty plugin must not stop candles or the other strategies
                    _failed(strategy, "on a candle", candle.token)
                    continue
                if intents and strategy.paused:
                    intents = self._sendable(strategy, intents)
                if intents:
                    signals.extend(self._emit(strategy, intents, candle.start_ns, recv_ns, ctx.now_ns))
                if strategy._relevel:
                    self._take_relevels(strategy, ctx.now_ns)
                if strategy._saved_changed:
                    strategy._saved_changed = False
                    self.saves_due.add(strategy.name)
                if self._reached and (strategy.name, candle.token) in self._reached:
                    self._watch(strategy, candle.token, ctx.now_ns)
        return candles, signals

    def _index_candle(self, candle: market_pb2.Candle) -> None:
        """An index's closed candle to every strategy's on_index_candle (never to on_candle): those it reads now
        (Strategy.indices), and others it may keep, so that params naming another one later start warm."""
        ctx = self._ctx
        ctx.now_ns = candle.start_ns + MINUTE_NS
        for strategy in self.strategies.values():
            try:
                strategy.on_index_candle(candle, ctx)
            except Exception:
                _failed(strategy, "on an index candle", candle.token)

    def closes_needed(self) -> dict[int, int]:
        """Every traded token (a strategy's symbols; every instrument for one without) and every index a strategy
        reads -> the most closes a strategy trading or reading it needs warm (Strategy.closes_needed)."""
        every = [inst.token for inst in self.instruments if not inst.is_index]
        out: dict[int, int] = {}
        for strategy in self.strategies.values():
            need = strategy.closes_needed()
            read = [inst.token for inst in map(self.instruments.by_symbol, strategy.indices()) if inst is not None]
            for token in [*(strategy.tokens or every), *read]:
                out[token] = max(out.get(token, 0), need)
        return out

    def warm_up(self, candles: list[market_pb2.Candle], tokens: Iterable[int], cutoff_ns: int,
                open_candles: Iterable[market_pb2.Candle] = (),
                day_volumes: Mapping[int, tuple[int, int]] | None = None) -> None:
        """Feed stored candles (closed before cutoff_ns) to the strategies in time order, as they would have come
        live, with ctx.warm_up set; what they return is dropped: a warm-up never trades. Then the candle builder
        takes the ticks of `tokens` before cutoff_ns as late: their candles are fed. `open_candles`: the minute
        from cutoff_ns as far as stored (warmup.read_open), which the live ticks carry on; `day_volumes`: the day
        volume each token's stored ticks reached and when, which the live ticks' candle volumes count from."""
        ctx, failed = self._ctx, set()
        ctx.warm_up = True
        try:
            for candle in sorted(candles, key=lambda c: c.start_ns):
                candle.symbol = self.candles.symbols.get(candle.token, "")
                if candle.token in self._indices:
                    self._index_candle(candle)
                    continue
                ctx.now_ns = candle.start_ns + MINUTE_NS
                for strategy in self.strategies.values():
                    if not strategy.wants(candle.token):
                        continue
                    try:
                        strategy.on_candle(candle, ctx)
                    except Exception:
                        PLUGIN_ERRORS.labels(strategy.name).inc()
                        if strategy.name not in failed:  # once, not once per stored candle
                            failed.add(strategy.name)
                            log.exception("strategy failed on a warm-up candle", extra={"strategy": strategy.name,
                                                                                        "token": candle.token})
        finally:
            ctx.warm_up = False
        now = self.clock.now_ns()
        for strategy in self.strategies.values():
            self._take_relevels(strategy, now)
            if strategy._saved_changed:
                strategy._saved_changed = False
                self.saves_due.add(strategy.name)
        for token in tokens:
            inst = self.instruments.get(token)
            self.candles.closed_before(token, inst.exchange_segment if inst is not None else "", cutoff_ns)
        for candle in open_candles:
            self.candles.resume(candle)
        for token, (day_volume, ts_ns) in (day_volumes or {}).items():
            self.candles.hold_day_volume(token, day_volume, ts_ns)

    def _run_levels(self, reached: list[market_pb2.Tick]) -> list[trading_pb2.Signal]:
        """The ticks that reached a watched price level (a stop loss, a target: Strategy.price_levels; the candle
        builder picks them out) go to each strategy whose own level they reach, its on_price_level. Deciding
        something, the token is then not watched for it until its next order update or close; nothing, it is asked
        for its levels again at once."""
        ctx, levels, holds, out = self._ctx, self._levels, self._holds, []
        for tick in reached:
            price = tick.ltp_paise
            late = self.candles.is_late(tick)
            for strategy, low, high in levels.get(tick.token, ()):
                if low < price < high or price <= 0 or sends_nothing(strategy):
                    continue
                if late and not _late_exit(strategy, tick):
                    continue
                key = (strategy.name, tick.token)
                if holds and key in holds and tick.ts_ns < holds[key][0]:
                    continue
                ctx.now_ns = tick.ts_ns
                self._unwatch(strategy, tick.token)
                try:
                    intents = strategy.on_price_level(tick, ctx)
                except Exception:
                    _failed(strategy, "on a price level", tick.token)
                    continue
                if intents:  # paused, what it holds back waits for the token's next close (_reached)
                    sendable = self._sendable(strategy, intents) if strategy.paused else intents
                    signals = self._emit(strategy, sendable, tick.ts_ns, tick.recv_ns, tick.ts_ns)
                    if signals:
                        self._level_signals[key] = signals[-1].signal_id
                        out.extend(signals)
                else:
                    self._watch(strategy, tick.token, tick.ts_ns)
        return out

    def _watch(self, strategy: Strategy, token: int, now_ns: int = 0, stop_only: bool = False) -> None:
        """Ask `strategy` (again) which prices of `token` to watch (at `now_ns`, default the clock's). `stop_only`:
        of its position's levels, the side against it (a long's low, a short's high) until the token's next close
        asks again: its stop, not a target or a trailing stop's new best that was just refused."""
        if stop_only:
            self._reached.add((strategy.name, token))  # the next close asks again for all of them
        else:
            self._reached.discard((strategy.name, token))
        others = tuple(w for w in self._levels.get(token, ()) if w[0] is not strategy)
        try:
            levels = strategy.price_levels(token, now_ns or self.clock.now_ns())
        except Exception:
            _failed(strategy, "giving its price levels", token)
            levels = None
        if levels is not None and stop_only:
            levels = (levels[0], NEVER) if strategy.position(token) > 0 else (0, levels[1])
        if levels is None and self._holds:
            self._holds.pop((strategy.name, token), None)
        self._set_watching(token, others if levels is None else (*others, (strategy, *levels)))

    def _unwatch(self, strategy: Strategy, token: int) -> None:
        self._reached.add((strategy.name, token))
        self._set_watching(token, tuple(w for w in self._levels.get(token, ()) if w[0] is not strategy))

    def _set_watching(self, token: int, watching: tuple[tuple[Strategy, int, int], ...]) -> None:
        """The candle builder picks out the ticks that may reach one of the levels: at or below the highest low, at
        or above the lowest high (_run_levels checks each strategy's own)."""
        if watching:
            self._levels[token] = watching
            self.candles.watch(token, (max(w[1] for w in watching), min(w[2] for w in watching)))
        else:
            self._levels.pop(token, None)
            self.candles.watch(token, None)

    def _take_relevels(self, strategy: Strategy, now_ns: int) -> None:
        """Ask again about the tokens whose levels the strategy said changed (Strategy.levels_changed)."""
        tokens, strategy._relevel = strategy._relevel, set()
        for token in sorted(tokens):
            self._watch(strategy, token, now_ns)

    def _watch_all(self, strategy: Strategy) -> None:
        """Ask `strategy` again about every token it holds or watches (its params changed, its positions came
        back)."""
        held = {token for (token, _), quantity in strategy.positions().items() if quantity}
        watched = {token for token, watching in self._levels.items() if any(w[0] is strategy for w in watching)}
        for token in sorted(held | watched):
            self._watch(strategy, token)

    def _run_on_tick(self, ticks: Any) -> list[trading_pb2.Signal]:
        ctx, out, indices = self._ctx, [], self._indices
        for tick in ticks:
            if tick.token in indices:
                continue
            ctx.now_ns = tick.ts_ns
            for strategy in self._tick_strategies:
                if strategy.wants(tick.token):
                    try:
                        intents = strategy.on_tick(tick, ctx)  # type: ignore[attr-defined]
                    except Exception:  # as on a candle: a faulty plugin must not lose the batch's candles
                        _failed(strategy, "on a tick", tick.token)
                        continue
                    if intents and strategy.paused:
                        intents = self._sendable(strategy, intents)
                    if intents:
                        out.extend(self._emit(strategy, intents, tick.ts_ns, tick.recv_ns, tick.ts_ns))
        return out

    @staticmethod
    def _sendable(strategy: Strategy, intents: Sequence[Decision]) -> list[Decision]:
        """What of a paused strategy's decisions goes out: under the operator's pause (no new trades), what closes or
        shrinks a position (its stops, targets, time and indicator exits), cancels, and changes of a working exit
        (a stop moving a LIMIT exit, a trailing trigger); never an entry, nor a change of a working entry (it would
        grow a position). Nothing under NeoPulse's pauses that hold back even exits (sends_nothing)."""
        if sends_nothing(strategy):
            return []
        return [i for i in intents if _shrinks(strategy, i)]

    def _emit(self, strategy: Strategy, intents: Sequence[Decision], at_ns: int, recv_ns: int,
              now_ns: int) -> list[trading_pb2.Signal]:
        """The plugin's intents as signals (numbered by the module as it publishes them: the order they go out in),
        its changes and cancels handed to WorkingOrders."""
        out = []
        for intent in intents:
            if self._expired_entry(strategy, intent, now_ns):
                continue
            if isinstance(intent, OrderChange):
                self.orders.ask(strategy, intent)
                continue
            if isinstance(intent, OrderCancel):
                self.orders.cancel(strategy, intent)
                continue
            inst = self.instruments.get(intent.token)
            try:
                signal = trading_pb2.Signal(
                    strategy=strategy.name, token=intent.token,
                    exchange_segment=inst.exchange_segment if inst is not None else "",
                    symbol=inst.symbol if inst is not None else "", side=intent.side, quantity=intent.quantity,
                    order_type=intent.order_type, limit_price_paise=intent.limit_price_paise, product=intent.product,
                    reason=intent.reason, ts_ns=self.clock.now_ns(), tick_recv_ns=recv_ns)
            except (TypeError, ValueError):  # a plugin's malformed intent (a float quantity): dropped, said once
                _failed(strategy, "with an intent that is no signal", getattr(intent, "token", 0))
                continue
            signal.signal_id = self._signal_id(strategy.name, intent, at_ns)
            out.append(signal)
            strategy.mark_sent(intent, now_ns, signal.signal_id)
        return out

    def _expired_entry(self, strategy: Strategy, decision: Decision, now_ns: int) -> bool:
        """Whether `decision` opens or grows a position (not _shrinks) in a contract whose last session has closed
        (shared.instruments.expired): risk would refuse it (CONTRACT_EXPIRED), so it is not sent, said once per
        strategy and token. Exits of what is held there still go. Asked only of decisions, never per tick or candle,
        and the contract's end is worked out once per token."""
        ends = self._trading_ends.get(decision.token)
        if ends is None:
            inst = self.instruments.get(decision.token)
            ends = self._trading_ends[decision.token] = trading_ends_ns(inst) if inst is not None else 0
        if not ends or now_ns < ends or _shrinks(strategy, decision):
            return False
        if (strategy.name, decision.token) not in self._expiry_told:
            self._expiry_told.add((strategy.name, decision.token))
            inst = self.instruments.get(decision.token)
            log.warning("an entry in an expired contract skipped", extra={
                "strategy": strategy.name, "token": decision.token,
                "reason": expired_reason(inst) if inst is not None else ""})
        return True

    def _signal_id(self, name: str, intent: OrderIntent, at_ns: int) -> str:
        """name-token-time-side: deterministic, so a replay of the same data gives the same ids (and risk's client
        order ids, the orders' idempotency keys). A candle's time is its minute, a tick's its own. SFeed stamps ticks
        in whole seconds, and a tick at a minute's first second has that minute's time: a second and later signal
        with an id issued already (one tick time, or a stop's exit at hh:mm:00 and the hh:mm candle's signal) gets
        -2, -3, ... (otherwise they would share an id and risk would reject them as DUPLICATE_ORDER)."""
        base = f"{name}-{intent.token}-{at_ns}-{_SIDE_NAMES.get(intent.side, str(intent.side))}"
        issued = self._ids_issued.setdefault((name, intent.token), {})
        count = issued.pop(base, 0) + 1
        issued[base] = count  # the latest last: the oldest go first
        if len(issued) > ISSUED_IDS_KEPT:
            del issued[next(iter(issued))]
        return base if count == 1 else f"{base}-{count}"

    def on_order_update(self, update: trading_pb2.OrderUpdate) -> None:
        """Hand an order update to the strategy it belongs to (strategy_tag); repeats are dropped."""
        if update.sequence:
            if update.sequence <= self._last_update_sequence:
                return
            self._last_update_sequence = update.sequence
        strategy = self.strategies.get(update.request.strategy_tag)
        if strategy is not None:
            self.orders.track(update, self.clock.now_ns())
            strategy.on_order_update(update)
            key = (strategy.name, update.request.token)
            if update.last_fill_quantity:
                self._holds.pop(key, None)
            elif (update.status in _ENDED_UNFILLED and not update.filled_quantity and update.request.signal_id
                  and update.request.signal_id == self._level_signals.get(key)
                  and not self._refused(strategy, update.request.token)):
                # What a level decided ended with nothing done (the broker refused it, or cancelled it), no stop
                # due: as after risk's refusal, it goes again at the token's next close, not at the next tick past
                # its level, and the next (a new order each time). A position's stop is watched meanwhile.
                if strategy.position(update.request.token):
                    self._watch(strategy, update.request.token, stop_only=True)
                return
            self._watch(strategy, update.request.token)
        elif update.request.strategy_tag == SQUAREOFF_TAG and update.last_fill_quantity:
            self._closed_by_platform(update)

    def load_orders(self, orders: list[trading_pb2.OrderUpdate], keep_order: bool = False) -> int:
        """After a restart: the OMS's orders (their latest rows, any status; restore.py chooses them) give each
        strategy back its positions and its working orders, applied by sequence (or as listed, keep_order);
        updates at or below their sequences that arrive afterwards change nothing; every order's signal id counts as
        issued (_issued_before), whatever its status. Returns how many were applied."""
        applied = 0
        for order in orders if keep_order else sorted(orders, key=lambda u: u.sequence):
            self._issued_before(order)
            if not order.filled_quantity and order.status in TERMINAL and not outcome_unknown(order):
                continue  # nothing to restore (one given up with its outcome unknown still blocks its token)
            update = trading_pb2.OrderUpdate()
            update.CopyFrom(order)
            update.last_fill_quantity = order.filled_quantity  # its fills so far, as one, at their average price
            update.last_fill_price_paise = order.average_price_paise
            update.sequence = 0  # applied whatever the order of the list
            self.on_order_update(update)
            applied += 1
        self._last_update_sequence = max([self._last_update_sequence, *(u.sequence for u in orders)])
        return applied

    def _issued_before(self, order: trading_pb2.OrderUpdate) -> None:
        """A restored order's signal id counts as issued (_signal_id): a signal decided again after the restart at a
        tick of the same time (SFeed's whole seconds, a quote repeating the last trade's) gets the next suffix, not
        the id of an order the OMS holds, which risk would refuse as DUPLICATE_ORDER (and the token would wait)."""
        name, signal_id = order.request.strategy_tag, order.request.signal_id
        if name not in self.strategies or not signal_id:
            return
        base, count = signal_id, 1
        stem, _, suffix = signal_id.rpartition("-")
        if suffix.isdigit() and stem.endswith(tuple(f"-{side}" for side in _SIDE_NAMES.values())):
            base, count = stem, int(suffix)  # a repeat's: base-2, base-3, ...
        issued = self._ids_issued.setdefault((name, order.request.token), {})
        count = max(count, issued.pop(base, 0))
        issued[base] = count  # the latest last, as _signal_id keeps them
        if len(issued) > ISSUED_IDS_KEPT:
            del issued[next(iter(issued))]

    def since_entries(self) -> dict[str, dict[int, int]]:
        """Each strategy's Strategy.since_entries(), those with any."""
        out = {}
        for name, strategy in self.strategies.items():
            try:
                since = strategy.since_entries()
            except Exception:
                _failed(strategy, "naming its entries' times")
                continue
            if since:
                out[name] = since
        return out

    def restore_extremes(self, name: str, token: int, high: int, low: int) -> None:
        """After a restart: the highest and lowest price of `token` since the entry of strategy `name`'s position
        there (Strategy.since_entries), and the levels it watches with them."""
        strategy = self.strategies[name]
        try:
            strategy.restore_extremes(token, high, low)
        except Exception:
            _failed(strategy, "restoring its best prices", token)
        self._watch(strategy, token)

    def _closed_by_platform(self, update: trading_pb2.OrderUpdate) -> None:
        """A square-off fill closes the strategies' positions it is against (a buy closes shorts, a sell longs) of
        its product (a square-off of the user's CNC holding closes no MIS position), in configuration order:
        otherwise a strategy would still hold what was closed for it, and its next exit signal would open the
        opposite position."""
        left, token, product = update.last_fill_quantity, update.request.token, update.request.product
        closing_long = update.request.side == trading_pb2.SIDE_SELL
        for strategy in self.strategies.values():
            if left <= 0:
                return
            held = strategy.position_in(token, product)
            if (held > 0) == closing_long and held != 0:
                taken = strategy.closed_by_platform(token, left, product)
                left -= taken
                share = trading_pb2.OrderUpdate()
                share.CopyFrom(update)
                share.last_fill_quantity = taken
                share.last_fill_charges_paise = 0  # the square-off's, not the strategy's own fills'
                strategy.book_fill(share)
                self._watch(strategy, token)

    def loss_turn(self, now_ns: int) -> LossTurn:
        """The strategies with a max_daily_loss: one whose day's P&L (day_pnl, at the candle builder's last prices)
        fell to minus that or under is stopped, once a day: paused (by NeoPulse, saying why) and closed out. Closing
        out goes on at each turn until it is flat: its working orders are cancelled (again after CANCEL_AGAIN_NS),
        and each position with no order of its working is sent a MARKET exit (again after CLOSE_AGAIN_NS, should
        that one be refused). The stop holds for its IST day: the first turn of a later day lifts it (loss_limit.py),
        once its close-out is done."""
        out = LossTurn()
        today = ist_day_number(now_ns)
        for strategy in self.strategies.values():
            if strategy.name not in self._closing and self.loss_stops.lift_due(strategy, today):
                out.new_day.append((strategy.name, self.loss_stops.lift(strategy)))
            if not strategy.max_daily_loss_paise:
                continue
            if strategy.loss_stopped_day != today and strategy.name not in self._closing:
                pnl = strategy.day_pnl(now_ns, self._last_price)
                if pnl > -strategy.max_daily_loss_paise:
                    continue
                strategy.loss_stopped_day = today
                self._closing.add(strategy.name)
                text = (f"{LOSS_STOPPED} {fmt_inr(strategy.max_daily_loss_paise)} reached ({fmt_inr(pnl)} today): "
                        "its working orders are cancelled and its positions closed at the market")
                under = Pause.of(strategy) if strategy.paused else None
                self.set_paused(strategy.name, True, text, by=strategy_pb2.PAUSED_BY_NEOPULSE, replace=True)
                self.loss_stops.stopped(strategy.name, under)
                out.stopped.append((strategy.name, text))
            if strategy.name in self._closing:
                self._close_out(strategy, now_ns, out)
        return out

    def end_close_out(self, name: str) -> bool:
        """Stop the daily-loss close-out of a strategy whose positions could not be restored exactly (NOT_RESTORED):
        its market exits would be sized from positions it cannot trust (an exit larger than what is held opens the
        other side). True when one was under way: its positions are the trader's to close."""
        closing = name in self._closing
        self._closing.discard(name)
        return closing

    def _close_out(self, strategy: Strategy, now_ns: int, out: LossTurn) -> None:
        working = strategy.working_orders()
        for order in working:
            if now_ns >= self._cancel_after.get((strategy.name, order.order_id), 0):
                self._cancel_after[strategy.name, order.order_id] = now_ns + CANCEL_AGAIN_NS
                out.cancels.append(order.order_id)
        exits = []
        for (token, product), held in strategy.positions().items():
            key = (strategy.name, token, product)
            # A token with an order of its working (being cancelled) or a signal under way is pending.
            if not held or strategy.is_pending(token, now_ns) or now_ns < self._close_after.get(key, 0):
                continue
            self._close_after[key] = now_ns + CLOSE_AGAIN_NS
            exits.append(OrderIntent(token, exit_side(held), abs(held),
                                     trading_pb2.ORDER_TYPE_MARKET, 0, cast("trading_pb2.Product", product),
                                     f"close-out: {strategy.pause_reason}"[:200]))
        if exits:
            out.signals.extend(self._emit(strategy, exits, now_ns, 0, now_ns))
        if not working and not any(strategy.positions().values()):
            self._closing.discard(strategy.name)  # flat: its retry times go with it
            out.finished.append(strategy.name)
            for order_key in [k for k in self._cancel_after if k[0] == strategy.name]:
                del self._cancel_after[order_key]
            for key in [k for k in self._close_after if k[0] == strategy.name]:
                del self._close_after[key]

    def _last_price(self, token: int) -> int:
        tick = self.candles.last_tick(token)
        return tick.ltp_paise if tick is not None else 0

    def on_decision(self, decision: trading_pb2.RiskDecision) -> None:
        """Risk's answer to a signal of ours: a rejection frees its token (otherwise it waits for the pending
        expiry); an acceptance keeps it blocked until the order's terminal update, however late that comes."""
        strategy = self.strategies.get(decision.strategy)
        if strategy is None or not decision.order.token:
            return
        token = decision.order.token
        if decision.accepted:
            strategy.on_accepted(token, decision.signal_id)
        elif decision.reason_code != "DUPLICATE_ORDER":  # a duplicate's original is live
            strategy.on_rejected(token, decision.signal_id)
            if decision.signal_id and decision.signal_id == self._level_signals.get((strategy.name, token)):
                if self._refused(strategy, token):
                    self._watch(strategy, token)
                elif strategy.position(token):
                    self._watch(strategy, token, stop_only=True)

    def level_refused(self, name: str, token: int) -> None:
        """The OMS refused a change or cancel a strategy asked for: if a price level decided it for a stop (the
        token is not watched for the strategy since), the token is watched again, after the wait of _refused."""
        strategy = self.strategies.get(name)
        if strategy is not None and (name, token) in self._reached and self._refused(strategy, token):
            self._watch(strategy, token)

    def _refused(self, strategy: Strategy, token: int) -> bool:
        """What a level decided was refused: with a stop due (Strategy.due_stop), the token's ticks count again from
        LEVEL_RETRY_NS after its last tick, twice as long after each refusal in a row (up to LEVEL_RETRY_MOST_NS),
        until a fill. False (nothing done) without one."""
        if not strategy.due_stop(token):
            return False
        key = (strategy.name, token)
        held = self._holds.get(key)
        wait = min(held[1] * 2, LEVEL_RETRY_MOST_NS) if held is not None else LEVEL_RETRY_NS
        last = self.candles.last_tick(token)
        self._holds[key] = ((last.ts_ns if last is not None else 0) + wait, wait)
        return True

    # -- control -----------------------------------------------------------------
    def get(self, name: str) -> Strategy:
        if not name:
            raise InvalidInput("name", "is required; ListStrategies shows the configured strategies")
        strategy = self.strategies.get(name)
        if strategy is None:
            known = ", ".join(self.strategies) or "none"
            raise NotFound(f"no strategy named {name!r}; configured: {known}")
        return strategy

    def set_paused(self, name: str, paused: bool, reason: str = "",
                   by: strategy_pb2.PausedBy = strategy_pb2.PAUSED_BY_OPERATOR, replace: bool = False) -> Strategy:
        """Pause, saying why, by whom and when (ListStrategies shows it), or resume, which clears that. Pausing a
        paused strategy keeps the first reason: NeoPulse's "positions not restored" stays true whoever pauses it
        again; unless `replace` (the loss limit's stop, which closes out what it holds, says more than any earlier
        pause). A pause under a loss stop, earlier or asked for while it holds, comes back when a new day lifts the
        stop (loss_limit.LossStops). A resume of a paused strategy also releases its tokens blocked by orders of
        unknown outcome (Strategy.release_unknown): the operator's way out once the broker's order book is checked."""
        strategy = self.get(name)
        if paused == strategy.paused and not (paused and replace):
            if paused:
                self.loss_stops.paused_over(strategy, Pause(reason or OPERATOR_PAUSE, by, self.clock.now_ns()))
            return strategy
        self.loss_stops.forget(name)
        if not paused:
            strategy.release_unknown()
            self._closing.discard(name)  # a close-out for its loss limit ends: the operator resumed it
        strategy.paused = paused
        strategy.pause_reason = (reason or OPERATOR_PAUSE) if paused else ""
        strategy.paused_by = by if paused else strategy_pb2.PAUSED_BY_UNSPECIFIED
        strategy.paused_at_ns = self.clock.now_ns() if paused else 0
        return strategy

    def set_params(self, name: str, changes: dict[str, str]) -> tuple[Strategy, list[trading_pb2.Signal]]:
        """Validate the whole new parameter set, then apply it at once (nothing changes on error); returns the
        strategy and the exit signals the new params call for now (_exits_due). `max_daily_loss` (rupees) is the
        engine's, not the plugin's: it sets the strategy's loss limit (loss_turn)."""
        strategy = self.get(name)
        if not changes:
            raise InvalidInput("params", "no parameters given; pass at least one name=value")
        given, changes = dict(changes), dict(changes)
        limit = strategy.max_daily_loss_paise
        if LOSS_LIMIT in changes:
            try:
                limit = to_paise(_RUPEES.validate_python(changes.pop(LOSS_LIMIT)))
            except ValidationError as exc:
                raise InvalidInput(f"params.{LOSS_LIMIT}", f"{exc.errors()[0]['msg']} (rupees, 0: off)") from None
        fields = type(strategy.params).model_fields
        for key in changes:
            if key not in fields:
                raise InvalidInput(f"params.{key}", f"unknown parameter for {strategy.kind}; "
                                   f"known: {', '.join([*fields, LOSS_LIMIT])}")
        merged = {**strategy.params.model_dump(), **changes}
        try:
            params = strategy_class(strategy.kind).Params.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"params.{loc}" if loc else "params", err["msg"]) from None
        unknown = unknown_indices(type(strategy).indices_of(params), self.instruments)
        if unknown:
            raise InvalidInput("params", unknown)
        strategy.max_daily_loss_paise = limit
        strategy.apply_params(params)
        config, kept = self._config_params.get(name, {}), self._overrides.setdefault(name, {})
        for key, value in given.items():
            kept[key] = (value, config.get(key, ""))
        self._watch_all(strategy)
        return strategy, self._exits_due(strategy)

    def durable_state(self, name: str) -> dict[str, Any]:
        """What of strategy `name` outlives a restart (services/strategy/state.py), JSON-ready: its pause, the params
        changed at run time (each with the config's value it replaced), the day its loss limit stopped it and
        whether the close-out that followed goes on, and the plugin's own (Strategy.saved: ORB's opening ranges)."""
        strategy = self.get(name)
        return {"paused": strategy.paused, "paused_by": strategy_pb2.PausedBy.Name(strategy.paused_by),
                "pause_reason": strategy.pause_reason, "paused_at_ns": strategy.paused_at_ns,
                "loss_stopped_day": strategy.loss_stopped_day, "closing": name in self._closing,
                "under_loss_stop": self.loss_stops.saved(strategy),
                "params": {key: {"value": value, "config": config}
                           for key, (value, config) in self._overrides.get(name, {}).items()},
                "plugin": strategy.saved()}

    def restore_state(self, name: str, saved: dict[str, Any], now_ns: int) -> Restored:
        """At start, before the warm-up: put back what durable_state saved of strategy `name`.
        - The params changed at run time, all at once (as SetStrategyParams), but not one whose config value has
          changed since (the config file edited after: its value holds). Not valid with this config (a bound
          changed), none is applied and the strategy starts paused by NeoPulse, saying which.
        - A pause, with its reason, who and when.
        - Today's loss-limit stop: a strategy the operator resumed after it is not stopped again today; one still
          paused by it goes on closing out. An earlier day's stop is lifted at the first loss_turn.
        - The plugin's own saved state (Strategy.restore_saved), after the params.
        A malformed saved state (an older version, a hand edit) restores what it can and says what it could not."""
        strategy = self.get(name)
        out = Restored()
        params = saved.get("params")
        if isinstance(params, dict):
            config = self._config_params.get(name, {})
            apply = {}
            for key, entry in sorted(params.items()):
                if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
                    out.dropped[key] = "not understood"
                elif config.get(key) != entry.get("config"):
                    out.dropped[key] = f"the config's value changed since (was {entry.get('config')!r}, now " \
                                       f"{config.get(key)!r}): the config's holds"
                else:
                    apply[key] = entry["value"]
            if apply:
                try:
                    self.set_params(name, apply)
                    out.params = apply
                except (InvalidInput, NotFound) as exc:
                    said = ", ".join(f"{k}={v}" for k, v in apply.items())
                    out.invalid = f"its parameters changed at run time ({said}) are not valid now: {exc}"
        today = ist_day_number(now_ns)
        if saved.get("loss_stopped_day") == today:
            strategy.loss_stopped_day = today
        if saved.get("paused") is True:
            by = saved.get("paused_by")
            who = strategy_pb2.PausedBy.Value(by) if by in strategy_pb2.PausedBy.keys() \
                else strategy_pb2.PAUSED_BY_OPERATOR
            self.set_paused(name, True, str(saved.get("pause_reason") or ""), by=who)
            if isinstance(saved.get("paused_at_ns"), int) and saved["paused_at_ns"]:
                strategy.paused_at_ns = saved["paused_at_ns"]
            out.paused = True
            # A close-out under way goes on, of an earlier day's stop too: the stop is lifted only once it is done
            # (a refused exit of a carried position must not be left open because the process restarted).
            if saved.get("closing") is True and (strategy.loss_stopped_day == today or loss_stopped(strategy)):
                self._closing.add(name)
            self.loss_stops.restore(strategy, saved.get("under_loss_stop"))
        if out.invalid:
            self.set_paused(name, True, out.invalid, by=strategy_pb2.PAUSED_BY_NEOPULSE)
        plugin = saved.get("plugin")
        if isinstance(plugin, dict):
            try:
                strategy.restore_saved(plugin, now_ns)
            except Exception:
                _failed(strategy, "restoring its saved state")
        return out

    def unguarded(self) -> dict[str, list[int]]:
        """Each strategy's held tokens whose stop it cannot tell (Strategy.unguarded), those with any."""
        out, now = {}, self.clock.now_ns()
        for name, strategy in self.strategies.items():
            try:
                tokens = strategy.unguarded(now)
            except Exception:
                _failed(strategy, "naming its positions without a stop")
                continue
            if tokens:
                out[name] = tokens
        return out

    def exits_due(self) -> list[trading_pb2.Signal]:
        """At start, once the strategies are warm and their positions restored: the exits due now, of every
        strategy but those paused to send nothing (sends_nothing), rather than at each token's next candle."""
        return [signal for strategy in self.strategies.values() for signal in self._exits_due(strategy)]

    def _exits_due(self, strategy: Strategy) -> list[trading_pb2.Signal]:
        """A re-parametrised strategy (its indicators warmed up again after a period change) checks its exits at
        once: a position whose exit the new params call for is not left for the token's next candle. Only intents
        that close part or all of a position go out (a cross in the replayed closes is no entry now)."""
        now = self.clock.now_ns()
        self._ctx.now_ns = now
        try:
            intents = strategy.exits_due(self._ctx)
        except Exception:
            _failed(strategy, "checking its exits")
            return []
        finally:
            self._take_blocked_stops()
        exits = [i for i in intents if 0 < i.quantity <= _closable(strategy, i)]
        if not exits or sends_nothing(strategy):
            return []
        return self._emit(strategy, exits, now, 0, now)

    def info(self, strategy: Strategy) -> strategy_pb2.StrategyInfo:
        now = self.clock.now_ns()
        return strategy_pb2.StrategyInfo(name=strategy.name, kind=strategy.kind, paused=strategy.paused,
                                         params=_params_text(strategy), tokens=sorted(strategy.tokens),
                                         signals_emitted=strategy.signals_emitted,
                                         pause_reason=strategy.pause_reason, paused_by=strategy.paused_by,
                                         paused_at_ns=strategy.paused_at_ns,
                                         day_pnl_paise=strategy.day_pnl(now, self._last_price),
                                         max_daily_loss_paise=strategy.max_daily_loss_paise,
                                         positions=self._positions_of(strategy, now))

    def _positions_of(self, strategy: Strategy, now_ns: int) -> list[strategy_pb2.StrategyPosition]:
        out = []
        for (token, product), held in sorted(strategy.positions().items()):
            if not held:
                continue
            try:
                stop, target = strategy.exit_prices(token, now_ns)
            except Exception:
                _failed(strategy, "giving its exit prices", token)
                stop = target = 0
            inst = self.instruments.get(token)
            out.append(strategy_pb2.StrategyPosition(
                token=token, symbol=inst.symbol if inst is not None else "",
                product=cast("trading_pb2.Product", product), net_quantity=held,
                entry_price_paise=strategy.entry_price(token, product), stop_paise=stop, target_paise=target,
                stop_reached=bool(strategy.due_stop(token))))
        return out


def _from_first_reached(ticks: Any, reached: list[market_pb2.Tick]) -> list[market_pb2.Tick]:
    """Each token's ticks of the batch from the first that reached a watched level on (none older than it), in
    order: the candle builder picked the batch's ticks out against the levels as they were before it, and a level
    that moves at one of them (a trailing stop's new best) is to be checked against those after it. _run_levels
    checks each against the levels as they are then."""
    first: dict[int, market_pb2.Tick] = {}
    for tick in reached:
        first.setdefault(tick.token, tick)
    started: set[int] = set()
    out = []
    for tick in ticks:
        start = first.get(tick.token)
        if start is None:
            continue
        if tick.token not in started:
            if tick is not start and tick != start:  # `is`: the same wrapper; `!=`: a copy of the batch's tick
                continue
            started.add(tick.token)
        elif tick.ts_ns < start.ts_ns:
            continue
        out.append(tick)
    return out


def _late_exit(strategy: Strategy, tick: market_pb2.Tick) -> bool:
    """A tick of a minute gone by (out of its candle) is a trade that happened: it may reach a held position's stop,
    when it is no older than the position's entry (a second's slack: trade times are whole seconds). It never enters
    (a range's breakout from a tick that belongs inside the range's minutes), nor exits on a price from before the
    position was there."""
    if strategy.position(tick.token) == 0:
        return False
    entered = strategy.entered_at(tick.token)
    return not entered or tick.ts_ns >= entered - NS


def _failed(strategy: Strategy, what: str, token: int = 0) -> None:
    """A plugin raised: counted and logged with its traceback; never fatal to the candles or the other strategies."""
    PLUGIN_ERRORS.labels(strategy.name).inc()
    log.exception("strategy failed %s", what, extra={"strategy": strategy.name, "token": token})


def sends_nothing(strategy: Strategy) -> bool:
    """Paused so that nothing of the plugin's goes out, its stops and exits included: by NeoPulse, because its
    positions could not be restored exactly (what it holds is not what it thinks: an exit could open a position) or
    because its loss limit stopped it (the close-out sends its exits: loss_turn). Any other pause (the operator's,
    NeoPulse's for run-time params no longer valid) holds back only what opens or adds to a position."""
    return (strategy.paused and strategy.paused_by == strategy_pb2.PAUSED_BY_NEOPULSE
            and strategy.pause_reason.startswith((NOT_RESTORED, LOSS_STOPPED)))


def _shrinks(strategy: Strategy, decision: Decision) -> bool:
    """Whether a decision can only close or shrink the strategy's position: a cancel; a change of a working order
    against the position (an exit) that leaves no more of it to fill than is held; an intent no bigger than what it
    closes."""
    if isinstance(decision, OrderCancel):
        return True
    if isinstance(decision, OrderChange):
        held, working = strategy.position(decision.token), strategy.working_order(decision.token)
        if not held or working is None or working.side != exit_side(held):
            return False
        return not decision.quantity or decision.quantity - working.filled_quantity <= abs(held)
    return 0 < decision.quantity <= _closable(strategy, decision)


def _closable(strategy: Strategy, intent: OrderIntent) -> int:
    """How much of the strategy's position in the intent's token and product the intent's side closes."""
    held = strategy.position_in(intent.token, intent.product)
    return held if intent.side == trading_pb2.SIDE_SELL else -held


def _params_text(strategy: Strategy) -> dict[str, str]:
    """The strategy's params as ListStrategies shows them and SetStrategyParams takes them, its loss limit included."""
    params = {k: _param_text(v) for k, v in strategy.params.model_dump().items()}
    params[LOSS_LIMIT] = str(Decimal(strategy.max_daily_loss_paise) / 100)
    return params


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
