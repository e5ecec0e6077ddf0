"""A working order's changed terms reach the chats once, as "Order modified: qty 10 → 20, ..."; the updates of a change
still pending, refused, or that move only the status, a fill or the exchange id along say nothing of terms."""

from __future__ import annotations

from services.notifier.module import NotifierModule
from services.notifier.terms_watch import TermsWatch
from shared.bus import Bus, Topic
from shared.contracts import ops_pb2, trading_pb2
from tests.helpers import eventually
from tests.notifier.conftest import CHAT, settings_for, started
from tests.notifier.fake_bot_api import FakeBotApi

S = trading_pb2
MARKER = "marker"


def update(status: int, previous: int, qty: int = 10, price: int = 150_000, trigger: int = 0, iid: str = "o-1",
           **extra: object) -> trading_pb2.OrderUpdate:
    request = S.OrderRequest(symbol="INFY-EQ", token=1594, side=S.SIDE_BUY, quantity=qty, price_paise=price,
                             trigger_price_paise=trigger, order_type=S.ORDER_TYPE_LIMIT, strategy_tag="MANUAL",
                             client_order_id=f"c-{iid}")
    return S.OrderUpdate(internal_id=iid, client_order_id=f"c-{iid}", status=status, previous_status=previous,
                         request=request, **extra)


PLACED = [update(S.ORDER_STATUS_PENDING_NEW, S.ORDER_STATUS_UNSPECIFIED),
          update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_PENDING_NEW, exchange_order_id="NSE-1")]


async def told(bus: Bus, fake_api: FakeBotApi, *updates: trading_pb2.OrderUpdate) -> list[str]:
    """The notification blocks the chat got for `updates` (published in order), up to a marker published after them."""
    for u in updates:
        await bus.publish(Topic.ORDER_UPDATES, u)
    await bus.publish(Topic.NOTIFICATIONS, ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_FEED, title=MARKER))
    await eventually(lambda: any(MARKER in m["text"] for m in fake_api.sent(chat_id=CHAT)))
    blocks = [b for m in fake_api.sent(chat_id=CHAT) for b in m["text"].split("\n\n")]
    return blocks[:-1]


async def test_a_change_the_broker_took_is_told_once_with_the_terms_before_and_after(notifier, fake_api, bus):
    blocks = await told(bus, fake_api, *PLACED,
                        update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, qty=20, price=150_150),
                        update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_MODIFY_PENDING, qty=20, price=150_150))

    assert blocks == ["⚙️ <b>Order modified</b>\nBUY INFY-EQ: qty 10 → 20, price ₹1,500.00 → ₹1,501.50 [MANUAL]"]


def strategys(u: trading_pb2.OrderUpdate) -> trading_pb2.OrderUpdate:
    u.request.strategy_tag, u.request.signal_id = "momentum_rsi", "momentum_rsi-1594-1-BUY"
    return u


REPRICED = [strategys(u) for u in (*PLACED, update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, price=150_150),
                                    update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_MODIFY_PENDING, price=150_150))]


async def test_a_strategys_order_changed_is_logged_not_sent_unless_configured(notifier, fake_api, bus, caplog):
    """A strategy repricing its orders (MOMENTUM_RSI's max_reprices) would send a message each."""
    assert await told(bus, fake_api, *REPRICED) == []
    (logged,) = [r for r in caplog.records if getattr(r, "title", "") == "Order modified"]
    assert (logged.telegram, logged.previous_price_paise, logged.price_paise) == (False, "150000", "150150")


async def test_a_strategys_order_changed_is_sent_with_strategy_order_changes_on(bus, standins, fake_api, clock):
    async for _ in started(NotifierModule(bus, settings_for(fake_api, strategy_order_changes=True), clock)):
        blocks = await told(bus, fake_api, *REPRICED)

    assert blocks == ["⚙️ <b>Order modified</b>\nBUY INFY-EQ: price ₹1,500.00 → ₹1,501.50 [momentum_rsi]"]


async def test_a_traders_change_of_a_strategys_order_is_sent_and_says_the_strategy_leaves_it(notifier, fake_api, bus):
    """By hand (a gRPC client, or Telegram): not the strategy's routine repricing, so it is sent with the default
    strategy_order_changes = false."""
    by_hand = [strategys(u) for u in (
        update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, price=150_150, changes_sent=1, changed_by_hand=True),
        update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_MODIFY_PENDING, price=150_150, changes_sent=1,
               changed_by_hand=True))]

    blocks = await told(bus, fake_api, *REPRICED[:2], *by_hand)

    assert blocks == ["⚙️ <b>Order modified</b>\nBUY INFY-EQ: price ₹1,500.00 → ₹1,501.50 [momentum_rsi]\n"
                      "Changed by hand: momentum_rsi leaves this order to you."]


