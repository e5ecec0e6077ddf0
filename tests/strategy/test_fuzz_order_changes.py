"""Seeded fuzz of the strategy engine's order changes: a plugin asking random changes of its working orders at random
candles, among random order updates (working, MODIFY_PENDING, terminal, other orders of the token), the OMS's
answers (change_sent) coming late or not yet, pauses. Checked against a model of what may go out:

- a change goes only for the strategy's latest working order in the token, never while one of it is in flight (sent
  and not answered) or pending at the broker (its last update MODIFY_PENDING), never for an ended order;
- only the terms that differ from the order's, and at least one;
- none from a paused strategy, none for an order changed by hand (a trader's change: the mark stays);
- the order's `changes` counts the changes that went out for it on top of the OMS's count (changes_sent: a
  trader's changes too, and those from before a restart) as its updates bring it.

One test id per seed; SEEDS widens the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

import pytest
from pydantic import BaseModel, ConfigDict

from services.strategy.engine import StrategyEngine
from services.strategy.plugins import Decision, OrderChange, Strategy, StrategyContext
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments

SEEDS = range(300)
T0915 = ist_ns(date(2026, 1, 20), 9, 15)
TOKENS = (3045, 11536)  # SBIN, TCS
WORKING = (t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED, t.ORDER_STATUS_OPEN,
           t.ORDER_STATUS_PARTIALLY_FILLED, t.ORDER_STATUS_TRIGGER_PENDING)
ENDED = (t.ORDER_STATUS_TRADED, t.ORDER_STATUS_CANCELLED, t.ORDER_STATUS_REJECTED)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Asker(Strategy):
    """Returns whatever the test put in `asks` for the candle's token."""

    kind = "FUZZ_ASKER"
    Params = NoParams

    def reset(self) -> None:
        self.asks: dict[int, list[Decision]] = {}

    def on_candle(self, candle: market_pb2.Candle, ctx: StrategyContext) -> list[Decision]:
        return self.asks.pop(candle.token, [])


@dataclass
class Order:
    token: int
    terms: tuple[int, int, int]
    filled: int = 0
    status: int = t.ORDER_STATUS_OPEN
    changes_sent: int = 0  # the OMS's count, as its updates carry it
    by_hand: bool = False


@dataclass
class Model:
    orders: dict[str, Order] = field(default_factory=dict)
    latest: dict[int, str] = field(default_factory=dict)  # token -> the order id of its latest update, while it works
    in_flight: set[str] = field(default_factory=set)
    # order id -> its changes: the highest changes_sent its updates brought, and one more each change that went out
    changes: dict[str, int] = field(default_factory=dict)
    by_hand: dict[str, bool] = field(default_factory=dict)  # order id -> an update given has said changed by hand


