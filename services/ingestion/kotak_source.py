"""KotakFeedSource: market data from Kotak SFeed through the SDK websocket, as TickBatch per feed frame.

Talks to Kotak through shared.kotak.session (login, scrip master, SFeedWebSocket); owns reconnects. The packets
themselves (frames checked, depth trusted or not, messages to ticks) are services/ingestion/sfeed_packets.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any, Literal, TypeVar

from neo_api_client.websocket.feed import WsToken
from neo_api_client.websocket.feed.exceptions import AuthenticationError, NotConnectedError, SFeedWebSocketError
from neo_api_client.websocket.feed.models import SFeedIndex, SFeedScrip, SFeedScripLite
from neo_api_client.websocket.feed.protocol import decode_packet, split_batch
from websockets.exceptions import ConnectionClosed

from services.ingestion.sfeed_packets import (
    AHEAD_NS,
    _depth_key,
    depth_in_price_order,
    frame_is_well_formed,
    miscounted_depth,
    to_tick,
)
from services.ingestion.source import SourceStats, parse_index, resolve
from shared.clock import NS, Clock, RealClock, day_of, ist_day_number
from shared.contracts import market_pb2
from shared.errors import ConfigError, NeoPulseError, RetryableError
from shared.instruments import index_instrument
from shared.kotak.config import KotakSettings
from shared.kotak.session import KotakSession

log = logging.getLogger(__name__)
_T = TypeVar("_T")
StoredInstruments = Callable[[date], Awaitable[list[market_pb2.Instrument]]]  # the rows stored on an IST day
# Newer trades in a row, each below the cumulative volume held, after which the held volume is taken to be the
# wrong one (a corrupt but plausible value) rather than these stale: one such update alone is still dropped.
STALE_RUN_RESET = 3
# A connection that stayed up this long resets the reconnect backoff. Connecting, subscribing and the first tick (the
# subscribe snapshot) prove nothing: a server can accept, answer with a snapshot and close at once.
STABLE_AFTER_S = 10.0
# How long the frames a socket received after the SDK stopped reading it are read for (they are buffered already).
UNREAD_WITHIN_S = 1.0
# Queued behind the SDK's last message once its receive loop has ended (KotakFeedSource._watch_receiver).
_RECEIVER_DONE = object()
# Miscounted pictures remembered until their message is read (_note_miscounted): past this, forgotten (bounded).
MAX_MISCOUNTED = 1_000
# Ticks refused as ahead of this machine's clock are logged the first time, then summed up at most this often: a
# clock behind the exchange refuses every tick, and a line each would flood the log from the trading loop.
AHEAD_LOGGED_EVERY_S = 60.0


def _queued(ws: Any) -> list[Any]:
    """Messages the SDK's websocket received but nobody read yet (its queue is not public API: none if it moved)."""
    queue = getattr(ws, "_message_queue", None)
    out = []
    while queue is not None and not queue.empty():
        item = queue.get_nowait()
        if item is not _RECEIVER_DONE:
            out.append(item)
    return out


class _IndicesUnread(RetryableError):
    """The feed answered the indices' snapshot but gave no reading of some: asked again, then a ConfigError."""