async def test_a_change_made_outside_neopulse_is_a_warning_of_its_own(notifier, fake_api, bus, caplog):
    outside = update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, qty=30, reason_code="CHANGED_AT_BROKER",
                     changed_by_hand=True)

    blocks = await told(bus, fake_api, *PLACED, outside)

    assert blocks == ["⚙️ <b>Order changed outside NeoPulse</b>\nBUY INFY-EQ: qty 10 → 30 [MANUAL]"]
    (logged,) = [r for r in caplog.records if getattr(r, "title", "") == "Order changed outside NeoPulse"]
    assert (logged.levelname, logged.reason_code, logged.previous_quantity) == ("WARNING", "CHANGED_AT_BROKER", "10")


async def test_a_refused_change_says_nothing_of_terms(notifier, fake_api, bus):
    """The one who asked hears the refusal as the answer to the request; the order is as it was."""
    blocks = await told(bus, fake_api, *PLACED,
                        update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, qty=20),
                        update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_MODIFY_PENDING, reason="change refused: RMS"))

    assert blocks == []


async def test_same_state_updates_say_nothing_unless_the_terms_moved(notifier, fake_api, bus):
    """The OMS publishes OPEN -> OPEN when only the exchange id changes, and when the broker reports other terms (a
    change made in Kotak's app, say): only the latter is news."""
    blocks = await told(bus, fake_api, *PLACED,
                        update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, exchange_order_id="NSE-2"),
                        update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, price=149_000))

    assert blocks == ["⚙️ <b>Order modified</b>\nBUY INFY-EQ: price ₹1,500.00 → ₹1,490.00 [MANUAL]"]


async def test_a_fill_of_a_changed_order_is_told_as_a_fill_and_not_again_as_a_change(notifier, fake_api, bus):
    changed = [update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, qty=20),
               update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_MODIFY_PENDING, qty=20)]
    filled = update(S.ORDER_STATUS_PARTIALLY_FILLED, S.ORDER_STATUS_OPEN, qty=20, filled_quantity=5,
                    last_fill_quantity=5, last_fill_price_paise=150_000)

    blocks = await told(bus, fake_api, *PLACED, *changed, filled)

    assert [b.split("\n")[0] for b in blocks] == ["⚙️ <b>Order modified</b>", "✅ <b>Fill</b>"]
    assert blocks[1].endswith("(filled 5/20) [MANUAL]")


def test_an_order_first_seen_working_is_remembered_from_then_on():
    """Placed before the notifier started: what it had before is unknown, so its first update says nothing."""
    watch = TermsWatch()

    first = watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, qty=20))
    later = watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, qty=30))

    assert (first, later) == (None, (20, 150_000, 0))


def test_a_change_pending_or_cancel_pending_is_not_taken_as_the_terms_worked():
    watch = TermsWatch()
    for u in PLACED:
        watch.changed(u)

    pending = [watch.changed(update(S.ORDER_STATUS_MODIFY_PENDING, S.ORDER_STATUS_OPEN, qty=20)),
               watch.changed(update(S.ORDER_STATUS_CANCEL_PENDING, S.ORDER_STATUS_MODIFY_PENDING, qty=20))]
    back = watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_CANCEL_PENDING, qty=10))

    assert pending == [None, None] and back is None


def test_ended_orders_are_forgotten_and_the_oldest_go_first_past_the_bound():
    watch = TermsWatch(max_orders=2)
    for iid in ("a", "b", "c"):
        watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_PENDING_NEW, iid=iid))
    watch.changed(update(S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_OPEN, iid="c"))

    assert len(watch) == 1
    assert watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, qty=5, iid="b")) == (10, 150_000, 0)
    assert watch.changed(update(S.ORDER_STATUS_OPEN, S.ORDER_STATUS_OPEN, qty=5, iid="a")) is None  # evicted


async def test_an_order_cancelled_outside_neopulse_is_a_warning_and_one_it_cancelled_is_not(notifier, fake_api, bus):
    """A stop-loss cancelled in Kotak's app (or by its RMS) must not vanish without a word."""
    gone = update(S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_OPEN, reason="cancelled by the user",
                  reason_code="CANCELLED_AT_BROKER")
    ours = update(S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_CANCEL_PENDING, iid="o-2", reason="cancelled")

    blocks = await told(bus, fake_api, *PLACED, gone, ours)

    assert blocks == ["⚙️ <b>Order cancelled outside NeoPulse</b>\nBUY 10 INFY-EQ, 0 filled: cancelled by the user "
                      "[MANUAL]"]