def update(order_id: str, o: Order) -> t.OrderUpdate:
    quantity, price, trigger = o.terms
    return t.OrderUpdate(client_order_id=order_id, status=o.status, filled_quantity=o.filled,
                         changes_sent=o.changes_sent, changed_by_hand=o.by_hand, request=t.OrderRequest(
        client_order_id=order_id, token=o.token, side=t.SIDE_BUY, quantity=quantity,
        order_type=t.ORDER_TYPE_STOP_LIMIT, price_paise=price, trigger_price_paise=trigger, strategy_tag="fz"))


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
def test_changes_go_only_for_a_working_order_one_at_a_time_with_the_terms_that_differ(seed):
    rng = random.Random(seed)
    plugin = Asker("fz", NoParams(), frozenset(TOKENS))
    engine = StrategyEngine([plugin], InstrumentBook(nse_instruments()), ManualClock(T0915))
    model, minute, ids = Model(), 0, 0

    def terms() -> tuple[int, int, int]:
        return rng.choice((5, 10, 20)), rng.choice((100_00, 101_00, 102_00)), rng.choice((0, 99_00, 98_00))

    for _ in range(rng.randint(20, 120)):
        roll = rng.random()
        if roll < 0.25:  # a new order of a token, or an update of one already known
            if not model.orders or rng.random() < 0.3:
                ids += 1
                order_id = f"o-{ids}"
                model.orders[order_id] = Order(rng.choice(TOKENS), terms())
            else:
                order_id = rng.choice(list(model.orders))
            o = model.orders[order_id]
            if o.status in ENDED:
                continue  # an order that ended stays ended
            o.status = rng.choice((*WORKING, t.ORDER_STATUS_MODIFY_PENDING, *ENDED))
            if rng.random() < 0.3:
                o.terms = terms()  # a change made, or the broker's own report
            if rng.random() < 0.1:  # a trader's change (or Kotak's app), or the count from before a restart
                o.changes_sent += rng.randint(0, 2)
                o.by_hand = o.by_hand or rng.random() < 0.7
            o.filled = min(o.terms[0] - 1, o.filled + rng.randint(0, 2)) if o.status not in ENDED else o.filled
            engine.on_order_update(update(order_id, o))
            model.changes[order_id] = max(model.changes.get(order_id, 0), o.changes_sent)
            model.by_hand[order_id] = o.by_hand
            if o.status in ENDED:
                if model.latest.get(o.token) == order_id:
                    del model.latest[o.token]
            else:
                model.latest[o.token] = order_id
        elif roll < 0.35 and model.in_flight:  # the OMS answers a change
            order_id = rng.choice(sorted(model.in_flight))
            model.in_flight.discard(order_id)
            engine.orders.change_sent(order_id)
            if rng.random() < 0.7:  # written ahead: the OMS counts it in its next update of the order
                model.orders[order_id].changes_sent += 1
        elif roll < 0.40:
            plugin.paused = not plugin.paused
        else:  # a candle: the plugin asks changes of its tokens
            token = rng.choice(TOKENS)
            quantity, price, trigger = terms()
            asked = OrderChange(token, **{k: v for k, v in (
                ("quantity", quantity), ("limit_price_paise", price), ("trigger_price_paise", trigger))
                if rng.random() < 0.6})
            plugin.asks[token] = [asked]
            minute += 1
            engine.on_closed([(market_pb2.Candle(token=token, start_ns=T0915 + minute * 60 * NS), 0)])
            went = engine.orders.take_changes()
            order_id = model.latest.get(token)
            o = model.orders.get(order_id) if order_id else None
            allowed = (o is not None and not plugin.paused and o.status != t.ORDER_STATUS_MODIFY_PENDING
                       and order_id not in model.in_flight and not model.by_hand.get(order_id, False))
            if not went:
                differ = o is not None and any(new and new != old for new, old in zip(
                    (asked.quantity, asked.limit_price_paise, asked.trigger_price_paise), o.terms, strict=True))
                assert not (allowed and differ), (seed, "a change that may go did not", asked, o)
                continue
            (change,) = went
            assert allowed, (seed, "a change went that may not", change, o, plugin.paused, model.in_flight)
            assert o is not None and change.request.order_id == order_id
            r = change.request
            sent = (r.quantity, r.price_paise, r.trigger_price_paise)
            assert any(sent), seed
            for new, old, wanted in zip(sent, o.terms, (asked.quantity, asked.limit_price_paise,
                                                        asked.trigger_price_paise), strict=True):
                assert new == (wanted if wanted and wanted != old else 0), (seed, sent, o.terms, asked)
            model.in_flight.add(order_id)
            model.changes[order_id] = model.changes.get(order_id, 0) + 1
        for token in TOKENS:  # the plugin's view matches the model's
            view, order_id = plugin.working_order(token), model.latest.get(token)
            assert (view.order_id if view else None) == order_id, seed
            if view is not None:
                assert view.changes == model.changes.get(order_id, 0), (seed, view, model.changes)
                assert view.changed_by_hand == model.by_hand.get(order_id, False), (seed, view)
