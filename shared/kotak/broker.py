"""KotakBroker: the Broker protocol (services/oms/broker.py) over the Kotak Neo SDK.

Talks to Kotak through KotakSession; order events come from the order feed plus order-book polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from neo_api_client.websocket.orderfeed.models import OrderUpdate

from services.oms.broker import CHANGE_REFUSED, BrokerAck, BrokerOrderEvent, order_age_s
from services.oms.broker_news import STALE_TERMS_S
from services.oms.states import RESTING
from shared import runtime
from shared.contracts import market_pb2, oms_pb2, trading_pb2
from shared.errors import BrokerRejected, NeoPulseError, NotSent, RetryableError
from shared.kotak import mapping
from shared.kotak.config import KotakSettings
from shared.kotak.session import KotakSession

log = logging.getLogger(__name__)
S = trading_pb2
# Reads that list rows: Kotak answers "No Data" (stCode 5203) instead of an empty list when there are none.
FEED_CHECK_S = 1.0  # how often a silent order feed is checked for a socket its iterator did not see close
LIST_READS = frozenset({"order_report", "order_history", "trade_report", "positions", "holdings", "quotes"})
# How long after Kotak acknowledged a change of ours a row showing the order working without it is published again
# with every read: the OMS sets such a row aside for STALE_TERMS_S after the answer (a snapshot from before the
# change, it assumes), so a refusal Kotak's RMS makes after its "Ok" must still be offered once that is over.
CHANGE_WATCH_S = 2 * STALE_TERMS_S
# Kotak rewrites a tag it cancels as "<tag>-<epoch seconds>" (Kotak-neo-api-v2 issue 33). A numeric stamp only:
# NeoPulse's own tags extend each other with other suffixes (a square-off's "-<run>", "-r<attempt>").
STAMPED_TAG = re.compile(r"-\d{9,}")


@dataclass
class _Change:
    """A change of ours Kotak acknowledged: the terms it asked for (event field -> value), the order's rejRsn before
    it, and until when (monotonic) rows without it are watched."""

    asked: dict[str, int]
    reason_before: str
    until: float
    refused: bool = False


class KotakBroker:
    name = "kotak"
    in_process = False  # every call is a REST round trip
    reports_charges = False  # Kotak's charges come on the contract note, not per fill: the OMS estimates them

    def __init__(self, settings: KotakSettings, session: KotakSession | None = None,
                 max_order_age_s: float = 0.0) -> None:
        """`max_order_age_s` ([oms] max_decision_age_s; 0 = off): an order refused for an expired session is sent
        again after the re-login only while its tick is no older than this."""
        self.settings = settings
        self.session = session or KotakSession(settings)
        self.max_order_age_s = max_order_age_s
        self._last: dict[str, BrokerOrderEvent] = {}
        self._changes: dict[str, _Change] = {}  # by order number: changes of ours whose outcome rows may refute
        # Order number -> our tag, from place replies and the first row seen of each order: Kotak rewrites the tag
        # of an order modified or cancelled (Kotak-neo-api-v2 issue 33); its rows are ours under our tag still.
        self._tags: dict[str, str] = {}
        self._poll_now = asyncio.Event()

    def __repr__(self) -> str:
        return f"KotakBroker(ucc={self.settings.ucc!r})"

    @property
    def login_trouble(self) -> str:
        """Why Kotak's lost session cannot be renewed, and the fix ("" while logins work): KotakSession's."""
        return self.session.login_trouble

    async def start(self) -> None:
        await self.session.login_at_start()

    async def stop(self) -> None:
        return None

    # orders ------------------------------------------------------------------------
    async def place_order(self, order: trading_pb2.OrderRequest) -> BrokerAck:
        """Place once with client_order_id as the tag; an unknown outcome is resolved by tag, never by resending."""
        reply = await self.session.call("place_order", is_order=True, before_retry=partial(self._still_fresh, order),
                                        **mapping.place_params(order))
        order_id = mapping.placed_order_id(reply)
        if order_id:
            self._learn(order.client_order_id, order_id)
            return BrokerAck(order_id, S.ORDER_STATUS_SUBMITTED, raw=reply)
        kind, text = mapping.reply_error(reply) or ("unknown", "no order number in the reply")
        text = self.session.scrub(text)
        if kind == "refused":
            raise BrokerRejected(f"order {order.client_order_id}: Kotak refused it: {text}")
        log.warning("kotak place_order outcome unknown; looking the tag up",
                    extra={"order_id": order.client_order_id, "token": order.token})
        found = await self._find_quietly(order.client_order_id)
        if found is not None:
            self._learn(order.client_order_id, found.exchange_order_id)
            return BrokerAck(found.exchange_order_id, found.status, reason=found.reason, raw=found.raw)
        raise RetryableError(f"order {order.client_order_id}: place_order outcome unknown ({text}) and the tag is "
                             "not in the order book yet; look it up with find_by_tag before any retry")

    def _still_fresh(self, order: trading_pb2.OrderRequest, why: str) -> None:
        """Before an order Kotak refused (`why`: an expired session, or throttled) is sent again: not if it went stale
        meanwhile."""
        age = order_age_s(order)
        if self.max_order_age_s and age > self.max_order_age_s:
            raise NotSent(f"order {order.client_order_id}: not sent: {why}, and by the time it could go again its "
                          f"signal's tick was {age:.1f} s old, more than [oms] max_decision_age_s "
                          f"{self.max_order_age_s:g} s")

    async def _find_quietly(self, tag: str) -> BrokerOrderEvent | None:
        try:
            return await self.find_by_tag(tag)
        except RetryableError:
            return None

    async def modify_order(self, exchange_order_id: str, *, quantity: int | None = None,
                           price_paise: int | None = None, trigger_price_paise: int | None = None) -> BrokerAck:
        """Kotak's "Ok" to a change is not its last word: its RMS may refuse the change afterwards, the order working
        on with its old terms and the reason in rejRsn (kotak-neo-api issue 36). Rows of that are watched for
        (_refutes_change) and published as the change refused."""
        current = await self._order_before_change(exchange_order_id)
        params = mapping.modify_params(current, quantity, price_paise, trigger_price_paise)
        # A modify is re-sent after a re-login as it is (before_retry named so **params cannot be taken for it).
        reply = await self.session.call("modify_order", is_order=True, before_retry=None, **params)
        ack = self._ack(exchange_order_id, reply, "modify", S.ORDER_STATUS_MODIFY_PENDING)
        asked = {"quantity": quantity, "price_paise": price_paise, "trigger_price_paise": trigger_price_paise}
        self._last.pop(exchange_order_id, None)  # Kotak's next row is news, even one equal to the last before it
        self._changes[exchange_order_id] = _Change({k: v for k, v in asked.items() if v is not None}, current.reason,
                                                   time.monotonic() + CHANGE_WATCH_S)
        return ack

    async def _order_before_change(self, order_id: str) -> BrokerOrderEvent:
        """The order as Kotak holds it (a modify must send all its terms); NotSent when it cannot be read: nothing
        went to Kotak, the order keeps its terms."""
        try:
            current = await self.order_by_id(order_id)
        except NeoPulseError as exc:
            raise NotSent(f"order {order_id}: change not sent: reading the order first failed ({exc}); its terms are "
                          "unchanged, retry") from exc
        if current is None:
            raise NotSent(f"order {order_id}: change not sent: Kotak's order report does not list the order (is it "
                          "today's?); its terms are unchanged")
        return current

    async def cancel_order(self, exchange_order_id: str) -> BrokerAck:
        reply = await self.session.call("cancel_order", exchange_order_id, is_order=True)
        ack = self._ack(exchange_order_id, reply, "cancel", S.ORDER_STATUS_CANCEL_PENDING)
        self._last.pop(exchange_order_id, None)  # Kotak's next row is news (the cancel refused: the order as before)
        self._changes.pop(exchange_order_id, None)  # a reason from now on is the cancel's, not a change's
        return ack

    def _ack(self, order_id: str, reply: Any, what: str, status: int) -> BrokerAck:
        error = mapping.reply_error(reply)
        if error is None:
            return BrokerAck(order_id, status, raw=reply)
        text = self.session.scrub(error[1])
        if error[0] == "refused":
            raise BrokerRejected(f"order {order_id}: Kotak refused the {what}: {text}")
        raise RetryableError(f"order {order_id}: {what} outcome unknown ({text}); check the order book")

    async def order_by_id(self, exchange_order_id: str) -> BrokerOrderEvent | None:
        """The order as Kotak's order report by order number shows it; None when Kotak lists no such order (its
        "No Data", which it also answers now and then for orders it has: not proof on its own)."""
        reply = await self._read("order_report", exchange_order_id)
        now = time.time_ns()
        for row in mapping.rows(reply):
            if str(row.get("nOrdNo")) == exchange_order_id:
                return self._event(row, now)
        return None

    async def order_book(self) -> list[BrokerOrderEvent]:
        reply = await self._read("order_report")
        now = time.time_ns()
        return [self._event(row, now) for row in mapping.rows(reply)]

    async def find_by_tag(self, client_order_id: str) -> BrokerOrderEvent | None:
        """The order placed with this tag: rows carry our tag for the order numbers we know (_event), whatever Kotak
        rewrote it to; else the tag as Kotak stamps it on a cancel."""
        book = await self.order_book()
        matches = ([e for e in book if e.client_order_id == client_order_id]
                   or [e for e in book if e.client_order_id.startswith(client_order_id)
                       and STAMPED_TAG.fullmatch(e.client_order_id, len(client_order_id))])
        return matches[-1] if matches else None

    async def order_history(self, exchange_order_id: str) -> list[BrokerOrderEvent]:
        """Every state the order went through, newest first (as Kotak lists them)."""
        reply = await self._read("order_history", exchange_order_id)
        return [self._event(row) for row in mapping.rows(reply)]

    def _event(self, row: dict[str, Any], ts_ns: int = 0) -> BrokerOrderEvent:
        """A row as an event carrying the order's tag as we know it (raw keeps Kotak's); the tag of an order number
        seen for the first time is learnt."""
        event = mapping.order_event(row, ts_ns)
        ours = self._tags.get(event.exchange_order_id)
        if ours is not None:
            event.client_order_id = ours
        else:
            self._learn(event.client_order_id, event.exchange_order_id)
        return event

    def _learn(self, tag: str, order_id: str) -> None:
        if tag and order_id:
            self._tags.setdefault(order_id, tag)

    async def trades(self) -> list[dict[str, Any]]:
        return mapping.rows(await self._read("trade_report"))

    # account and market data ---------------------------------------------------------
    async def positions(self) -> list[trading_pb2.Position]:
        return [mapping.position(row) for row in mapping.rows(await self._read("positions"))]

    async def limits(self) -> dict[str, Any]:
        return mapping.limits(await self._read("limits"))

    async def funds(self) -> oms_pb2.GetFundsResponse:
        return mapping.funds(await self._read("limits"), time.time_ns())

    async def holdings(self) -> list[trading_pb2.Position]:
        """Settled delivery holdings of the account as CNC positions (shares bought today are in positions()
        until settlement); malformed rows are logged and left out (mapping.holdings)."""
        return mapping.holdings(mapping.rows(await self._read("holdings")))

    async def margin_required(self, order: trading_pb2.OrderRequest) -> dict[str, Any]:
        """Kotak's margin check for an order before placing it: required vs available, in paise."""
        return mapping.margin(await self._read("margin_required", **mapping.margin_params(order)))

    async def quotes(self, instruments: list[tuple[str, int]]) -> list[market_pb2.Tick]:
        """Latest quotes for (exchange_segment, token) pairs (at most 50 a call, as Kotak allows)."""
        ticks: list[market_pb2.Tick] = []
        for i in range(0, len(instruments), 50):
            chunk = [{"exchange_segment": seg, "instrument_token": str(tok)} for seg, tok in instruments[i:i + 50]]
            reply = await self._read("quotes", instrument_tokens=chunk, quote_type="all")
            ticks += [mapping.quote_tick(row) for row in mapping.rows(reply)]
        return ticks

    async def scrip_master(self, segments: tuple[str, ...] = ("nse_cm",)) -> list[market_pb2.Instrument]:
        return await self.session.scrip_master(segments)

    async def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        reply = await self.session.call(method, *args, **kwargs)
        if method in LIST_READS and mapping.no_data(reply):
            return {"data": []}
        error = mapping.reply_error(reply)
        if error is not None:
            raise RetryableError(f"Kotak {method} failed: {self.session.scrub(error[1])}; retry later")
        return reply

    # events ------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Order feed plus order-book polling, merged: each change of an order is yielded once."""
        queue: asyncio.Queue[BrokerOrderEvent] = asyncio.Queue()
        tasks = [asyncio.create_task(self._feed_loop(queue), name="kotak-order-feed"),
                 asyncio.create_task(self._poll_loop(queue), name="kotak-order-poll")]
        try:
            while True:
                yield await queue.get()
        finally:
            # Cancelled again until they stop: the SDK's feed iterator can swallow one cancel (runtime.py).
            left = await runtime.cancel_and_wait(tasks)
            if left:
                log.error("kotak order feed tasks did not stop", extra={"tasks": [t.get_name() for t in left]})

    def _merge(self, event: BrokerOrderEvent) -> BrokerOrderEvent | None:
        """The event to publish, or None when it adds nothing (a repeat, or a stale/empty feed message). A row whose
        only news is the order's terms (a change made in Kotak's app, say) is not a repeat."""
        last = self._last.get(event.exchange_order_id)
        remembered = event
        if last is not None:
            if last.status in mapping.TERMINAL and event.status not in mapping.TERMINAL:
                return None
            if event.filled_quantity < last.filled_quantity:
                return None  # stale row; the feed leaves fldQty empty in early states
            if not event.client_order_id:
                event.client_order_id = last.client_order_id
        refuted = self._refutes_change(event)
        if refuted is not None:
            return refuted  # not remembered: offered again with each read until the watch ends (CHANGE_WATCH_S)
        if last is not None:
            terms = _terms(event, last)
            if (event.status, event.filled_quantity, event.average_price_paise, terms) == (
                    last.status, last.filled_quantity, last.average_price_paise, _terms(last, last)):
                return None
            # Remembered with the terms last shown: a row that leaves one empty (0) says nothing of it.
            remembered = replace(event, quantity=terms[0], price_paise=terms[1], trigger_price_paise=terms[2])
        elif not event.client_order_id:
            # Only the order number names it (the order feed need not carry the tag), and the OMS may not know
            # that number yet (the place reply still on its way): publish it, but keep no record of it, so the
            # order book's row for the same state, which has the tag, is not dropped as a repeat.
            return event
        self._last[event.exchange_order_id] = remembered
        return event

    def _refutes_change(self, event: BrokerOrderEvent) -> BrokerOrderEvent | None:
        """The row as the event to publish when it shows the order working without a change of ours Kotak took
        lately, else None. A new rejRsn in it is Kotak's RMS refusing the change after its "Ok": the reason says
        "change refused", as the OMS words a refusal. Rows of an order ended, or showing the change, end the watch."""
        change = self._changes.get(event.exchange_order_id)
        if change is None:
            return None
        shown = {"quantity": event.quantity, "price_paise": event.price_paise,
                 "trigger_price_paise": event.trigger_price_paise}
        held = all(shown[k] in (0, v) for k, v in change.asked.items())  # 0: the row says nothing of that term
        if time.monotonic() > change.until or event.status in mapping.TERMINAL or (held and event.status in RESTING):
            del self._changes[event.exchange_order_id]
            return None
        if event.status not in RESTING:
            return None  # still pending at Kotak (modify pending): either terms may show
        if not event.reason or event.reason == change.reason_before:
            return event  # maybe read before the change: the OMS decides by its own window
        if not change.refused:
            change.refused = True
            log.warning("Kotak refused a change it had acknowledged; the order works on with its terms before it",
                        extra={"order_id": event.exchange_order_id, "reason": event.reason, "asked": change.asked})
        return replace(event, reason=f"{CHANGE_REFUSED}{event.reason}")

    async def _feed_loop(self, queue: asyncio.Queue[BrokerOrderEvent]) -> None:
        delay = self.settings.reconnect_initial_s
        while True:
            feed = None
            try:
                feed = self.session.order_feed(max_reconnect_attempts=0, max_connect_retries=0)
                await feed.connect()
                delay = self.settings.reconnect_initial_s
                async for message in _until_closed(feed):
                    row = _order_row(message)
                    if row is not None:
                        event = self._merge(self._event(row, time.time_ns()))
                        if event is not None:
                            queue.put_nowait(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kotak order feed failed", extra={"error": self.session.scrub(str(exc))})
            finally:
                if feed is not None:
                    with contextlib.suppress(Exception):
                        await feed.close()
            self._poll_now.set()  # whatever the feed missed while down, the order book has
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _poll_loop(self, queue: asyncio.Queue[BrokerOrderEvent]) -> None:
        while True:
            try:
                for event in await self.order_book():
                    merged = self._merge(event)
                    if merged is not None:
                        queue.put_nowait(merged)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kotak order-book poll failed", extra={"error": self.session.scrub(str(exc))})
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):  # not wait_for (gh-86296)
                    await self._poll_now.wait()

    async def on_candle(self, candle: market_pb2.Candle) -> None:
        return None

    async def on_ticks(self, batch: market_pb2.TickBatch) -> None:
        return None


