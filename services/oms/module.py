"""The OMS module: consumes accepted orders, candles and ticks from the bus; serves OrderService requests.

Owns the OrderEngine (ledger + broker); publishes ORDER_UPDATES; asks RiskService/SubmitOrder for manual orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque

from prometheus_client import Gauge

from services.oms.broker import Broker, BrokerOrderEvent
from services.oms.config import OmsSettings
from services.oms.engine import OrderEngine
from services.oms.lease import LedgerLease
from services.oms.ledger import Ledger
from services.oms.paper import RECOUNT_S, PaperAccount
from services.oms.reconcile import (
    PositionDifference,
    Restored,
    position_differences,
    rebuild_carried_positions,
    rebuild_positions,
    reconcile,
    settle,
    take_carried_positions,
)
from services.oms.service import OrderService
from services.oms.states import DAY_BOUND
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Bus, Subscription, Topic
from shared.clock import NS, Clock, day_of, ist_day_number, ist_ns
from shared.component import Component
from shared.contracts import market_pb2, ops_pb2
from shared.contracts import trading_pb2 as t
from shared.money import fmt_inr, to_paise, to_rupees

log = logging.getLogger(__name__)

LOGIN_WATCH_S = 2.0  # how often the broker's session trouble (login_trouble) is looked at
MIN_RECOUNT_WAIT_S = 0.001  # a replay's clock may run thousands of times the real one: a count at most every 1 ms


def recount_wait_s(real_s: float, market_ns: int) -> float:
    """The real seconds until a paper count made now is half its life old, at the pace the market's clock kept
    over the last `real_s` (it moved `market_ns`): never longer than on the real clock."""
    speed = market_ns / NS / real_s if real_s > 0 else 1.0
    return max(MIN_RECOUNT_WAIT_S, RECOUNT_S / 2 / max(speed, 1.0))


STOP_WAIT_S = 10.0  # a Kotak REST call times out well within this
SETTLE_RETRY_S = (1.0, 30.0)  # first and longest wait between order-book reads for orders restored at start
DAY_CHECK_S = 60.0  # how often (real seconds) to look whether a new trading day has started
MAX_BURST = 100  # decisions written ahead in one ledger transaction at most
POSITION_DIFFERENCES = Gauge("neopulse_oms_position_differences",
                             "Positions whose net quantity has differed from the broker's for position_grace_s")
FUNDS = Gauge("neopulse_funds_rupees", "The trading account's funds at the last read (OrderService/GetFunds): "
              "available, margin_used, total", ["kind"])
ORDERS_IN_MEMORY = Gauge("neopulse_oms_orders_in_memory",
                         "Orders the OMS holds in memory: today's and those still worked on (earlier days' that ended "
                         "are dropped at the day roll; the ledger keeps them)")


class OmsModule(Component):
    name = "oms"

    def __init__(self, bus: Bus, settings: OmsSettings, broker: Broker, ledger: Ledger, clock: Clock) -> None:
        super().__init__(bus)
        self.settings = settings
        self.broker = broker
        self.ledger = ledger
        self.clock = clock
        self.engine = OrderEngine(bus, settings, broker, ledger, clock)
        self.service = OrderService(bus, settings, self.engine)
        if isinstance(broker, VirtualBroker):  # paper trading: an account of its own, on this book's positions
            broker.account = PaperAccount(to_paise(settings.paper_capital), settings.paper_rates(),
                                          self.engine.roll_day, clock.now_ns)
            self.engine.on_fill_booked = broker.fill_booked  # its fills count until the book has them
        orders = self.engine.orders  # read at each scrape (the dict itself: forget_ended changes it in place)
        ORDERS_IN_MEMORY.set_function(lambda: len(orders))
        self.reconciled: dict[str, int] = {}
        self._book_ready = asyncio.Event()  # sequence, positions and the ledger's orders loaded
        self._unsettled: Restored | None = None  # restored orders the broker's book could not be read for
        self._decisions: Subscription | None = None  # ORDERS, from start() until stop() detaches it
        self.decisions_settled = False  # stop() left every decision it took in the ledger (placed or not sent)
        self.settle_retry_s = SETTLE_RETRY_S
        self.day_check_s = DAY_CHECK_S
        # One OMS per durable ledger (PostgreSQL): taken before the ledger is read, kept while running.
        self.lease = LedgerLease(ledger.pool) if ledger.durable and hasattr(ledger, "pool") else None

    async def start(self) -> None:
        # Decisions are queued from the first moment: risk may accept one while the ledger is still being read
        # (in the monolith it is running already; in split mode the bridge is connected), and a topic nobody has
        # subscribed to yet delivers to no one. They are handled once the book is ready.
        # A burst of decisions is written ahead together (one flush to disk), then placed in order.
        self._decisions = self.bus.subscribe(Topic.ORDERS, self.name, self._on_decisions, max_batch=MAX_BURST)
        if self.lease is not None:
            await self.lease.take()  # raises ConfigError naming the OMS that has the ledger
        await self.engine.start_sequence()
        if self.broker.in_process:  # paper: its carried positions are in its ledger alone
            await self._rebuild_carried_positions()
        await rebuild_positions(self.engine)
        self.reconciled, self._unsettled = await reconcile(self.engine)
        await self._take_carried_positions()
        self._book_ready.set()
        self.bus.subscribe(Topic.CANDLES, self.name, self._on_candles)
        self.bus.subscribe(Topic.TICKS, self.name, self._on_ticks)
        self.service.register()
        log.info("oms ready", extra={"broker": self.broker.name, **self.reconciled})
        self.ready.set()

    async def stop(self) -> None:
        """Take no more decisions (those still queued are recorded as not sent), then let placements in flight
        finish (an order half-sent is worse than a slower stop). Before the ledger closes."""
        try:
            unplaced = await self._stop_taking_decisions(STOP_WAIT_S)
            if unplaced:
                log.warning("accepted decisions queued at stop recorded as not sent", extra={"count": len(unplaced)})
            left = await self.engine.settle(STOP_WAIT_S, unplaced)
            if left:
                log.warning("stopping with placements still in flight; reconciliation will resolve them",
                            extra={"count": left})
        finally:  # a stop cut short (the process's stop budget) or failing still lets the next OMS start
            if self.lease is not None:
                await self.lease.release()

    async def _stop_taking_decisions(self, within_s: float) -> list[t.RiskDecision]:
        """Stop taking decisions once the one being handled (written ahead, maybe placing) is done; returns those
        still queued. Cancelling the consumer mid-decision would leave an order half-written."""
        if self._decisions is None:
            return []
        queued, finished = await self.bus.detach(self._decisions, within_s)
        self._decisions = None
        self.decisions_settled = finished
        if not finished:
            log.warning("a decision was still being handled at stop; reconciliation will settle it")
        return queued

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume_events(), name="oms:broker-events")
            if self._unsettled is not None:
                tg.create_task(self._settle_later(self._unsettled), name="oms:settle-restored")
            if self.settings.poll_interval_s > 0 and not self.broker.in_process:
                # An in-process broker's events cannot go missing: reading its whole book every few seconds would
                # only hold the loop (~1.2 ms with the benchmark's ~250 orders, longer as the day's book grows).
                tg.create_task(self._poll(), name="oms:poll")
            tg.create_task(self._expire_each_day(), name="oms:day-orders")
            tg.create_task(self._apply_held_rows(), name="oms:held-rows")
            if self.lease is not None:
                tg.create_task(self.lease.keep(self._ledger_taken), name="oms:ledger-lease")
            if not self.broker.in_process and self.settings.position_check_s > 0:
                tg.create_task(self._check_positions(), name="oms:positions")
            if self.settings.funds_check_s > 0 and not self.clock_driven:
                tg.create_task(self._watch_funds(), name="oms:funds")
            # Clock-driven (a backtest), what is left is counted on the order path, at the replay's clock.
            if isinstance(self.broker, VirtualBroker) and self.broker.account is not None and not self.clock_driven:
                tg.create_task(self._recount_paper_funds(self.broker), name="oms:paper-funds")
            if hasattr(self.broker, "login_trouble"):
                tg.create_task(self._watch_login(), name="oms:broker-login")
            if self.settings.market_order_alert_s > 0 and not self.broker.in_process and not self.clock_driven:
                tg.create_task(self._watch_market_orders(), name="oms:market-orders")

    async def _recount_paper_funds(self, broker: VirtualBroker) -> None:
        """What the paper account has left, counted between orders rather than before one (~100 us), whenever the
        order path is idle and the last count is half its life old on the market's clock (paper.RECOUNT_S): every
        half second on the real clock, every ~8 ms of a session simulated at 60x, whose prices (and counts) age 60
        times as fast. Paced by the real seconds alone, a count was stale for all but 1/60 of such a session, and
        every burst's first order counted afresh on the order path."""
        mono, market, wait = time.monotonic(), self.clock.now_ns(), MIN_RECOUNT_WAIT_S
        while True:
            await self.bus.as_follow_up()
            broker.recount_funds()
            await asyncio.sleep(wait)
            then_mono, then_market, mono, market = mono, market, time.monotonic(), self.clock.now_ns()
            # At most twice the last wait: a replay's clock moving by jumps may stand still for a short while.
            wait = min(recount_wait_s(mono - then_mono, market - then_market), 2 * wait)

    async def _watch_market_orders(self) -> None:
        """A MARKET order working with nothing filled for market_order_alert_s: Kotak made it a limit at the last price
        +/- its market protection and the price has run past it (kotak-neo-api-v2 #78: one rested 17 minutes). A
        stop's exit or a square-off sent so guards nothing; the trader is told at once, once per order."""
        limit_s, told = self.settings.market_order_alert_s, set[str]()
        while True:
            await asyncio.sleep(min(limit_s / 2, 1.0))
            now, working = self.clock.now_ns(), self.engine.open_orders()
            told &= {u.internal_id for u in working}  # an order that ended is forgotten
            for u in working:
                if (u.request.order_type != t.ORDER_TYPE_MARKET or u.filled_quantity or u.internal_id in told
                        or u.status not in (t.ORDER_STATUS_OPEN, t.ORDER_STATUS_PARTIALLY_FILLED)
                        or now - u.ts_ns < limit_s * NS):
                    continue
                told.add(u.internal_id)
                side = t.Side.Name(u.request.side).removeprefix("SIDE_")
                text = (f"{side} {u.request.quantity} {u.request.symbol or u.request.token} at market has been working "
                        f"{(now - u.ts_ns) / NS:.0f} s with nothing filled ({u.client_order_id}, "
                        f"{u.request.strategy_tag or 'MANUAL'}): the broker holds it as a limit near the price it was "
                        "sent at, and the market has moved past it. Change its price (/modify), or cancel it and "
                        "close by hand.")
                log.critical("market order working unfilled", extra={"order_id": u.internal_id,
                                                                     "client_order_id": u.client_order_id})
                await self.engine.notify(ops_pb2.SEVERITY_CRITICAL, "Market order not filled", text,
                                         order_id=u.client_order_id)

    async def _watch_login(self) -> None:
        """The broker's session, when it cannot be renewed (KotakBroker.login_trouble: Kotak refused a re-login):
        nothing comes from the broker meanwhile (order updates, fills, positions) while stops and targets working
        there may fill. Told at once (CRITICAL), again when automatic login stops, and when a login works again."""
        told = ""  # "", "lost" or "stopped": what the trader was last told
        while True:
            trouble: str = getattr(self.broker, "login_trouble", "")
            kind = "" if not trouble else "stopped" if "automatic login stopped" in trouble else "lost"
            if kind != told:
                if kind:
                    log.critical("broker session lost", extra={"broker": self.broker.name, "trouble": trouble})
                    await self.engine.notify(ops_pb2.SEVERITY_CRITICAL, "Kotak automatic login stopped" if kind ==
                                             "stopped" else "Kotak session lost", trouble)
                else:
                    log.warning("broker session restored", extra={"broker": self.broker.name})
                    await self.engine.notify(ops_pb2.SEVERITY_WARNING, "Kotak session restored", (
                        "Logged in again: order updates, fills and positions from Kotak come again. Check what "
                        "filled meanwhile (/orders, /positions)."))
                told = kind
            await asyncio.sleep(LOGIN_WATCH_S)

    async def _watch_funds(self) -> None:
        """The account's funds as gauges, and a warning when what is left to trade with runs low: orders needing
        more are refused by the broker's RMS (the paper account's too), strategies' entries among them."""
        low = False
        while True:
            try:
                funds = await self.broker.funds()
            except Exception as exc:
                log.warning("the account's funds could not be read", extra={"error": f"{type(exc).__name__}: {exc}"})
            else:
                for kind, paise in (("available", funds.available_paise), ("margin_used", funds.margin_used_paise),
                                    ("total", funds.total_paise)):
                    FUNDS.labels(kind).set(paise / 100)
                short = funds.available_paise * 100 < funds.total_paise * self.settings.low_funds_pct
                if short and not low:
                    await self.engine.notify(ops_pb2.SEVERITY_WARNING, "Funds running low", (
                        f"{fmt_inr(funds.available_paise)} available of {fmt_inr(funds.total_paise)} "
                        f"({fmt_inr(funds.margin_used_paise)} held as margin) in the {funds.account} account. The "
                        "broker refuses orders that need more; exits still go."), account=funds.account)
                low = short
            await asyncio.sleep(self.settings.funds_check_s)

    async def _apply_held_rows(self) -> None:
        """Broker rows held back while an order's cancel was under way, applied once that wait is over."""
        engine = self.engine
        while True:
            engine.held_rows_changed.clear()
            try:
                due = await engine.apply_held_rows()
            except Exception:
                log.exception("held broker rows not applied; trying again")
                due = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):  # None: until a row is held
                    await engine.held_rows_changed.wait()

    async def _ledger_taken(self, holder: str) -> None:
        """Another OMS took the ledger while this one's lock connection was gone: this one stops placing orders."""
        self.engine.ledger_taken = holder
        log.critical("another OMS took the order ledger; this one records every decision as not sent",
                     extra={"holder": holder})
        await self.engine.notify(ops_pb2.SEVERITY_CRITICAL, "Order ledger taken by another OMS", (
            f"While this OMS's database connection was gone, {holder} took the order ledger. This OMS now places "
            "nothing (decisions are recorded as not sent); stop one of the two."), holder=holder)

    async def _on_decisions(self, decisions: list[t.RiskDecision]) -> None:
        if not self._book_ready.is_set():
            await self._book_ready.wait()
        await self.engine.accept_many(decisions)

    async def _on_candles(self, batch: market_pb2.CandleBatch) -> None:
        for candle in batch.candles:
            await self.broker.on_candle(candle)

    async def _on_ticks(self, batch: market_pb2.TickBatch) -> None:
        # Hot path: the broker keeps last prices, the position book marks only tokens it holds.
        await self.broker.on_ticks(batch)
        mark = self.engine.roll_day().mark
        for tick in batch.ticks:
            mark(tick.token, tick.ltp_paise)

    async def _expire_each_day(self) -> None:
        """When a new IST trading day starts, start the position book's day and settle the DAY orders still open
        from earlier days against the broker's book: the broker expired them at its close, and a long-running
        process hears nothing of it (the new day's book no longer lists them). Those it does list are matched;
        the rest are cancelled."""
        day = ist_day_number(self.clock.now_ns())
        while True:
            await asyncio.sleep(self.day_check_s)
            today = ist_day_number(self.clock.now_ns())
            if today == day:
                continue
            self.engine.roll_day()  # overnight, before the first tick of the day marks the book
            stale = [u for u in self.engine.open_orders() if u.ts_ns and ist_day_number(u.ts_ns) < today
                     and u.request.validity in DAY_BOUND]
            counts = await settle(self.engine, stale, [])
            if counts["unsettled"]:
                continue  # the book could not be read, or an order not settled (the ledger): again at the next check
            day = today
            if stale:
                log.warning("open DAY orders of earlier days settled", extra=counts)
            forgotten = self.engine.forget_ended(ist_ns(day_of(self.clock.now_ns()), 0, 0))
            log.info("orders ended on earlier days dropped from memory (the ledger keeps them)",
                     extra={"orders": forgotten, "in_memory": len(self.engine.orders)})

    async def _check_positions(self) -> None:
        """The broker's positions against the book's. Risk counts only the book: a position opened outside
        NeoPulse (the broker's app) or carried from an earlier day across a restart escapes the position and
        loss limits. A difference still seen `position_grace_s` after its first sighting (not a fill the broker
        counted before its event reached the book: that one is gone by then, however short the check interval)
        is one critical alert, and again when it changes; a read that fails is retried at the next check."""
        interval, grace = self.settings.position_check_s, self.settings.position_grace_s
        loop = asyncio.get_running_loop()
        first_seen: dict[PositionDifference, float] = {}
        alerted: frozenset[PositionDifference] = frozenset()
        while True:
            try:
                differences = await position_differences(self.engine)
            except Exception as exc:
                log.warning("broker positions could not be read for the position check", extra={"error": str(exc)})
                await asyncio.sleep(interval)
                continue
            now = loop.time()
            first_seen = {d: first_seen.get(d, now) for d in differences}
            confirmed = frozenset(d for d, seen in first_seen.items() if now - seen >= grace)
            POSITION_DIFFERENCES.set(len(confirmed))
            if confirmed - alerted:
                await self._alert_positions(sorted(confirmed))
            alerted = confirmed
            due = [seen + grace - now for d, seen in first_seen.items() if d not in confirmed]
            await asyncio.sleep(min(interval, *due) if due else interval)

    async def _alert_positions(self, differences: list[PositionDifference]) -> None:
        lines = "; ".join(d.describe(self.broker.name) for d in differences)
        log.critical("broker positions differ from the book", extra={"differences": lines})
        await self.engine.notify(ops_pb2.SEVERITY_CRITICAL, "Positions differ from the broker's", (
            f"{lines}. NeoPulse's risk limits and daily loss count only its own book: a position opened outside "
            "NeoPulse or carried from an earlier day across a restart is not covered. Check the broker's positions."),
            differences=str(len(differences)))

    async def _rebuild_carried_positions(self) -> None:
        """The paper account's CNC and NRML positions from earlier days (reconcile.rebuild_carried_positions): the
        broker's positions are the real account's, and the book's are today's fills alone."""
        carried = await rebuild_carried_positions(self.engine)
        if carried:
            log.info("paper positions carried from earlier days rebuilt from the ledger", extra={"positions": "; ".join(
                f"{p.symbol or p.token} {t.Product.Name(p.product).removeprefix('PRODUCT_')}: {p.net_quantity:+d} at "
                f"{to_rupees(p.average_price_paise)}" for p in carried)})

    async def _take_carried_positions(self) -> None:
        """Before risk can ask for positions (ListPositions) and before any decision is placed: a broker holding
        real positions (not the paper VirtualBroker, whose positions are the real account's) and the position
        check on. A read that fails leaves them to the position check's alert."""
        if self.broker.in_process or self.settings.position_check_s <= 0:
            return
        try:
            taken = await take_carried_positions(self.engine)
        except Exception as exc:
            log.warning("broker positions (or holdings) could not be read at start; carried positions are not in "
                        "the book", extra={"error": str(exc)})
            return
        if not taken:
            return
        lines = "; ".join(f"{p.symbol or p.token} {t.Product.Name(p.product).removeprefix('PRODUCT_')}: "
                          f"{p.net_quantity:+d} at {to_rupees(p.average_price_paise)}" for p in taken)
        log.warning("broker positions taken into the book", extra={"positions": lines})
        await self.engine.notify(ops_pb2.SEVERITY_WARNING, "Broker positions taken into the book", (
            f"{lines} ({self.broker.name}'s quantity, at its last price): carried from an earlier day or opened "
            "outside NeoPulse (on an instrument NeoPulse traded today, the carried part, under today's fills). "
            "Risk's position and loss limits "
            f"count them from now, their P&L from that price (the last price {self.broker.name} gave, else the "
            "average price). Not in the order ledger."), positions=str(len(taken)))

    async def _settle_later(self, restored: Restored) -> None:
        """Settle the orders restored at start (and only them: an order placed since is not a restart leftover),
        again with back-off until the order book answers and the ledger takes every one."""
        delay, max_s = self.settle_retry_s
        while True:
            await asyncio.sleep(delay)
            counts = await settle(self.engine, *restored)
            if not counts["unsettled"]:
                self.reconciled.update({k: v for k, v in counts.items() if k != "open"})
                return
            delay = min(max_s, delay * 2)

    async def _consume_events(self) -> None:
        """Broker events in arrival order per order. An event for an order whose lock is held (a placement
        resolving an unknown outcome can take seconds) waits in that order's backlog, not in front of
        every other order's fills; so does one that failed (the ledger), applied again until it is recorded,
        before that order's later events."""
        backlogs: dict[str, deque[BrokerOrderEvent]] = {}
        async with asyncio.TaskGroup() as tg:
            def hold(iid: str, event: BrokerOrderEvent) -> None:
                if iid not in backlogs:
                    backlogs[iid] = deque()
                    tg.create_task(self._drain_backlog(iid, backlogs), name=f"oms:events:{iid}")
                backlogs[iid].append(event)

            async for event in self.broker.events():
                iid = self.engine.order_of(event)
                if iid is not None and (iid in backlogs or self.engine.busy(iid)):
                    hold(iid, event)
                    continue
                try:
                    await self.engine.on_event(event)
                except Exception as exc:
                    log.warning("broker event not applied; applying it again", extra={
                        "order_id": iid, "exchange_order_id": event.exchange_order_id, "error": str(exc)})
                    if iid is not None:
                        hold(iid, event)

    async def _drain_backlog(self, iid: str, backlogs: dict[str, deque[BrokerOrderEvent]]) -> None:
        backlog = backlogs[iid]
        while backlog:  # each waits for the order's lock, and is applied until the ledger takes it
            await self.engine.until_recorded(iid, functools.partial(self.engine.on_event, backlog[0]),
                                             "broker event")
            backlog.popleft()
        del backlogs[iid]

    async def _poll(self) -> None:
        """Brokers without an order feed: read the order book while we have orders working there."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            working = {u.exchange_order_id for u in self.engine.open_orders() if u.exchange_order_id}
            given_up = self.engine.given_up_tags()  # they may still turn up at the broker: adopted then
            if not working and not given_up:
                continue
            try:
                book = await self.broker.order_book()
            except Exception as exc:
                log.warning("order book poll failed", extra={"error": str(exc)})
                continue
            for event in (e for e in book if e.exchange_order_id in working or e.client_order_id in given_up):
                try:
                    await self.engine.on_event(event)
                except Exception:
                    log.exception("polled order state failed", extra={"exchange_order_id": event.exchange_order_id})
