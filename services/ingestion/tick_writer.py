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

log = logging.getLogger(__name__)

PERSISTED = Counter("neopulse_ingestion_ticks_persisted", "Ticks written to market_ticks")
REJECTED = Counter("neopulse_ingestion_ticks_rejected", "Bad ticks refused by the tick writer", ["reason"])
DROPPED = Counter("neopulse_ingestion_ticks_dropped", "Ticks lost by the tick writer", ["reason"])
LAG = Gauge("neopulse_ingestion_writer_lag_seconds", "Offer-to-commit time of the oldest tick in the last COPY")
BUFFERED = Gauge("neopulse_ingestion_writer_buffered_ticks", "Ticks waiting for the database")

COLUMNS = ("ts", "token", "seq", "exchange_segment", "ltp", "ltq", "volume", "bid", "ask", "bid_qty", "ask_qty",
           "open", "high", "low", "close", "oi", "atp")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class DatabaseUnavailable(ConnectionError):
    """No connection could be had (refused, not accepting connections, too many clients): keep the rows."""


# The database is away (or going away): keep the rows and try again.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError, DatabaseUnavailable)
MAX_FAILED_ATTEMPTS = 3  # COPYs the database refuses for the data itself, then the chunk is dropped
HOUSEKEEPING_S = 3600.0
HOUSEKEEPING_RETRY_S = 60.0  # after a failed pass or a partition retention had to skip
FIRST_HOUSEKEEPING_WAIT_S = 1.0  # at start, flushing waits this long at most for partitions to be made ahead


class _Chunk:
    """Rows converted for one COPY, kept until it commits (retried as-is: same seq, so a replay is detectable)."""

    __slots__ = ("days", "failures", "oldest_offer", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], days: set[date], oldest_offer: float) -> None:
        self.rows = rows
        self.days = days
        self.oldest_offer = oldest_offer
        self.failures = 0


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
        """Convert queued batches (up to 4 COPY batches) into rows, validating each tick."""
        limit = 4 * self.settings.writer_batch_rows
        now = self.clock.now_ns()
        lo = now - int(self.settings.max_tick_past_s * NS)
        hi = now + int(self.settings.max_tick_future_s * NS)
        rows: list[tuple[Any, ...]] = []
        span = [hi, lo]  # smallest and largest accepted ts_ns
        oldest = self._queue[0][0]
        taken = since_yield = 0
        while self._queue and len(rows) < limit:
            _, batch = self._queue.popleft()
            taken += len(batch.ticks)
            since_yield += len(batch.ticks)
            self._convert(batch, rows, lo, hi, span)
            if since_yield >= 5000:
                since_yield = 0
                await asyncio.sleep(0)  # conversion is CPU work on the trading loop: let it breathe
        self._pending -= taken - len(rows)
        if not rows:
            return None
        first, last = day_of(span[0]), day_of(span[1])
        days = {first + timedelta(days=i) for i in range((last - first).days + 1)}
        return _Chunk(rows, days, oldest)

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
            # Rows carry their seq from the first attempt: a duplicate means that attempt committed
            # (the reply was lost with the connection), so the chunk is already stored.
            log.info("tick chunk already committed by an earlier attempt", extra={"rows": len(chunk.rows)})
        except asyncpg.CheckViolationError:
            self._days.clear()  # a partition went away under us (retention elsewhere): re-check next time
            return self._failed(chunk, "no partition")
        except asyncpg.PostgresError as exc:
            return self._failed(chunk, str(exc))
        self.persisted += len(chunk.rows)
        PERSISTED.inc(len(chunk.rows))
        LAG.set(time.monotonic() - chunk.oldest_offer)
        return len(chunk.rows)

    def _failed(self, chunk: _Chunk, why: str) -> int:
        """A non-transient error: retry the same rows a few times, then count them as lost."""
        chunk.failures += 1
        if chunk.failures < MAX_FAILED_ATTEMPTS:
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