def _terms(event: BrokerOrderEvent, last: BrokerOrderEvent) -> tuple[int, int, int]:
    """The order's quantity, price and trigger as a row shows them; one it leaves empty (0), as `last` showed it."""
    return (event.quantity or last.quantity, event.price_paise or last.price_paise,
            event.trigger_price_paise or last.trigger_price_paise)


def _order_row(message: Any) -> dict[str, Any] | None:
    """The order-book row (Kotak's field names) an order-feed message carries, else None (a position update, a
    control frame). The SDK parses a message into OrderUpdate, or, when its row does not fit the SDK's model (an
    empty fldQty, a number where the model wants a string), hands over the frame as the dict it is: read either way,
    as mapping.order_event reads the order book's rows, not left to the next poll."""
    if isinstance(message, OrderUpdate):
        return message.data.model_dump(by_alias=True)
    if isinstance(message, dict) and message.get("type") == "order" and isinstance(message.get("data"), dict):
        return message["data"]
    return None


async def _until_closed(feed: Any) -> AsyncIterator[Any]:
    """The order feed's messages until its iterator ends or its socket is closed. The SDK's iterator (3.0.9) can
    miss a close that lands between two receives: its receive loop then ends without marking the feed stopped,
    and the iterator waits for ever (events would come only from polling, for good). Its own reconnects are off
    here (max_reconnect_attempts=0), so a socket seen closed on an idle check is a feed to open again."""
    messages = feed.__aiter__()

    async def receive() -> Any:
        return await messages.__anext__()

    while True:
        nxt = asyncio.ensure_future(receive())
        try:
            while not (await asyncio.wait({nxt}, timeout=FEED_CHECK_S))[0]:
                if not feed.is_connected:
                    return
            try:
                message = nxt.result()
            except StopAsyncIteration:
                return
        finally:
            nxt.cancel()  # a no-op once it is done
        yield message
