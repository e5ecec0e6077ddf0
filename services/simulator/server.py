"""The Kotak Neo simulator: REST, the SFeed websocket (/feed) and the order feed (/orders) on one aiohttp port.

Owns the simulated session, market clock and fault knobs; rest.py and feeds.py hold the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import pyotp
from aiohttp import web

from services.simulator import feeds, rest
from services.simulator.exchange import Exchange, SimOrder
from shared.clock import Clock, SimClock, segment_open
from shared.contracts import market_pb2
from shared.indices import IndexBoard
from shared.kotak.config import SIMULATOR_CREDENTIALS
from shared.marketdata import SyntheticMarket, nse_instruments

log = logging.getLogger(__name__)
ORDER_ENDPOINTS = frozenset({"place_order", "modify_order", "cancel_order"})  # Kotak's order rate limit


@dataclass(frozen=True)
class SimCredentials:
    """What the simulator accepts at login. Test values only; never real credentials."""

    consumer_key: str = SIMULATOR_CREDENTIALS["consumer_key"]
    mobile: str = SIMULATOR_CREDENTIALS["mobile"]
    ucc: str = SIMULATOR_CREDENTIALS["ucc"]
    mpin: str = SIMULATOR_CREDENTIALS["mpin"]
    totp_secret: str = SIMULATOR_CREDENTIALS["totp_secret"]
    totp_interval_s: int = 30  # Kotak's codes change every 30 s; tests of re-login shorten it

    def totp(self) -> pyotp.TOTP:
        return pyotp.TOTP(self.totp_secret, interval=self.totp_interval_s)

    def totp_now(self) -> str:
        return self.totp().now()


@dataclass
class Fault:
    delay_s: float = 0.0
    status: int = 0
    body: dict = field(default_factory=dict)
    text: str = ""  # answered as it is (an HTML error page from a gateway), instead of `body` as JSON
    hang: bool = False  # do the work, then never answer (until the simulator stops): a broker call that hangs
    after_work: bool = False  # answer `status` after doing the work: a gateway that timed out on a call Kotak made


class Simulator:
    """A local Kotak Neo the unmodified SDK talks to.

    tick_interval: real seconds between market steps (None = no automatic ticks; tests push ticks).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int = 7, speed: float = 1.0,
                 instruments: list[market_pb2.Instrument] | None = None, clock: Clock | None = None,
                 tick_interval: float | None = 0.25, credentials: SimCredentials | None = None) -> None:
        self.host, self.port = host, port
        self.creds = credentials or SimCredentials()
        self.clock = clock or SimClock(speed=speed)
        self.instruments = instruments or nse_instruments()
        self.market = SyntheticMarket(self.instruments, seed=seed)
        self.exchange = Exchange(self.instruments)
        self.indices = IndexBoard.for_instruments(self.instruments)  # Nifty 50, Nifty Bank, from the constituents
        self._segments = {i.exchange_segment for i in self.instruments}
        self.tick_interval = tick_interval
        self.sessions: dict[str, str] = {}  # trade token -> sid
        self._view: dict[str, str] = {}  # view token -> sid
        self.calls: Counter[str] = Counter()
        self.logins = 0
        self.faults: dict[str, Fault] = {}
        # Kotak's rate limit on order requests (place, modify, cancel): over this many in a second, HTTP 429 and
        # nothing done (0: no limit). And order requests to answer 429 whatever the rate (throttle_next).
        self.order_quota_per_s = 0
        self._order_times: deque[float] = deque()
        self._throttle: Counter[str] = Counter()
        self.reject_reason = ""
        self.reject_synchronously = False
        # Kotak, like RFC 6238 asks, refuses a TOTP that already logged in once. Off by default so tests that
        # log in twice within one 30 s step need not wait for the next code; tests of re-login turn it on.
        self.refuse_reused_totp = False
        self._used_totps: set[str] = set()
        self.mute_order_feed = False
        # A cancel reaches the exchange this long after Kotak took it (0: at once): the order is "cancel pending"
        # meanwhile, may still fill, and a second cancel of it is refused.
        self.cancel_pending_s = 0.0
        self.refuse_pending_cancels = ""  # set: the exchange refuses pending cancels with this reason
        self._cancels: set[asyncio.Task] = set()
        # Send order-feed messages this late, in order (the REST answers and the positions are not held back):
        # Kotak's positions can count a fill before its order-feed message reaches the client.
        self.order_feed_delay_s = 0.0
        self._late_orders: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._late_sender: asyncio.Task | None = None
        # Leave GuiOrdId (the tag) out of order-feed messages: the SDK's OrderData and Kotak's order-feed field
        # list (order_feed.md) do not name it, so a client must not rely on the feed carrying it.
        self.order_feed_without_tag = False
        self.order_feed_loose_types = False  # rows that do not fit the SDK's OrderData model (it hands over a dict)
        self.feed_sockets: set[feeds.FeedClient] = set()
        self.order_sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()  # releases the calls hung by hang_next
        self.order_feed_logins = 0  # order-feed sockets that authenticated
        self.close_order_feeds_after_ack = 0  # this many next order-feed sockets are closed right after their ack
        self.close_feeds_after_subscribe = 0  # this many next /feed subscribes are answered, then the socket closed

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> int:
        app = web.Application()
        rest.add_routes(app, self)
        app.router.add_get("/feed", self._feed)
        app.router.add_get("/orders", self._orders)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.tick_interval:
            self._ticker = asyncio.create_task(self._tick_loop(), name="simulator-ticks")
        log.info("kotak simulator listening", extra={"base_url": self.base_url})
        return self.port

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        return await feeds.feed_handler(request, self)

    async def _orders(self, request: web.Request) -> web.StreamResponse:
        return await feeds.orders_handler(request, self)

    async def stop(self) -> None:
        self.stopping.set()
        for task in (self._ticker, self._late_sender, *self._cancels):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.drop_feeds()
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def feed_url(self) -> str:
        return f"ws://{self.host}:{self.port}/feed"

    @property
    def orders_url(self) -> str:
        return f"ws://{self.host}:{self.port}/orders"

    # sessions ----------------------------------------------------------------
    def new_view_session(self) -> tuple[str, str]:
        view, sid = secrets.token_hex(16), secrets.token_hex(8)
        self._view[view] = sid
        return view, sid

    def upgrade_session(self, view: str, sid: str) -> str | None:
        if self._view.get(view) != sid:
            return None
        del self._view[view]
        token = secrets.token_hex(16)
        self.sessions[token] = sid
        self.logins += 1
        return token

    def accept_totp(self, code: str) -> bool:
        """True when `code` is a valid TOTP now (one step of drift allowed) not already used for a login."""
        if not self.creds.totp().verify(code, valid_window=1):
            return False
        if self.refuse_reused_totp and code in self._used_totps:
            return False
        self._used_totps.add(code)
        return True

    def session_valid(self, token: str | None, sid: str | None) -> bool:
        return bool(token) and self.sessions.get(token or "") == sid

    def sid_valid(self, sid: str | None) -> bool:
        return bool(sid) and sid in self.sessions.values()

    # knobs -------------------------------------------------------------------
    def expire_session(self) -> None:
        """Every issued token becomes invalid: REST replies Kotak's invalid-credentials error, feeds refuse auth."""
        self.sessions.clear()
        self._view.clear()

    def delay_next(self, endpoint: str, seconds: float) -> None:
        """Answer the next `endpoint` call late (after doing the work, so a delayed place still places)."""
        self.faults[endpoint] = Fault(delay_s=seconds)

    def hang_next(self, endpoint: str) -> None:
        """Do the next `endpoint` call's work (a hung place still places), then never answer until stop()."""
        self.faults[endpoint] = Fault(hang=True)

    def fail_next(self, endpoint: str, status: int = 500, body: dict | None = None, text: str = "",
                  after_work: bool = False) -> None:
        """Fail the next `endpoint` call without doing the work (or, `after_work`, having done it: a gateway's
        timeout on a call that went through): answer `body` as JSON, or `text` as an HTML page (what a gateway in
        front of Kotak answers a 502 with)."""
        self.faults[endpoint] = Fault(status=status, text=text, after_work=after_work, body=body or {
            "stat": "Not_Ok", "emsg": "Internal server error", "stCode": 500})

    def throttle_next(self, endpoint: str, times: int = 1) -> None:
        """Answer the next `times` calls of `endpoint` with Kotak's 429 (over its rate limit), doing nothing."""
        self._throttle[endpoint] += times

    def throttles(self, endpoint: str) -> bool:
        """Whether this call of `endpoint` is over Kotak's rate limit (a 429): throttle_next's, or order requests
        beyond order_quota_per_s in the last second (a throttled one does not count towards it)."""
        if self._throttle[endpoint] > 0:
            self._throttle[endpoint] -= 1
            return True
        if endpoint not in ORDER_ENDPOINTS or not self.order_quota_per_s:
            return False
        now = time.monotonic()
        while self._order_times and now - self._order_times[0] >= 1.0:
            self._order_times.popleft()
        if len(self._order_times) >= self.order_quota_per_s:
            return True
        self._order_times.append(now)
        return False

    def reject_next_order(self, reason: str, synchronous: bool = False) -> None:
        """Reject the next order with `reason`: at once in the place reply (Not_Ok, no order), or, like an
        RMS rejection, as an order that the book and order feed show "rejected" with rejRsn."""
        self.reject_reason, self.reject_synchronously = reason, synchronous

    def take_fault(self, endpoint: str) -> Fault | None:
        return self.faults.pop(endpoint, None)

    async def drop_feeds(self) -> None:
        """Close every /feed and /orders socket (clients see the connection drop)."""
        for client in list(self.feed_sockets):
            await client.ws.close()
        for ws in list(self.order_sockets):
            await ws.close()

    async def send_raw_feed_frame(self, frame: bytes) -> None:
        """Send bytes as they are to every feed socket (malformed-frame tests)."""
        for client in list(self.feed_sockets):
            await client.ws.send_bytes(frame)

    # market ------------------------------------------------------------------
    async def push_ticks(self, ticks: list[market_pb2.Tick]) -> None:
        """Make these the market: match resting orders, then stream them to subscribers, and the readings of the
        indices they move to the indices' subscribers."""
        async with self.lock:
            changed = self.exchange.update_market(ticks)
            readings = self.indices.update(ticks)
        for order in changed:
            await self.publish_order(order)
        for client in list(self.feed_sockets):
            await client.send_ticks(ticks)
            await client.send_indices(readings, self.indices)

    async def push_index_ticks(self, exact: list[market_pb2.Tick]) -> None:
        """Make these the indices' readings exactly (token = the index token, ltp_paise = the value, close_paise =
        the previous close) and stream them to the indices' subscribers. KeyError for a token that is no index."""
        async with self.lock:
            readings = [self.indices.set_reading(r) for r in exact]
        for client in list(self.feed_sockets):
            await client.send_indices(readings, self.indices)

    async def step(self) -> list[market_pb2.Tick]:
        """The next market step. Like SFeed, no ticks for an instrument while its segment is closed (outside its
        session, weekends, holidays): the clock of a paper run goes on past 15:30, the market does not."""
        now = self.clock.now_ns()
        if not any(segment_open(seg, now) for seg in self._segments):
            return []
        ticks = [t for t in self.market.next_ticks(now, len(self.instruments))
                 if segment_open(t.exchange_segment, now)]
        await self.push_ticks(ticks)
        return ticks

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("simulator market step failed")
            await asyncio.sleep(self.tick_interval or 1.0)

    # order feed ----------------------------------------------------------------
    async def publish_order(self, order: SimOrder) -> None:
        """Send the order's history entries not sent yet to every order-feed socket (a muted feed loses them)."""
        entries, order.sent = order.history[order.sent:], len(order.history)
        if self.mute_order_feed:
            return
        for entry in entries:
            data = dict(entry)
            if data["ordSt"] in ("put order req received", "validation pending", "open pending"):
                # The real feed leaves price and filled quantity empty in early states.
                data["avgPrc"], data["fldQty"] = "", None
            if self.order_feed_without_tag:
                data.pop("GuiOrdId", None)
            if self.order_feed_loose_types:  # numbers where the SDK's model wants strings, "" for no fills yet
                data["tok"], data["avgPrc"] = int(data["tok"]), float(data["avgPrc"] or 0)
                data["fldQty"] = data["fldQty"] or ""
            text = json.dumps({"type": "order", "data": data})
            if self.order_feed_delay_s > 0 or self._late_sender is not None:  # once late, all in one line
                self._late_orders.put_nowait((asyncio.get_running_loop().time() + self.order_feed_delay_s, text))
                if self._late_sender is None:
                    self._late_sender = asyncio.create_task(self._send_late(), name="simulator-late-orders")
            else:
                await self._send_order_text(text)

    async def _send_order_text(self, text: str) -> None:
        for ws in list(self.order_sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(text)

    async def _send_late(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, text = await self._late_orders.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._send_order_text(text)

    def finish_cancel_later(self, order: SimOrder) -> None:
        """The exchange's side of a pending cancel, cancel_pending_s from now."""
        async def finish() -> None:
            await asyncio.sleep(self.cancel_pending_s)
            async with self.lock:
                done = self.exchange.finish_cancel(order, self.refuse_pending_cancels)
            if done:
                await self.publish_order(order)

        task = asyncio.create_task(finish(), name="simulator-cancel")
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def after_place(self, order: SimOrder) -> None:
        await self.publish_order(order)
        async with self.lock:
            self.exchange.match_new(order)
        await self.publish_order(order)
