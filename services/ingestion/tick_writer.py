"""Persists every tick to market_ticks in batches (COPY), buffering through database outages.

Fed by the ingestion pump through offer() (never blocks, never raises); talks to PostgreSQL via an asyncpg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from shared.clock import NS, UTC, Clock, RealClock, day_of
from shared.contracts import market_pb2
from shared.db import partitions
from shared.db.config import DatabaseSettings
from shared.metrics import start_at_zero

log = logging.getLogger(__name__)

PERSISTED = Counter("neopulse_ingestion_ticks_persisted", "Ticks written to market_ticks")
REJECTED = Counter("neopulse_ingestion_ticks_rejected", "Bad ticks refused by the tick writer", ["reason"])
DROPPED = Counter("neopulse_ingestion_ticks_dropped", "Ticks lost by the tick writer", ["reason"])
start_at_zero(DROPPED, "buffer_full", "database_error", "shutdown")  # NeoPulseTicksDropped fires from the first
LAG = Gauge("neopulse_ingestion_writer_lag_seconds", "Offer-to-commit time of the oldest tick in the last COPY")
BUFFERED = Gauge("neopulse_ingestion_writer_buffered_ticks", "Ticks waiting for the database")

COLUMNS = ("ts", "token", "seq", "exchange_segment", "ltp", "ltq", "volume", "bid", "ask", "bid_qty", "ask_qty",
           "open", "high", "low", "close", "oi", "atp")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class DatabaseUnavailable(ConnectionError):
    """No connection could be had (refused, not accepting connections, too many clients): keep the rows."""


# The database is away, or cannot take rows now (disk full, out of memory: class 53; its disk failing a read or
# write: class 58; read-only, as during a failover or maintenance: 25006; a reader holds market_ticks so a
# partition cannot be made: 55P03). Nothing is wrong with the rows: keep them (bounded by the buffer), try again.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError,
             asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.PostgresSystemError,
             asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.exceptions.LockNotAvailableError,
             DatabaseUnavailable)
# Refused for the rows themselves (a NUL in a text, a number out of range): split the chunk to find the bad rows.
DATA_ERRORS = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError)
GIVE_UP_S = 30.0  # a chunk refused that long for another reason (privileges, a schema change) is dropped
HOUSEKEEPING_S = 3600.0
HOUSEKEEPING_RETRY_S = 60.0  # after a failed pass or a partition retention had to skip
FIRST_HOUSEKEEPING_WAIT_S = 1.0  # at start, flushing waits this long at most for partitions to be made ahead


class _Chunk:
    """Rows converted for one COPY, kept until they commit (retried with the same seq, so a replay is detectable)."""

    __slots__ = ("days", "failing_since", "oldest_offer", "rows", "split")

    def __init__(self, rows: list[tuple[Any, ...]], days: set[date], oldest_offer: float) -> None:
        self.rows = rows  # those not yet committed nor refused
        self.days = days
        self.oldest_offer = oldest_offer
        self.failing_since: float | None = None  # monotonic time of the first refusal
        self.split = False  # part of it may have committed on its own: a duplicate no longer means all of it


class TickWriter:
    """`offer(batch)` from the pump; `run()` as a long-lived task; `close()` flushes what is left."""

    def __init__(self, pool_or_db: Any, settings: DatabaseSettings | None = None, clock: Clock | None = None) -> None:
        self.pool: asyncpg.Pool = getattr(pool_or_db, "pool", pool_or_db)
        self.settings = settings or DatabaseSettings()
        self.clock = clock or RealClock()
        self._queue: deque[tuple[float, market_pb2.TickBatch]] = deque()
        self._chunks: deque[_Chunk] = deque()  # converted, waiting to commit (at most two)
        self._pending = 0  # ticks queued + rows in the chunk
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._seq = time.time_ns()  # per-row sequence; starts at wall-clock ns so a restarted writer stays unique
        self._days: set[date] = set()
        self.housekeeping_passes = 0
        self._housekept = asyncio.Event()
        self.persisted = 0
        self.rejected: dict[str, int] = {}
        self.dropped = 0
        self.failed = 0
        self.connected = True

    # -- the trading path's side: O(1), never blocks, never raises ----------------------------------
    def offer(self, batch: market_pb2.TickBatch) -> None:
        try:
            n = len(batch.ticks)
            if self._pending + n > self.settings.writer_buffer_rows:
                self._drop(n, "buffer_full")
                return
            self._queue.append((time.monotonic(), batch))
            self._pending += n
            if self._pending >= self.settings.writer_batch_rows:
                self._wake.set()
        except Exception:
            log.exception("tick writer could not take a batch")

    @property
    def pending(self) -> int:
        """Ticks offered but not yet committed."""
        return self._pending

    # -- the writer task ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Flushes until cancelled; housekeeping (partition DDL) runs beside it so a stuck DDL never stalls writes."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._housekeeping_loop(), name="tick-writer:housekeeping")
            await self._flush_loop()

    async def _flush_loop(self) -> None:
        # The first COPY would otherwise race the first pass for the DDL lock; never wait on it for long.
        # asyncio.timeout, never wait_for, in this loop: on Python 3.11 wait_for can swallow the cancel that
        # stops the writer (CPython gh-86296), and run() then never ends (seen: 1 store() in ~10 hung).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_HOUSEKEEPING_WAIT_S):
                await self._housekept.wait()
        backoff = 0.0
        interval = self.settings.writer_flush_interval_ms / 1000
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            elif self._pending < self.settings.writer_batch_rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff = 0.0
                self._set_connected(True)
            except TRANSIENT as exc:
                self._set_connected(False, exc)
                backoff = min(max(0.05, backoff * 2), 2.0)
            except Exception:
                # Never take the process down with the tick store: keep the rows, log, back off, try again.
                log.exception("tick writer error; retrying", extra={"buffered": self._pending})
                backoff = 2.0

    async def flush(self) -> int:
        """Write everything pending now; returns rows committed. Raises TRANSIENT errors with the rows kept."""
        async with self._flushing:  # close() may race a run() that was not cancelled: one writer at a time
            return await self._flush()

    async def _flush(self, max_s: float = 5.0) -> int:
        """Returns after max_s under a steady stream (new chunks stop being taken), so close() stays bounded."""
        written = 0
        stop_at = time.monotonic() + max_s
        while self._chunks or (self._queue and time.monotonic() < stop_at):
            if not self._chunks:
                chunk = await self._take_chunk()
                if chunk is not None:
                    self._chunks.append(chunk)
                continue
            head = self._chunks[0]
            copy = asyncio.create_task(self._write(head), name="tick-writer:copy")
            try:
                if self._queue and len(self._chunks) < 2 and time.monotonic() < stop_at:
                    nxt = await self._take_chunk()  # converts while the COPY is on the wire
                    if nxt is not None:
                        self._chunks.append(nxt)
                written += await copy
            except BaseException:
                copy.cancel()
                raise
            self._chunks.popleft()
            self._pending -= len(head.rows)
            BUFFERED.set(self._pending)
        return written

    async def close(self, grace_s: float = 5.0) -> None:
        """Final flush at shutdown; anything the database does not take in `grace_s` is counted as dropped."""
        error = ""
        try:
            async with asyncio.timeout(grace_s):
                await self.flush()
        except (TimeoutError, *TRANSIENT) as exc:
            error = type(exc).__name__
        if self._pending:
            log.error("tick writer closing with unwritten ticks", extra={"ticks": self._pending, "error": error})
            self._drop(self._pending, "shutdown")
            self._queue.clear()
            self._chunks.clear()
            self._pending = 0

    # -- internals ----------------------------------------------------------------------------------
    async def _take_chunk(self) -> _Chunk | None:
        """Convert queued batches (up to 4 COPY batches) into rows, validating each tick.

        A cancel on one of its yields (a stop cancels the writer's task before close()) keeps the rows converted so
        far as a chunk: their batches are off the queue, and close() must still write them.
        """
        limit = 4 * self.settings.writer_batch_rows
        now = self.clock.now_ns()
        lo = now - int(self.settings.max_tick_past_s * NS)
        hi = now + int(self.settings.max_tick_future_s * NS)
        rows: list[tuple[Any, ...]] = []
        span = [hi, lo]  # smallest and largest accepted ts_ns
        oldest = self._queue[0][0]
        taken = since_yield = 0
        try:
            while self._queue and len(rows) < limit:
                _, batch = self._queue.popleft()
                taken += len(batch.ticks)
                since_yield += len(batch.ticks)
                self._convert(batch, rows, lo, hi, span)
                if since_yield >= 5000:
                    since_yield = 0
                    await asyncio.sleep(0)  # conversion is CPU work on the trading loop: let it breathe
        except asyncio.CancelledError:
            if rows:
                self._chunks.append(_chunk(rows, span, oldest))
            raise
        finally:
            self._pending -= taken - len(rows)
        return _chunk(rows, span, oldest) if rows else None

    def _convert(self, batch: market_pb2.TickBatch, rows: list[tuple[Any, ...]], lo: int, hi: int,
                 span: list[int]) -> None:
        seq = self._seq
        append = rows.append
        first, last = span
        epoch, us = _EPOCH, _US
        for t in batch.ticks:
            ts, ltp, volume, ltq = t.ts_ns, t.ltp_paise, t.volume, t.ltq
            if ts < lo or ts > hi or ltp <= 0 or volume < 0 or ltq < 0:
                self._reject(t, lo, hi)
                continue
            if ts < first:
                first = ts
            if ts > last:
                last = ts
            seq += 1
            append((epoch + us * (ts // 1000), t.token, seq, t.exchange_segment, ltp, ltq, volume,
                    t.bid_paise, t.ask_paise, t.bid_qty, t.ask_qty, t.open_paise, t.high_paise, t.low_paise,
                    t.close_paise, t.open_interest, t.atp_paise))
        self._seq = seq
        span[0], span[1] = first, last

    def _reject(self, t: market_pb2.Tick, lo: int, hi: int) -> None:
        if t.ts_ns > hi:
            reason = "future"
        elif t.ts_ns < lo:
            reason = "past"
        elif t.ltp_paise <= 0:
            reason = "price"
        else:
            reason = "volume"
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        REJECTED.labels(reason).inc()
        if self.rejected[reason] in (1, 10, 100) or self.rejected[reason] % 10_000 == 0:
            log.warning("bad tick rejected", extra={"token": t.token, "reason": reason, "ts_ns": t.ts_ns,
                                                    "ltp_paise": t.ltp_paise, "rejected": self.rejected[reason]})

    async def _write(self, chunk: _Chunk) -> int:
        conn = await self._connect()
        try:
            missing = chunk.days - self._days
            if missing:
                await partitions.ensure_days(conn, missing)
                self._days |= missing
            return await self._copy(conn, chunk)
        finally:
            await self.pool.release(conn)

    async def _connect(self) -> asyncpg.Connection:
        """A connection from the pool; any failure to get one is an outage, never a verdict on the rows."""
        try:
            conn: asyncpg.Connection = await self.pool.acquire()
        except Exception as exc:
            raise DatabaseUnavailable(f"tick writer could not get a connection: {type(exc).__name__}: {exc}") from exc
        return conn

    async def _copy(self, conn: asyncpg.Connection, chunk: _Chunk) -> int:
        try:
            await conn.copy_records_to_table("market_ticks", records=chunk.rows, columns=COLUMNS)
        except TRANSIENT:
            raise
        except asyncpg.UniqueViolationError:
            if chunk.split:
                return await self._isolate(conn, chunk)
            # Rows carry their seq from the first attempt: a duplicate means that attempt committed
            # (the reply was lost with the connection), so the chunk is already stored.
            log.info("tick chunk already committed by an earlier attempt", extra={"rows": len(chunk.rows)})
        except asyncpg.CheckViolationError:
            self._days.clear()  # a partition went away under us (retention elsewhere): re-check next time
            return self._failed(chunk, "no partition")
        except DATA_ERRORS:
            return await self._isolate(conn, chunk)
        except asyncpg.PostgresError as exc:
            return self._failed(chunk, str(exc))
        return self._stored(chunk, len(chunk.rows))

    def _stored(self, chunk: _Chunk, n: int) -> int:
        self.persisted += n
        PERSISTED.inc(n)
        LAG.set(time.monotonic() - chunk.oldest_offer)
        return n

    async def _isolate(self, conn: asyncpg.Connection, chunk: _Chunk) -> int:
        """A chunk refused for its data: COPY halves of it, and halves of those refused, down to the bad rows.

        Stores the good rows, counts the bad ones as rejected. Each piece leaves the chunk as it is settled, so a
        retry after an outage resends only the rest (and then a duplicate marks a piece whose reply was lost).
        """
        chunk.split = True
        if chunk.failing_since is None:
            chunk.failing_since = time.monotonic()
        pieces = deque(_halves(chunk.rows))
        written = 0
        try:
            while pieces and time.monotonic() - chunk.failing_since < GIVE_UP_S:
                rows = pieces[0]
                try:
                    await conn.copy_records_to_table("market_ticks", records=rows, columns=COLUMNS)
                except TRANSIENT:
                    raise
                except DATA_ERRORS as exc:
                    pieces.popleft()
                    if len(rows) > 1:
                        pieces.extendleft(reversed(_halves(rows)))
                    elif isinstance(exc, asyncpg.UniqueViolationError):
                        written += self._settle(chunk, rows, stored=True)  # an earlier attempt committed it
                    else:
                        self._settle(chunk, rows, stored=False)
                        self._refused(rows[0], exc)
                    continue
                except asyncpg.PostgresError as exc:
                    chunk.rows = [row for piece in pieces for row in piece]
                    return written + self._failed(chunk, str(exc))
                pieces.popleft()
                written += self._settle(chunk, rows, stored=True)
        finally:
            chunk.rows = [row for piece in pieces for row in piece]
        if chunk.rows:
            return written + self._failed(chunk, "bad rows not isolated in time")
        return written

    def _settle(self, chunk: _Chunk, rows: list[tuple[Any, ...]], stored: bool) -> int:
        """Rows taken off a chunk, stored or refused, are no longer pending; returns the rows stored."""
        self._pending -= len(rows)
        return self._stored(chunk, len(rows)) if stored else 0

    def _refused(self, row: tuple[Any, ...], exc: Exception) -> None:
        self.rejected["database"] = self.rejected.get("database", 0) + 1
        REJECTED.labels("database").inc()
        n = self.rejected["database"]
        if n in (1, 10, 100) or n % 10_000 == 0:
            log.warning("tick refused by the database", extra={"token": row[1], "ts": row[0].isoformat(),
                                                                "error": str(exc), "rejected": n})

    def _failed(self, chunk: _Chunk, why: str) -> int:
        """Refused, not for one row's data: retry the same rows with back-off, after GIVE_UP_S count them as lost."""
        now = time.monotonic()
        if chunk.failing_since is None:
            chunk.failing_since = now
        if now - chunk.failing_since < GIVE_UP_S:
            raise _Retry(why)
        log.error("tick chunk refused by the database; dropping it", extra={"rows": len(chunk.rows), "error": why})
        self.failed += len(chunk.rows)
        DROPPED.labels("database_error").inc(len(chunk.rows))
        return 0

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        DROPPED.labels(reason).inc(n)
        if self.dropped == n or self.dropped // 100_000 != (self.dropped - n) // 100_000:
            log.error("tick writer dropping ticks", extra={"reason": reason, "ticks": n, "dropped": self.dropped})

    async def _housekeeping_loop(self) -> None:
        """Partitions ahead and retention, at start and hourly; a failed or incomplete pass is retried sooner."""
        while True:
            try:
                delay = await self._housekeeping()
            except Exception as exc:
                log.warning("tick partition housekeeping failed; retrying",
                            extra={"error": type(exc).__name__, "retry_s": HOUSEKEEPING_RETRY_S})
                delay = HOUSEKEEPING_RETRY_S
            self.housekeeping_passes += 1
            self._housekept.set()
            await asyncio.sleep(delay)

    async def _housekeeping(self) -> float:
        """One pass; returns the seconds until the next."""
        today = day_of(self.clock.now_ns())
        cutoff = today - timedelta(days=self.settings.tick_retention_days)
        await partitions.ensure_ahead(self.pool, today, self.settings.partitions_ahead_days)
        dropped = await partitions.drop_before(self.pool, cutoff)
        if dropped:
            log.info("old tick partitions dropped", extra={"days": [d.isoformat() for d in dropped]})
        self._days = await partitions.existing_days(self.pool)
        kept = sorted(d.isoformat() for d in self._days if d < cutoff)
        if kept:
            # A reader (a long report, pg_dump) holds them; DROP gave up on its lock timeout rather than queue.
            log.warning("expired tick partitions in use; retention retried later",
                        extra={"days": kept, "retry_s": HOUSEKEEPING_RETRY_S})
            return HOUSEKEEPING_RETRY_S
        return HOUSEKEEPING_S

    def _set_connected(self, up: bool, exc: BaseException | None = None) -> None:
        if up != self.connected:
            self.connected = up
            if up:
                log.info("tick writer reconnected", extra={"buffered": self._pending})
            else:
                log.warning("tick writer lost the database; buffering",
                            extra={"buffered": self._pending, "error": type(exc).__name__})
        BUFFERED.set(self._pending)


class _Retry(asyncpg.InterfaceError):
    """Internal: a non-transient failure to retry with back-off (counts as TRANSIENT in run())."""


def _chunk(rows: list[tuple[Any, ...]], span: list[int], oldest: float) -> _Chunk:
    """Rows for one COPY with every IST day from the first accepted tick's to the last's (their partitions)."""
    first, last = day_of(span[0]), day_of(span[1])
    return _Chunk(rows, {first + timedelta(days=i) for i in range((last - first).days + 1)}, oldest)


def _halves(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    mid = len(rows) // 2
    return [rows[:mid], rows[mid:]] if mid else [rows]