class KotakFeedSource:
    """MarketSource over the SDK's SFeedWebSocket. mode: "depth" (market picture, 5 levels) or "lite"."""

    name = "kotak"

    def __init__(self, settings: KotakSettings, symbols: list[str], *, session: KotakSession | None = None,
                 mode: Literal["depth", "lite"] = "depth", indices: list[str] | None = None,
                 clock: Clock | None = None, stored: StoredInstruments | None = None) -> None:
        """`stored(day)`: the instrument_master rows stored that IST day (instrument_store.load_instruments), what a
        start falls back on when Kotak's scrip master cannot be read within [kotak] start_login_wait_s; None: none."""
        self.settings = settings
        self.clock = clock or RealClock()  # the exchange's time, as far as a tick's may run ahead of it (AHEAD_NS)
        self.symbols = symbols
        self.indices = [parse_index(i) for i in indices or []]  # (segment, name as Kotak spells it)
        self.session = session or KotakSession(settings)
        self.mode = mode
        self.stats = SourceStats()
        self._instruments: list[market_pb2.Instrument] | None = None
        self.stored = stored
        self.master_day: date | None = None  # the day of the scrip-master files held (None: not said, or stored rows)
        self._ws: Any = None
        self._frame_no = 0
        self._frames: deque[int] = deque()  # frame number of each message queued in the SDK, in order
        self._subscribed: frozenset[tuple[str, str]] = frozenset()  # (token, segment) as the SDK spells them
        # Last delivered tick per (segment, token, kind): a token is unique within its segment only.
        self._last: dict[tuple[str, int, str], market_pb2.Tick] = {}
        self._stale_run: dict[tuple[str, int, str], int] = {}  # newer trades dropped in a row for a lower volume
        self._closed = False
        self._unwatched_logged = False  # the SDK's receive loop could not be watched: said once
        self._miscounted: set[tuple[str, str, int, int, int]] = set()  # _depth_key of pictures to read without depth
        # Ticks refused as ahead of this machine's clock (also malformed_packets), and by how much the last one was:
        # the ingestion watchdog tells a clock behind the exchange's from them.
        self.ahead_ticks = 0
        self.ahead_by_ns = 0
        self._ahead_logged, self._ahead_logged_at = 0, -AHEAD_LOGGED_EVERY_S  # ahead_ticks when last logged, and when

    async def instruments(self) -> list[market_pb2.Instrument]:
        if self._instruments is None:
            if self.session.client is None:
                await self.session.login_at_start()
            instruments = await self._configured_at_start()
            # The SDK refuses a subscribe past its cap (SubscriptionError) on every connection: no retry helps.
            cap = getattr(self._socket(), "max_subscriptions", None)
            wanted = len(instruments) + len(self.indices)  # the SDK's cap counts every subscription, indices too
            if isinstance(cap, int) and wanted > cap:
                indices = f" and {len(self.indices)} indices" if self.indices else ""
                raise ConfigError(f"symbols: {len(instruments)} instruments{indices}, but the Kotak feed subscribes at "
                                  f"most {cap} on one connection; configure {cap} symbols and indices or fewer")
            instruments += await self._index_instruments()
            self._instruments = instruments
            self._subscribed = frozenset((str(i.token), i.exchange_segment.lower()) for i in instruments)
        return list(self._instruments)

    async def refresh_instruments(self) -> list[market_pb2.Instrument]:
        """Kotak's scrip master read again (once: the caller tries again later), for a process that runs across days:
        the configured symbols' rows of today's files (lot, tick and freeze revisions) replace the held ones; the
        indices stay as read at start. A ConfigError, with the held list kept, when a symbol is no longer listed (an
        expired contract: roll it in symbols) or now has another token (the feed subscribes by token: restart)."""
        held = await self.instruments()
        fresh, day = await self._configured()
        moved = [f"{i.symbol}: token {old.token} -> {i.token}" for old, i in zip(held, fresh, strict=False)
                 if (old.token, old.exchange_segment) != (i.token, i.exchange_segment)]
        if moved:
            raise ConfigError(f"symbols: Kotak's scrip master lists {'; '.join(moved)}; the feed and the other "
                              "modules follow the token read at start: restart NeoPulse to follow the new one")
        self._instruments, self.master_day = fresh + held[len(fresh):], day
        return list(self._instruments)

    async def _configured(self) -> tuple[list[market_pb2.Instrument], date | None]:
        """The configured symbols' rows of Kotak's scrip master (one read), in order, and the day of its files.
        Lower case segments, as resolve() reads them (the files' URLs are matched in lower case)."""
        segments = tuple(sorted({"nse_cm", *(s.split(":")[0].lower() for s in self.symbols if ":" in s)}))
        master = await self.session.dated_scrip_master(segments)
        # Off the event loop as the parse is (a linear pass over ~100,000 rows).
        return await asyncio.to_thread(resolve, self.symbols, master.instruments, "Kotak's scrip master"), master.day

    async def _configured_at_start(self) -> list[market_pb2.Instrument]:
        """_configured(), tried again within the start window. A Kotak that still does not give its scrip master
        (a 5xx, a failed download, a timeout) leaves the rows an earlier start stored today, if they list every
        symbol: the process must come up to manage the positions it holds (stops, square-off)."""
        try:
            instruments, self.master_day = await self._within_start_window(
                self._configured, "kotak scrip master not read at start; trying again")
            return instruments
        except RetryableError as exc:
            failed = (f"Kotak's scrip master could not be read within [kotak] start_login_wait_s "
                      f"({self.settings.start_login_wait_s:g} s): {exc}")
        day = day_of(self.clock.now_ns())
        try:
            rows = [] if self.stored is None else [i for i in await self.stored(day) if not i.is_index]
            instruments = resolve(self.symbols, rows, f"the instrument master stored today ({day})")
        except Exception as exc:  # none stored (or the database failed): Kotak's failure is the news
            why = "no database to read it from" if self.stored is None else self.session.scrub(str(exc))
            raise RetryableError(f"{failed}; no instrument master of today to start from ({why}); start again "
                                 "once Kotak answers") from None
        log.warning("kotak scrip master not read at start; starting from the instrument master stored today: "
                    "lot, tick and freeze as an earlier start read them", extra={"error": failed, "day": str(day)})
        return instruments

    async def _within_start_window(self, ask: Callable[[], Awaitable[_T]], what: str) -> _T:
        """ask(), asked again while it raises RetryableError, after reconnect_initial_s doubling up to reconnect_max_s,
        for at most [kotak] start_login_wait_s, as the login at start is: a blip at 09:14 must not leave the day
        unstarted. Any other error ends it at once; the last RetryableError once the window is spent."""
        deadline = time.monotonic() + self.settings.start_login_wait_s
        delay = self.settings.reconnect_initial_s
        while True:
            try:
                return await ask()
            except RetryableError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(what, extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _index_instruments(self) -> list[market_pb2.Instrument]:
        """The configured indices as instruments. SFeed subscribes an index by its name and streams it under a number
        of its own (26000 for Nifty 50), which candles, stored ticks and the other modules key it by: a snapshot of
        the indices, asked at start on a socket of its own, says which; asked again within the start window."""
        if not self.indices:
            return []
        try:
            return await self._within_start_window(self._ask_indices, "kotak feed not answering at start; asking "
                                                                      "again")
        except _IndicesUnread as exc:  # the feed answered, never with these: most likely the names
            raise ConfigError(str(exc)) from None

    async def _ask_indices(self) -> list[market_pb2.Instrument]:
        """One snapshot of the indices, within request_timeout_s for opening the socket and again for the answer.
        RetryableError when the feed is not reached or does not answer; a name without a reading from a feed that
        answered is a ConfigError naming it (a misspelt name gets no answer)."""
        wanted = {(segment, name.lower()): name for segment, name in self.indices}
        found: dict[tuple[str, str], market_pb2.Instrument] = {}
        timeout, answered = self.settings.request_timeout_s, False
        ws = self._socket()
        try:
            try:
                async with asyncio.timeout(timeout):
                    await ws.connect()
            except (TimeoutError, OSError, SFeedWebSocketError) as exc:
                raise RetryableError(f"indices: the Kotak feed could not be opened and authenticated within "
                                     f"{timeout:g} s ({self.session.scrub(repr(exc))}); check the network and "
                                     "[kotak] feed_url, then start again") from None
            try:
                async with asyncio.timeout(timeout):
                    await ws.snapshot([WsToken(segment, name) for segment, name in self.indices], intent="index")
                    ack = getattr(ws, "_subscribe_ack_event", None)  # an SDK internal: without it, taken as answered
                    answered = not isinstance(ack, asyncio.Event) or ack.is_set()
                    await self._read_indices(ws, wanted, found)
            except TimeoutError:
                pass  # what did not answer is named below
            except (OSError, ConnectionClosed, SFeedWebSocketError) as exc:
                raise RetryableError(f"indices: the Kotak feed closed while asked for them "
                                     f"({self.session.scrub(repr(exc))}); start again") from None
            except Exception as exc:
                raise NeoPulseError(f"indices: the Kotak feed could not be asked for them: "
                                    f"{self.session.scrub(repr(exc))}") from exc
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        missing = [f"{segment}:{name}" for (segment, key), name in wanted.items() if (segment, key) not in found]
        if missing and not (answered or found):
            raise RetryableError(f"indices: the Kotak feed did not answer a snapshot of {', '.join(missing)} within "
                                 f"{timeout:g} s; check the network, then start again")
        if missing:  # asked again until start_login_wait_s: a loaded feed at 09:14 may be slow to stream them
            raise _IndicesUnread(f"indices: no reading from the Kotak feed within {timeout:g} s for "
                                 f"{', '.join(missing)}; write each as Kotak spells it, e.g. \"Nifty 50\", "
                                 "\"Nifty Bank\" (or the feed stayed silent about them)")
        return [found[(segment, name.lower())] for segment, name in self.indices]

    @staticmethod
    async def _read_indices(ws: Any, wanted: dict[tuple[str, str], str],
                            found: dict[tuple[str, str], market_pb2.Instrument]) -> None:
        """Fill `found` from the index readings the socket streams, until every wanted one has come."""
        async for message in ws:
            if not isinstance(message, SFeedIndex) or not message.instrument_token.isdigit():
                continue
            for said in {message.name.lower(), (message.trading_symbol or "").lower()} - {""}:
                key = (message.exchange_segment.lower(), said)
                if key in wanted and key not in found:
                    found[key] = index_instrument(  # spelt as Kotak's feed spells it, if it does
                        int(message.instrument_token), message.name if message.name.lower() == key[1] else wanted[key],
                        message.exchange_segment.lower(), message.name)
            if len(found) == len(wanted):
                return

    def _socket(self) -> Any:
        """A new SDK feed socket, not connected. batches() reconnects on its own: the SDK's retries are off."""
        return self.session.websocket(max_reconnect_attempts=0, max_connect_retries=0)

    async def batches(self) -> AsyncIterator[market_pb2.TickBatch]:
        instruments = await self.instruments()
        delay = self.settings.reconnect_initial_s
        while not self._closed:
            up_since = 0.0
            try:
                ws = await self._connect(instruments)
                up_since = time.monotonic()
                async for batch in self._read(ws):
                    yield batch
            except AuthenticationError as exc:
                # A socket dropped or timed out while authenticating raises this as well as a refused session:
                # only Kotak's REST answer says the session expired (a login spends a TOTP code, up to 30 s).
                log.warning("kotak feed authentication failed", extra={"error": self.session.scrub(str(exc))})
                await self._renew_if_expired()
            except NotConnectedError:
                log.info("kotak feed disconnected")
            except (TimeoutError, OSError) as exc:
                log.warning("kotak feed connection failed", extra={"error": self.session.scrub(str(exc))})
            except Exception as exc:
                log.warning("kotak feed failed", extra={"error": self.session.scrub(repr(exc))})
            finally:
                await self._drop()
            if self._closed:
                return
            if up_since and time.monotonic() - up_since >= STABLE_AFTER_S:
                delay = self.settings.reconnect_initial_s  # it held: a new outage, not the same server refusing
            self.stats.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _renew_if_expired(self) -> None:
        """Ask Kotak whether the session is still valid: session.call logs in again only on a session-expired reply,
        and not when another caller (the broker meeting the same expiry) already did since."""
        try:
            await self.session.call("limits")
        except NeoPulseError as exc:
            log.warning("kotak session check failed; will retry", extra={"error": str(exc)})

    async def _connect(self, instruments: list[market_pb2.Instrument]) -> Any:
        ws = self._socket()
        ws.on_raw = self._on_raw
        ws.on_message = self._on_message
        ws.on_error = self._on_error
        self._ws = ws
        self._frames.clear()
        self._miscounted.clear()  # the pictures of an earlier socket that were never read are gone with it
        await ws.connect()
        self._watch_receiver(ws)
        # An index is subscribed by name below: its streaming number is not a scrip (and a second subscription).
        tokens = [WsToken(i.exchange_segment, str(i.token)) for i in instruments if not i.is_index]
        if self.mode == "lite":
            await ws.subscribe_scrips_lite(tokens)
        else:
            await ws.subscribe_depth(tokens)
        if self.indices:  # by name, as SFeed asks; they stream under their numbers (_index_instruments)
            await ws.subscribe_index([WsToken(segment, name) for segment, name in self.indices])
        self.stats.connected = True
        log.info("kotak feed subscribed", extra={"instruments": len(tokens), "mode": self.mode})
        return ws

    def _watch_receiver(self, ws: Any) -> None:
        """End the read when the SDK's receive loop ends. A close right behind a data frame ends that loop without
        its disconnect handling (it finds the socket closed before it reads again), and the SDK's iterator then
        waits on an empty queue forever. A marker queued behind the loop's last message ends the read once it has
        taken all that was received. Both are SDK internals: without them only the stall watchdog notices."""
        task, queue = getattr(ws, "_receive_task", None), getattr(ws, "_message_queue", None)
        if isinstance(task, asyncio.Future) and isinstance(queue, asyncio.Queue):
            task.add_done_callback(lambda _: queue.put_nowait(_RECEIVER_DONE))
        elif not self._unwatched_logged:
            self._unwatched_logged = True
            log.warning("kotak feed cannot watch the SDK's receive loop (SDK internals changed); a socket closed "
                        "right behind a data frame is noticed by the stall watchdog only")

    def _on_raw(self, raw: Any) -> None:
        self._frame_no += 1
        if isinstance(raw, (bytes, bytearray)):
            frame = bytes(raw)
            if not frame_is_well_formed(frame):
                self.stats.malformed_packets += 1
            for packet in miscounted_depth(frame):
                self._note_miscounted(packet)

    def _note_miscounted(self, packet: bytes) -> None:
        """Count a market picture whose depth counts disagree with its rows, and remember it: its message comes out
        of the SDK (at once, or after the subscribe ack) with its depth dealt to the wrong sides, and is read without
        its depth (_drop_untrusted_depth). Its trade fields do not depend on the counts."""
        try:
            message = decode_packet(packet, {})  # the fields of _depth_key do not depend on the price dividers
        except Exception:
            return  # the SDK cannot decode it either, and counts it (on_error)
        if isinstance(message, SFeedScrip):
            self.stats.malformed_packets += 1
            if len(self._miscounted) >= MAX_MISCOUNTED:
                self._miscounted.clear()
            self._miscounted.add(_depth_key(message))

    def _on_message(self, message: Any) -> None:
        self._frames.append(self._frame_no)

    def _on_error(self, exc: Exception) -> None:
        self.stats.malformed_packets += 1

    async def _read(self, ws: Any) -> AsyncIterator[market_pb2.TickBatch]:
        """One TickBatch per feed frame: the run of already-queued messages decoded from the same frame. Once the
        socket is gone, a last batch of what was received but not yet read, then NotConnectedError."""
        iterator = aiter(ws)
        while True:
            messages: list[Any] = []
            try:
                await self._take_frame(ws, iterator, messages)
            except (NotConnectedError, StopAsyncIteration):
                # The SDK refuses to iterate once its socket is gone, with frames it received still queued; a
                # drop while a frame is being split leaves its first messages taken and the rest queued.
                ticks = self._new_ticks(messages + _queued(ws), time.time_ns())
                if ticks:
                    yield market_pb2.TickBatch(ticks=ticks)
                raise NotConnectedError("kotak feed socket closed") from None
            ticks = self._new_ticks(messages, time.time_ns())
            if ticks:
                yield market_pb2.TickBatch(ticks=ticks)

    async def _take_frame(self, ws: Any, iterator: AsyncIterator[Any], messages: list[Any]) -> None:
        """Append the next frame's messages to `messages`, in place: a drop midway keeps what was taken."""
        message = await anext(iterator)
        if message is _RECEIVER_DONE:
            if not getattr(ws, "_stopped", True):
                log.warning("kotak feed socket closed without the SDK noticing; reconnecting")
                messages += await self._unread(ws)
            raise NotConnectedError("the SDK's receive loop ended")
        messages.append(message)
        frame = self._frames.popleft() if self._frames else -1
        while self._frames and self._frames[0] == frame:
            self._frames.popleft()
            messages.append(await anext(iterator))

    async def _unread(self, ws: Any) -> list[Any]:
        """Messages of the frames left in the websocket connection when the SDK's receive loop stopped without its
        disconnect handling: it stops at the first frame it reads once the close has arrived, and frames that came
        with that one wait behind it. Decoded as the SDK decodes them; an SDK internal (none if it moved)."""
        conn, messages = getattr(ws, "_ws", None), []
        try:
            async with asyncio.timeout(UNREAD_WITHIN_S):
                while conn is not None:
                    raw = await conn.recv()
                    self._on_raw(raw)
                    if isinstance(raw, (bytes, bytearray)):
                        messages += self._decode(bytes(raw), ws.dividers)
        except (ConnectionClosed, TimeoutError, AttributeError):
            pass  # all read (or the connection is not what we know): the read ends with what it has
        return messages

    def _decode(self, frame: bytes, dividers: dict[int, int]) -> list[Any]:
        out = []
        for packet in split_batch(frame):
            try:
                message = decode_packet(packet, dividers)
            except Exception:  # the SDK's own receive loop counts and skips a packet it cannot decode
                self.stats.malformed_packets += 1
                continue
            if message is not None:
                out.append(message)
        return out

    def _new_ticks(self, messages: list[Any], recv_ns: int) -> list[market_pb2.Tick]:
        """The frame's messages as new ticks; a corrupt message is counted and skipped, its frame mates kept."""
        ticks = []
        now = self.clock.now_ns()
        latest = now + AHEAD_NS
        for m in messages:
            try:
                if isinstance(m, (SFeedScrip, SFeedScripLite, SFeedIndex)) and (
                        m.instrument_token, m.exchange_segment) not in self._subscribed:
                    # A corrupt token or exchange id: another instrument's (or no instrument's) tick.
                    raise ValueError(f"not subscribed: {m.exchange_segment}|{m.instrument_token}")
                t = to_tick(m, recv_ns)
                if t is not None and isinstance(m, SFeedScrip):
                    self._drop_untrusted_depth(m, t)
                if t is not None and t.ts_ns > latest:
                    self._ahead(t, now)
                    continue
            except (ValueError, TypeError) as exc:
                self.stats.malformed_packets += 1
                log.warning("kotak feed message skipped", extra={"token": getattr(m, "instrument_token", ""),
                                                                  "error": str(exc)})
                continue
            if t is not None and self._is_new(t, m.type):
                ticks.append(t)
        return ticks

    def _ahead(self, tick: market_pb2.Tick, now: int) -> None:
        """Count and skip a tick whose trade time is more than AHEAD_NS ahead of this machine's clock: a corrupt time,
        or (every tick so) a clock behind the exchange's. Logged the first time, then a sum at most every
        AHEAD_LOGGED_EVERY_S."""
        self.stats.malformed_packets += 1
        self.ahead_ticks += 1
        self.ahead_by_ns = tick.ts_ns - now
        at = time.monotonic()
        if at - self._ahead_logged_at < AHEAD_LOGGED_EVERY_S:
            return
        log.warning("kotak feed ticks skipped: trade time ahead of this machine's clock (a corrupt time; or the "
                    "clock is behind: check NTP)", extra={"token": tick.token, "ahead_s": self.ahead_by_ns // NS,
                                                          "ticks": self.ahead_ticks - self._ahead_logged})
        self._ahead_logged, self._ahead_logged_at = self.ahead_ticks, at

    def _drop_untrusted_depth(self, message: SFeedScrip, tick: market_pb2.Tick) -> None:
        """Empty the tick's depth and touch when they cannot be trusted: a paper MARKET order fills at the touch. The
        packet's depth counts disagreed with its rows (counted when it came), or its levels are out of price order
        (counted here). The trade it reports stands."""
        why = ""
        if self._miscounted and _depth_key(message) in self._miscounted:
            self._miscounted.discard(_depth_key(message))
            why = "depth counts disagree with the rows carried"
        elif not depth_in_price_order(tick, bool(getattr(message, "auction", False))):
            self.stats.malformed_packets += 1
            why = "depth levels out of price order"
        if why:
            log.warning("kotak feed depth dropped", extra={"token": tick.token, "error": why})
            for name in ("bids", "asks", "bid_paise", "bid_qty", "ask_paise", "ask_qty"):
                tick.ClearField(name)

    def _is_new(self, tick: market_pb2.Tick, kind: str) -> bool:
        """False for a tick already delivered (the snapshot SFeed resends on every (re)subscribe) or, within one
        IST day, one with a lower cumulative volume (stale). A depth update whose volume did not grow traded
        nothing: its ltq (the feed repeats the last trade's) becomes 0."""
        key = (tick.exchange_segment, tick.token, kind)
        last = self._last.get(key)
        if last is None:
            self._last[key] = tick
            return True
        quote_only = False
        if tick.volume and ist_day_number(tick.ts_ns) == ist_day_number(last.ts_ns):  # volume restarts daily
            if tick.volume < last.volume:
                if tick.ts_ns <= last.ts_ns or self._stale_run.get(key, 0) + 1 < STALE_RUN_RESET:
                    self._stale_run[key] = self._stale_run.get(key, 0) + (tick.ts_ns > last.ts_ns)
                    return False
                # Several newer trades in a row all below the volume we hold: it is our reference that is wrong
                # (a corrupt but plausible volume was taken), not the feed. Without this the instrument would be
                # muted for the rest of the day.
                log.warning("kotak feed volume went back for several newer trades; taking the feed's",
                            extra={"token": tick.token, "held": last.volume, "now": tick.volume})
            quote_only = tick.volume == last.volume
        self._stale_run.pop(key, None)
        # Compare every field (OI, full depth) but recv_ns, and ltq when nothing traded: swap them in, no copy.
        recv_ns, ltq = tick.recv_ns, tick.ltq
        tick.recv_ns = last.recv_ns
        if quote_only:
            tick.ltq = last.ltq
        same = tick == last
        tick.recv_ns, tick.ltq = recv_ns, 0 if quote_only else ltq
        if same:
            return False
        self._last[key] = tick
        return True

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        self.stats.connected = False
        if ws is not None:
            ws.on_disconnect = None
            with contextlib.suppress(Exception):
                await ws.close()

    async def reconnect(self, reason: str) -> None:
        """Drop the socket; batches() reconnects (logging in again first if the session expired)."""
        log.warning("kotak feed reconnect requested", extra={"reason": reason})
        await self._renew_if_expired()
        if self._ws is not None:
            await self._ws.close()

    async def close(self) -> None:
        self._closed = True
        await self._drop()
