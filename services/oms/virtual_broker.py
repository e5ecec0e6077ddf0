"""VirtualBroker: a paper-trading proxy over a real broker. Reads pass through to `inner`; writes stay here.

Orders get "VB-..." ids, live in its own book and fill from the market data the OMS feeds it (ticks, candles).

The fill rules (arrival, depth, stops, candles, session, a stalled feed, validity) are written out in fill_rules.py's
docstring, beside the pure functions that decide them; this class keeps the book and decides when to apply them.

- Funds (services/oms/paper.py): with a PaperAccount, an order (or a change) needing more margin than the account has
  left is refused as the broker's RMS would refuse it; funds() reports the account. A fill counts as a position from
  the moment it is made here until the OMS has booked it (fill_booked): the order has left the working set by then.
- Each fill carries charges (charges.py); events() yields cumulative filled quantity, average price and
  charges, with the fill itself in raw["last_fill_quantity" / "last_fill_price_paise" / "last_fill_charges_paise"].
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from services.oms.broker import Broker, BrokerAck, BrokerOrderEvent
from services.oms.charges import ChargeModel
from services.oms.fill_rules import (
    Leg,
    candle_price,
    closed_reason,
    limit_reached,
    opens_session,
    resting_fill,
    session_window,
    stop_refusal,
    tick_fills,
    tick_triggers,
    trades_at,
    validity_refusal,
)
from services.oms.paper import PaperAccount, Unbooked
from services.oms.states import TERMINAL, name
from services.oms.virtual_orders import VirtualOrder, drop, lapsed, restored
from shared.clock import NS, Clock, day_of, ist_day_number, minute_start_ns
from shared.contracts import market_pb2, oms_pb2
from shared.contracts import trading_pb2 as t
from shared.errors import BrokerRejected, NotFound
from shared.ids import IdMint
from shared.order_terms import STOPS

log = logging.getLogger(__name__)

# Read-only calls a caller may make of the real broker through the proxy (never a write).
READ_THROUGH = frozenset({"quotes", "quote", "scrip_master", "search_scrip", "holdings", "session"})
# What a stop order works as once triggered.
_TRIGGERED_AS = {t.ORDER_TYPE_STOP_MARKET: t.ORDER_TYPE_MARKET, t.ORDER_TYPE_STOP_LIMIT: t.ORDER_TYPE_LIMIT}
# No tick of any token for this long in an order's session: the feed is stalled, its last prices are no prices. The
# ingestion watchdog's stall_seconds default ([ingestion] stall_seconds); VirtualBroker(stall_s=...) to follow another.
STALL_S = 15.0
_NO_CLOSE = 1 << 62  # no order working in a session: no close to expire orders at


class VirtualBroker:
    name = "virtual"
    in_process = True  # writes never leave the process
    reports_charges = True  # each fill's charges from its ChargeModel

    def __init__(self, inner: Broker | None, charges: ChargeModel, clock: Clock, max_events: int = 100_000,
                 stall_s: float = STALL_S) -> None:
        self.inner = inner
        self.charges = charges
        self.clock = clock
        self.book: dict[str, VirtualOrder] = {}
        self._by_tag: dict[str, VirtualOrder] = {}
        self._working: dict[int, list[VirtualOrder]] = {}  # token -> non-terminal orders, acceptance order
        self._last: dict[int, market_pb2.Tick] = {}
        self._day = 0  # IST day number of the latest candle: a later one expires the DAY orders of earlier days
        self._candle_start: dict[int, int] = {}  # token -> start_ns of the latest candle processed
        self._events: asyncio.Queue[BrokerOrderEvent] = asyncio.Queue(max_events)
        self._ids = IdMint()
        # Fills decided on arrival, to book in placement order: (order, fills, time of arrival, IOC).
        self._arrivals: deque[tuple[VirtualOrder, list[Leg], int, bool]] = deque()
        self._booking: asyncio.Task[None] | None = None
        # MARKET orders that found no tick of their day on arrival: token -> orders, to fill at its next tick.
        self._awaiting_tick: dict[int, list[VirtualOrder]] = {}
        # Stop orders not triggered yet: token -> orders, checked against its ticks (_trigger_stops).
        self._stops: dict[int, list[VirtualOrder]] = {}
        # Limits resting in the book (VirtualOrder.rests_at_limit): token -> orders, filled by its ticks
        # (_fill_resting).
        self._resting: dict[int, list[VirtualOrder]] = {}
        self.account: PaperAccount | None = None  # the OMS opens it on its book: margin and funds
        # With an account: orders with fills made here that the OMS has not booked into its positions yet -> the order
        # and its filled quantity the OMS has booked (fill_booked). The account counts the rest as positions.
        self._unbooked: dict[str, tuple[VirtualOrder, int]] = {}
        # stall_s is the watchdog's, in real seconds: on a simulated session running at `speed` (SimClock), that many
        # times as many of the order clock's (a feed ticking every 50 ms real is no stall at --speed 600).
        speed = getattr(clock, "speed", 1.0)
        self._stall_ns = int(stall_s * NS * (speed if speed > 0 else 1.0))
        self._ticked_ns = 0  # the clock when the latest batch of ticks came: silence beyond _stall_ns is a stall
        self._closes_at = _NO_CLOSE  # the earliest close of a session an order works in: then orders expire
        # (token, side) -> the tick whose depth (or print, or quote: resting limits) orders took from, and how many
        # units: the next order finds the rest.
        self._depth_taken: dict[tuple[int, int], tuple[market_pb2.Tick, int]] = {}
        # token -> {start of a minute: units its ticks filled of resting limits}: that minute's candle shares out only
        # the rest of its volume. A minute or two per token: a candle takes its own and drops older ones.
        self._tick_filled: dict[int, dict[int, int]] = {}

    def __getattr__(self, attr: str) -> Any:
        # Only named reads reach the real account; anything else (a write) must be implemented here.
        if attr in READ_THROUGH and self.__dict__.get("inner") is not None:
            return getattr(self.inner, attr)
        raise AttributeError(attr)

    # -- lifecycle and reads (the inner broker's lifecycle belongs to whoever built it) -----------
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._book_arrivals()

    async def positions(self) -> list[t.Position]:
        return await self.inner.positions() if self.inner is not None else []

    async def limits(self) -> dict[str, Any]:
        return await self.inner.limits() if self.inner is not None else {"virtual": True}

    async def funds(self) -> oms_pb2.GetFundsResponse:
        """The paper account's, never the real one's."""
        if self.account is None:
            raise NotFound("this VirtualBroker has no paper account")
        await self._book_arrivals()
        return self.account.funds(self._working_terms(), self._last, self.clock.now_ns(), self._unbooked_fills())

    def recount_funds(self) -> None:
        """The paper account counts what is left, so that orders need not (services/oms/paper.py)."""
        if self.account is not None:
            self.account.recount(self._working_terms(), self._last, self._unbooked_fills())

    def fill_booked(self, exchange_order_id: str, filled: int) -> None:
        """The OMS has booked the order's fills up to `filled` into its positions (OrderBook.on_fill_booked): the
        paper account counts them there from now on, no longer as fills of this broker's."""
        entry = self._unbooked.get(exchange_order_id)
        if entry is None:
            return
        vo, booked = entry
        if filled >= vo.filled:
            del self._unbooked[exchange_order_id]
        elif filled > booked:
            self._unbooked[exchange_order_id] = (vo, filled)

    # -- writes ---------------------------------------------------------------------------------
    async def place_order(self, order: t.OrderRequest) -> BrokerAck:
        if order.quantity <= 0:
            raise BrokerRejected(f"order {order.client_order_id}: quantity must be positive")
        if order.client_order_id and order.client_order_id in self._by_tag:
            placed = self._by_tag[order.client_order_id].id
            raise BrokerRejected(f"tag {order.client_order_id} was already placed as {placed}")
        refusal = (validity_refusal(order.client_order_id, order.exchange_segment, order.validity)
                   or self._stop_refusal(order.client_order_id, order, order.price_paise, order.trigger_price_paise))
        if refusal:
            raise BrokerRejected(refusal)
        if self.account is not None:
            refusal = self.account.refusal(order, order.quantity, self._working_terms(), self._last,
                                           unbooked=self._unbooked_fills())
            if refusal:
                raise BrokerRejected(refusal)
        request = t.OrderRequest()
        request.CopyFrom(order)
        status = t.ORDER_STATUS_TRIGGER_PENDING if order.order_type in STOPS else t.ORDER_STATUS_OPEN
        now = self.clock.now_ns()
        vo = VirtualOrder(id=f"VB-{self._ids.short()}", request=request, status=status, accepted_ns=now,
                          placed_ns=now)
        self._add(vo)
        ack = BrokerAck(vo.id, status, raw={"virtual": True, "accepted_ns": vo.accepted_ns})
        if self._ahead_of_its_tick(order):
            self._awaiting_tick.setdefault(order.token, []).append(vo)
            return ack
        ioc = order.validity == t.VALIDITY_IOC
        if self._fills_on_arrival(vo, ioc=ioc):
            pass
        elif ioc:
            await self._close(vo, t.ORDER_STATUS_CANCELLED, "IOC order not filled on arrival")
        elif order.order_type == t.ORDER_TYPE_MARKET:
            self._awaiting_tick.setdefault(order.token, []).append(vo)
        if not ioc:
            self._rest(vo)  # a LIMIT not filled in full on arrival (one that was leaves once its fills are booked)
        return ack

    async def modify_order(self, exchange_order_id: str, *, quantity: int | None = None,
                           price_paise: int | None = None, trigger_price_paise: int | None = None) -> BrokerAck:
        await self._book_arrivals()
        vo = self._working_order(exchange_order_id)
        if quantity is not None and quantity <= vo.filled:
            raise BrokerRejected(f"order {vo.id}: quantity {quantity} must exceed the filled {vo.filled}")
        if not vo.triggered and (price_paise is not None or trigger_price_paise is not None):
            price = vo.request.price_paise if price_paise is None else price_paise
            trigger = vo.request.trigger_price_paise if trigger_price_paise is None else trigger_price_paise
            refusal = self._stop_refusal(vo.id, vo.request, price, trigger)
            if refusal:
                raise BrokerRejected(refusal)
        if self.account is not None and quantity is not None:
            refusal = self.account.refusal(vo.request, quantity - vo.filled, self._working_terms(vo), self._last,
                                           replacing=(vo.request, vo.remaining), unbooked=self._unbooked_fills())
            if refusal:
                raise BrokerRejected(refusal)
        if quantity is not None:
            vo.request.quantity = quantity
        if price_paise is not None:
            vo.request.price_paise = price_paise
        if trigger_price_paise is not None:
            vo.request.trigger_price_paise = trigger_price_paise
        # A modified order is accepted anew: it must not fill from a candle already under way, and it queues for
        # a candle's volume behind the orders accepted before it.
        vo.accepted_ns = self.clock.now_ns()
        working = self._working[vo.request.token]
        working.remove(vo)
        working.append(vo)
        await self._emit(vo)
        if self._ahead_of_its_tick(vo.request):  # still waiting for its tick: decided there, as placed
            drop(self._resting, vo)
            if vo not in self._awaiting_tick.get(vo.request.token, ()):
                self._awaiting_tick.setdefault(vo.request.token, []).append(vo)
        else:
            if vo in self._resting.get(vo.request.token, ()):  # as at the exchange, a change loses its time there
                drop(self._resting, vo)
                self._rest(vo)
            self._fills_on_arrival(vo)  # a change that makes a limit marketable trades at once, as a new order would
        return BrokerAck(vo.id, vo.status, raw={"virtual": True, "modified": True})

    async def cancel_order(self, exchange_order_id: str) -> BrokerAck:
        await self._book_arrivals()
        vo = self._working_order(exchange_order_id)
        await self._close(vo, t.ORDER_STATUS_CANCELLED, "cancelled by request")
        return BrokerAck(vo.id, vo.status, raw={"virtual": True})

    # -- the book ---------------------------------------------------------------------------------
    async def order_book(self) -> list[BrokerOrderEvent]:
        await self._book_arrivals()
        return [self._event(vo) for vo in self.book.values()]

    async def find_by_tag(self, client_order_id: str) -> BrokerOrderEvent | None:
        await self._book_arrivals()
        vo = self._by_tag.get(client_order_id)
        return self._event(vo) if vo is not None else None

    def restore(self, orders: list[t.OrderUpdate], charges: Mapping[str, int] | None = None) -> int:
        """Re-seed the book from ledger orders after a restart (virtual ids only); returns how many. `charges`: what
        the ledger recorded for each one's fills, by internal_id (Ledger.fill_charges). Its events report charges
        cumulative, as a broker does; without those from before the restart, a reader of the book (the OMS, from
        the cumulative charges when an event does not carry the fill's own) would count later fills' charges short.

        A working order whose validity ended meanwhile is left out, as a real broker's book would have dropped it
        (reconciliation then cancels it). Its day is that of its last ledger update (ts_ns), never earlier than
        its placement: an earlier day than today proves it was placed before today, one in its segment's session
        that is over now proves it worked in that session (fill_rules: it expired at the close). No ts_ns proves
        nothing.
        """
        now, count = self.clock.now_ns(), 0
        for u in orders:
            if not u.exchange_order_id.startswith("VB-") or u.exchange_order_id in self.book:
                continue
            vo = restored(u, charges or {}, self.charges, now)
            if vo is None:
                continue
            if vo.status not in TERMINAL and vo.request.order_type == t.ORDER_TYPE_MARKET and not vo.filled:
                self._awaiting_tick.setdefault(vo.request.token, []).append(vo)
            self._add(vo)
            self._rest(vo)
            count += 1
        return count

    # -- market data ------------------------------------------------------------------------------
    async def on_ticks(self, batch: market_pb2.TickBatch) -> None:
        last, newest_ns = self._last, 0
        for tick in batch.ticks:
            last[tick.token] = tick
            if tick.ts_ns > newest_ns:
                newest_ns = tick.ts_ns
        self._ticked_ns = self.clock.now_ns()  # the feed is alive: a stall ends here
        # The batch's newest tick dates it, not its last: a (re)subscribe snapshot carries an instrument not traded
        # yet today with yesterday's last trade time, and it may come after today's ticks of another.
        day = ist_day_number(newest_ns)
        if day > self._day:
            # A new day's first ticks come a minute before its first candle: yesterday's DAY orders (a stop, a
            # MARKET order waiting for a tick) go first, not filled at today's opening prices.
            await self._expire_day_orders(day)
        if self._resting:  # first: an order that comes to rest at this batch's ticks met them, it was not there
            await self._fill_resting(batch.ticks)
        if self._awaiting_tick:
            await self._fill_awaiting(batch.ticks)
        if self._stops:
            await self._trigger_stops(batch.ticks)
        if newest_ns >= self._closes_at:  # after the ticks of the batch from before the close had their say
            await self._expire_at_close(newest_ns)

    async def _fill_resting(self, ticks: Any) -> None:
        """The resting limits the batch's ticks reach, tick by tick: each fills at its own limit, in turn, as much as
        the tick shows there (the rules in fill_rules.py's docstring). Allocates only when a tick reaches one."""
        await self._book_arrivals()
        resting = self._resting
        for tick in ticks:
            waiting = resting.get(tick.token)
            if not waiting:
                continue
            reached: list[VirtualOrder] | None = None
            for vo in waiting:
                if limit_reached(vo.request.side, vo.request.price_paise, tick) \
                        and tick.ts_ns // NS >= vo.accepted_ns // NS \
                        and trades_at(tick.ts_ns, vo.accepted_ns, vo.opens_ns, vo.closes_ns):
                    if reached is None:
                        reached = []
                    reached.append(vo)
            for vo in reached or ():  # filling takes them out of `waiting`
                units = self._resting_units(vo, tick)
                if units:
                    await self._fill(vo, units, vo.request.price_paise, tick.ts_ns)

    def _resting_units(self, vo: VirtualOrder, tick: market_pb2.Tick) -> int:
        """fill_rules.resting_fill for the order at `tick`, after what orders before it took there; counted as
        taken there, and against the candle of the tick's minute."""
        side, token = vo.request.side, tick.token
        taken_at = self._depth_taken.get((token, side))
        taken = taken_at[1] if taken_at is not None and taken_at[0] is tick else 0
        units = resting_fill(side, vo.request.price_paise, tick, vo.remaining, taken)
        if units:
            self._depth_taken[(token, side)] = (tick, taken + units)
            # By minute: minute M's candle comes after the first ticks of M+1 (its close), which may fill too.
            by_minute = self._tick_filled.setdefault(token, {})
            minute = minute_start_ns(tick.ts_ns)
            by_minute[minute] = by_minute.get(minute, 0) + units
        return units

    async def _trigger_stops(self, ticks: Any) -> None:
        """The stop orders the batch's ticks trigger, tick by tick (the rules in fill_rules.py's docstring)."""
        await self._book_arrivals()
        stops = self._stops
        for tick in ticks:
            waiting = stops.get(tick.token)
            if not waiting or tick.ltp_paise <= 0:
                continue
            for vo in list(waiting):
                if vo.status in TERMINAL:
                    drop(self._stops, vo)
                    continue
                request = vo.request
                if not tick_triggers(request.side, request.trigger_price_paise, tick.ltp_paise) \
                        or tick.ts_ns // NS < vo.accepted_ns // NS or (vo.closes_ns and tick.ts_ns >= vo.closes_ns):
                    continue
                drop(self._stops, vo)
                vo.triggered = True
                await self._trade_triggered(vo, tick)

    async def _trade_triggered(self, vo: VirtualOrder, tick: market_pb2.Tick) -> None:
        """A stop the tick triggered trades there as the order it became: a STOP_MARKET all of it (at the tick's
        touch, or through its depth), a STOP_LIMIT what is marketable; the rest of that is a limit resting from the
        trigger on: the next batch's ticks fill it, and candles from the next one (the one under way began before it:
        its prices are none this order could have had)."""
        kind = _TRIGGERED_AS[vo.request.order_type]
        legs = self._tick_fills(vo, tick, kind)
        await self._take(vo, legs, tick.ts_ns)
        if vo.status not in TERMINAL:
            vo.accepted_ns = tick.ts_ns
            self._rest(vo)
            if not legs:
                vo.status = t.ORDER_STATUS_OPEN
                await self._emit(vo, tick.ts_ns)

    async def _fill_awaiting(self, ticks: Any) -> None:
        """The orders waiting for a tick of their token (_awaiting_tick) are decided at its latest one in this
        batch, as they would have been on arrival: a MARKET order fills in full at its ask (buy) / bid (sell) or
        ltp (or through its depth), a marketable LIMIT at that price; an IOC order's rest is cancelled, a LIMIT's
        rests (from the next batch: _fill_resting). Not one that filled from a candle meanwhile (a MARKET order's
        remainder fills at the next candle's open, a LIMIT's rests), nor one cancelled. A tick of an earlier IST day
        (delivered late), from outside the order's session, or older than the tick that made the order, is no price
        yet: the order waits on."""
        await self._book_arrivals()
        awaiting, last = self._awaiting_tick, self._last
        for token in dict.fromkeys(tick.token for tick in ticks if tick.token in awaiting):
            tick = last[token]
            for vo in awaiting.pop(token):
                if vo.status in TERMINAL or vo.filled:
                    self._rest(vo)
                    continue
                if not trades_at(tick.ts_ns, vo.accepted_ns, vo.opens_ns, vo.closes_ns) \
                        or tick.recv_ns < vo.request.tick_recv_ns:
                    awaiting.setdefault(token, []).append(vo)
                    continue
                ioc = vo.request.validity == t.VALIDITY_IOC
                legs = self._tick_fills(vo, tick, vo.request.order_type)
                if legs or ioc:
                    await self._take(vo, legs, 0, ioc)
                self._rest(vo)

    def _ahead_of_its_tick(self, order: t.OrderRequest) -> bool:
        """A MARKET or LIMIT order made from a tick this broker has not taken yet (its ticks come on their own
        stream, the order may overtake them): deciding it at the tick before would fill it at a price the market
        had already left (a stop loss's exit filled above the tick that reached the stop). It is decided at the
        token's next ticks instead (_fill_awaiting). Orders without a tick (manual, square-off) are not held."""
        if not order.tick_recv_ns or order.order_type not in (t.ORDER_TYPE_MARKET, t.ORDER_TYPE_LIMIT):
            return False
        tick = self._last.get(order.token)
        return tick is None or tick.recv_ns < order.tick_recv_ns

    async def on_candle(self, candle: market_pb2.Candle) -> None:
        await self.process_candle(candle)

    async def process_candle(self, candle: market_pb2.Candle) -> None:
        """Fill what this closed candle fills (the rules in fill_rules.py's docstring)."""
        await self._book_arrivals()
        if candle.start_ns <= self._candle_start.get(candle.token, -1):
            return  # delivered again (or older than one already processed): its volume is spent
        self._candle_start[candle.token] = candle.start_ns
        await self._expire_day_orders(ist_day_number(candle.start_ns))
        if candle.start_ns >= self._closes_at:  # a candle after the close fills nothing of the session's orders
            await self._expire_at_close(candle.start_ns)
        ticked = self._tick_filled.get(candle.token)
        filled_by_ticks = 0
        if ticked:  # the candle's own minute's, taken off its volume; older minutes' (their candles gone) dropped
            filled_by_ticks = ticked.pop(candle.start_ns, 0)
            for minute in [m for m in ticked if m < candle.start_ns]:
                del ticked[minute]
        working = self._working.get(candle.token)
        if not working:
            return
        volume_left = candle.volume - filled_by_ticks
        opening = opens_session(candle.exchange_segment, candle.start_ns)
        for vo in list(working):
            if vo.status in TERMINAL or vo.accepted_ns >= candle.start_ns:
                continue
            price, triggered = candle_price(vo.request, vo.triggered, candle, opening)
            newly_triggered = triggered and not vo.triggered
            vo.triggered = triggered
            if newly_triggered:
                drop(self._stops, vo)
                self._rest(vo)
            if price is not None and volume_left > 0:
                quantity = min(vo.remaining, volume_left)
                volume_left -= quantity
                await self._fill(vo, quantity, price)
            elif newly_triggered:  # triggered, but no fill from this candle (limit not crossed or no volume left)
                vo.status = t.ORDER_STATUS_OPEN
                await self._emit(vo)

    async def _expire_day_orders(self, day: int) -> None:
        """Cancel, once market data from a later IST day arrives, the DAY orders still working from earlier days."""
        if day <= self._day:
            return
        self._day = day
        for working in list(self._working.values()):
            for vo in list(working):
                if lapsed(vo.request, vo.placed_ns, day):
                    await self._close(vo, t.ORDER_STATUS_CANCELLED,
                                      f"DAY order expired at the end of {day_of(vo.placed_ns).isoformat()}")
        self._forget_ended(day)

    async def _expire_at_close(self, ts_ns: int) -> None:
        """Cancel the orders still working when market data at `ts_ns` shows their session closed, as NSE purges a
        day's unexecuted orders at its close (and Kotak reports them expired then, not the next morning)."""
        closes_at = _NO_CLOSE
        for working in list(self._working.values()):
            for vo in list(working):
                if not vo.closes_ns:
                    continue
                if vo.closes_ns <= ts_ns:
                    await self._close(vo, t.ORDER_STATUS_CANCELLED,
                                      closed_reason(vo.request.exchange_segment, vo.closes_ns))
                else:
                    closes_at = min(closes_at, vo.closes_ns)
        self._closes_at = closes_at

    def _forget_ended(self, day: int) -> None:
        """Drop the orders of earlier days that have ended, as a broker's new day's book does: a paper account
        running for weeks holds its working orders, not every order it ever took (the OMS's ledger keeps them)."""
        for vo in [vo for vo in self.book.values() if vo.status in TERMINAL and ist_day_number(vo.placed_ns) < day]:
            del self.book[vo.id]
            self._unbooked.pop(vo.id, None)  # the OMS has had a day to book it (or refused it for good)
            if self._by_tag.get(vo.request.client_order_id) is vo:
                del self._by_tag[vo.request.client_order_id]

    def events(self) -> AsyncIterator[BrokerOrderEvent]:
        return self._iterate_events()

    async def _iterate_events(self) -> AsyncIterator[BrokerOrderEvent]:
        while True:
            await self._book_arrivals()
            yield await self._events.get()

    # -- internals --------------------------------------------------------------------------------
    def _working_terms(self, leaving_out: VirtualOrder | None = None) -> Iterator[tuple[t.OrderRequest, int]]:
        """Each working order's terms and what is left of it to fill (for the paper account)."""
        for working in self._working.values():
            for vo in working:
                if vo is not leaving_out and vo.status not in TERMINAL:
                    yield vo.request, vo.remaining

    def _unbooked_fills(self) -> Iterator[Unbooked]:
        """Each order's fills made here that the OMS has not booked yet (for the paper account): the order left the
        working set (or shrank) with them, and they are in no position until the OMS's ledger write is done."""
        for vo, booked in self._unbooked.values():
            yield vo.request, vo.filled - booked, vo.average_price_paise

    def _stop_refusal(self, order_id: str, request: t.OrderRequest, price_paise: int, trigger_paise: int) -> str:
        """Kotak's refusal of a stop with these terms, against the token's last price of today (fill_rules)."""
        if request.order_type not in STOPS:
            return ""
        tick = self._last.get(request.token)
        today = tick is not None and ist_day_number(tick.ts_ns) == ist_day_number(self.clock.now_ns())
        return stop_refusal(order_id, request.side, request.order_type, price_paise, trigger_paise,
                            tick.ltp_paise if tick is not None and today else 0)

    def _fills_on_arrival(self, vo: VirtualOrder, ioc: bool = False) -> bool:
        """Whether the order fills on arrival (placed, or changed): the fills are decided now, at the last tick's
        prices, and booked after the burst (_book_arrivals), an IOC order's unfilled rest cancelled then."""
        legs = self._arrival_fills(vo)
        if not legs:
            return False
        self._arrivals.append((vo, legs, self.clock.now_ns(), ioc))
        if self._booking is None:
            self._booking = asyncio.get_running_loop().create_task(self._book_arrivals_soon())
        return True

    def _arrival_fills(self, vo: VirtualOrder) -> list[Leg]:
        """The fills a MARKET or marketable LIMIT order gets on arrival; none: it does not trade now. A triggered stop
        is at the exchange the MARKET (STOP_MARKET) or LIMIT (STOP_LIMIT) order it became: a change of it arrives
        as one (a stop-loss chased with a marketable limit trades at once)."""
        kind = vo.request.order_type
        if vo.triggered:
            kind = _TRIGGERED_AS.get(kind, kind)
        if kind not in (t.ORDER_TYPE_MARKET, t.ORDER_TYPE_LIMIT):
            return []
        now = self.clock.now_ns()
        tick = self._last.get(vo.request.token)
        if tick is None or not trades_at(tick.ts_ns, now, vo.opens_ns, vo.closes_ns):
            return []
        if vo.closes_ns and now - self._ticked_ns > self._stall_ns:
            log.warning("feed stalled: the order waits for the next tick, not filled at the prices from before",
                        extra={"order_id": vo.id, "token": vo.request.token,
                               "silent_s": round((now - self._ticked_ns) / NS, 1)})
            return []
        return self._tick_fills(vo, tick, kind)

    def _tick_fills(self, vo: VirtualOrder, tick: market_pb2.Tick, kind: int) -> list[Leg]:
        """fill_rules.tick_fills for the order's remainder as `kind` (MARKET or LIMIT), taking from the tick's depth
        what orders before it at the same tick left."""
        side, token = vo.request.side, vo.request.token
        limit = vo.request.price_paise if kind == t.ORDER_TYPE_LIMIT else 0
        if not (tick.asks if side == t.SIDE_BUY else tick.bids):
            return tick_fills(side, tick, vo.remaining, limit)
        taken_at = self._depth_taken.get((token, side))
        taken = taken_at[1] if taken_at is not None and taken_at[0] is tick else 0
        legs = tick_fills(side, tick, vo.remaining, limit, taken)
        if legs:
            self._depth_taken[(token, side)] = (tick, taken + sum(quantity for quantity, _ in legs))
        return legs

    async def _book_arrivals_soon(self) -> None:
        try:
            await self._book_arrivals()
        except Exception:  # never expected (the fills are decided); left for the next read of the book
            log.exception("arrival fills not booked yet")
        finally:
            self._booking = None

    async def _book_arrivals(self) -> None:
        """Book the fills decided on arrival, in placement order: every read or change of the book does this
        first, so nothing sees an order that filled on arrival as still working."""
        while self._arrivals:
            vo, legs, at_ns, ioc = self._arrivals.popleft()
            await self._take(vo, legs, at_ns, ioc)

    async def _take(self, vo: VirtualOrder, legs: list[Leg], at_ns: int = 0, ioc: bool = False) -> None:
        """Fill the order leg by leg (one event each); an IOC order's rest is cancelled after them."""
        for quantity, price in legs:
            await self._fill(vo, quantity, price, at_ns)
        if ioc and vo.status not in TERMINAL:
            await self._close(vo, t.ORDER_STATUS_CANCELLED, "IOC order: the rest not filled on arrival" if vo.filled
                              else "IOC order not filled on arrival")

    async def _fill(self, vo: VirtualOrder, quantity: int, price_paise: int, at_ns: int = 0) -> None:
        if quantity <= 0 or vo.status in TERMINAL:
            return
        quantity = min(quantity, vo.remaining)
        if self.account is not None:
            self._unbooked.setdefault(vo.id, (vo, vo.filled))  # counted as a position until the OMS books it
            self.account.forget_count()
        charges = self.charges.for_fill(vo.request, quantity, price_paise, vo.brokerage_paise, vo.cost_paise)
        vo.filled += quantity
        vo.cost_paise += quantity * price_paise
        vo.charges_paise += charges.total
        vo.brokerage_paise += charges.brokerage
        vo.last_fill = (quantity, price_paise, charges.total)
        vo.status = t.ORDER_STATUS_TRADED if vo.remaining == 0 else t.ORDER_STATUS_PARTIALLY_FILLED
        if vo.status in TERMINAL:
            self._retire(vo)
        await self._emit(vo, at_ns)
        vo.last_fill = (0, 0, 0)

    async def _close(self, vo: VirtualOrder, status: int, reason: str) -> None:
        vo.status, vo.reason = status, reason
        self._retire(vo)
        await self._emit(vo)

    def _working_order(self, exchange_order_id: str) -> VirtualOrder:
        vo = self.book.get(exchange_order_id)
        if vo is None:
            raise NotFound(f"no virtual order {exchange_order_id}; list orders to find its id")
        if vo.status in TERMINAL:
            raise BrokerRejected(f"order {vo.id} is already {name(vo.status)}")
        return vo

    def _add(self, vo: VirtualOrder) -> None:
        self.book[vo.id] = vo
        if vo.request.client_order_id:
            self._by_tag[vo.request.client_order_id] = vo
        if vo.status not in TERMINAL:
            vo.opens_ns, vo.closes_ns = session_window(vo.request.exchange_segment, vo.placed_ns)
            if vo.closes_ns:
                self._closes_at = min(self._closes_at, vo.closes_ns)
            self._working.setdefault(vo.request.token, []).append(vo)
            if vo.request.order_type in STOPS and not vo.triggered:
                self._stops.setdefault(vo.request.token, []).append(vo)

    def _rest(self, vo: VirtualOrder) -> None:
        """Index a working order that rests at its limit (not one waiting for its tick): its token's ticks fill it."""
        if vo.status in TERMINAL or not vo.rests_at_limit:
            return
        resting = self._resting.setdefault(vo.request.token, [])
        if vo not in resting:
            resting.append(vo)

    def _retire(self, vo: VirtualOrder) -> None:
        token = vo.request.token
        working = self._working.get(token, [])
        if vo in working:
            working.remove(vo)
        drop(self._awaiting_tick, vo)
        drop(self._stops, vo)
        drop(self._resting, vo)

    def _event(self, vo: VirtualOrder, at_ns: int = 0) -> BrokerOrderEvent:
        return vo.event(at_ns or self.clock.now_ns())

    async def _emit(self, vo: VirtualOrder, at_ns: int = 0) -> None:
        await self._events.put(self._event(vo, at_ns))

