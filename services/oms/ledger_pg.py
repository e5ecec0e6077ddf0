"""The order ledger in PostgreSQL: order_ledger (one row per order) and order_events (every transition).

Implements services/oms/ledger.py's Ledger protocol over an asyncpg pool; OrderUpdate protos in and out.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import asyncpg
from google.protobuf import json_format
from google.protobuf.message import Message

from services.oms.ledger import modify_terms
from shared.contracts import trading_pb2
from shared.db.orders import (
    INSERT_SQL,
    LEDGER_COLUMNS,
    TERMINAL_NAMES,
    enum_name,
    insert_columns,
    jsonb,
    log_entry,
    payload,
    row_to_update,
    status_name,
    ts_of,
)
from shared.db.partitions import day_start
from shared.db.protojson import message_dict
from shared.order_terms import Terms

# Asked at every OMS start: answered from the index order_events_sequence (migration 0007), not a table scan.
MAX_SEQUENCE_SQL = "SELECT COALESCE(MAX(sequence), 0) FROM order_events"
_DECISIONS = "risk-decisions"  # oms_resume_points (migration 0008): risk's StreamDecisions

# Row fields move only forward: an update older than the last one recorded (lower sequence) is kept in
# order_events and metadata's audit_log but overwrites neither the row nor metadata's latest broker exchange
# (its top-level keys). The order's terms (quantity, price, trigger) move with the row: a change (ModifyOrder) or
# the broker's report rewrites them. Sequence 0 (unstamped) always applies. One statement, one round trip: the row
# is locked first (a concurrent record of the same order waits, then reads the last_sequence it left), the event
# appended unless it is there already (a retry after a lost reply: then nothing else changes), then the row
# updated; `known` says whether the order is in the ledger at all. {commit} sets how the statement's transaction
# commits.
_RECORD_SQL = """
WITH {commit}cur AS (SELECT ($13::bigint = 0 OR $13::bigint >= last_sequence) AS fwd FROM order_ledger
                     WHERE internal_id = $1 FOR UPDATE),
ev AS (
    INSERT INTO order_events (internal_id, sequence, status, fill_qty, fill_price, fill_charges, payload, ts)
    SELECT $1, $13, $4, $9, $10, $11, $17::jsonb, $15 FROM cur
    ON CONFLICT (internal_id, sequence) WHERE sequence > 0 DO NOTHING
    RETURNING event_id),
upd AS (
    UPDATE order_ledger SET
        metadata = CASE WHEN fwd THEN metadata || ($2::jsonb - 'audit_log') ELSE metadata END
            || jsonb_build_object('audit_log',
                                  COALESCE(metadata -> 'audit_log', '[]'::jsonb) || jsonb_build_array($3::jsonb)),
        status = CASE WHEN fwd THEN $4 ELSE status END,
        previous_status = CASE WHEN fwd THEN $5 ELSE previous_status END,
        exchange_id = CASE WHEN fwd AND $6 <> '' THEN $6 ELSE exchange_id END,
        filled_qty = CASE WHEN fwd THEN $7 ELSE filled_qty END,
        avg_price = CASE WHEN fwd THEN $8 ELSE avg_price END,
        last_fill_qty = CASE WHEN fwd THEN $9 ELSE last_fill_qty END,
        last_fill_price = CASE WHEN fwd THEN $10 ELSE last_fill_price END,
        last_fill_charges = CASE WHEN fwd THEN $11 ELSE last_fill_charges END,
        reason = CASE WHEN fwd THEN $12 ELSE reason END,
        reason_code = CASE WHEN fwd THEN $16 ELSE reason_code END,
        quantity = CASE WHEN fwd THEN $18 ELSE quantity END,
        price = CASE WHEN fwd THEN $19 ELSE price END,
        trigger = CASE WHEN fwd THEN $20 ELSE trigger END,
        changes_sent = CASE WHEN fwd THEN $21 ELSE changes_sent END,
        changed_by_hand = CASE WHEN fwd THEN $22 ELSE changed_by_hand END,
        last_sequence = CASE WHEN fwd THEN GREATEST(last_sequence, $13) ELSE last_sequence END,
        last_ts_ns = CASE WHEN fwd THEN $14 ELSE last_ts_ns END,
        updated_at = CASE WHEN fwd THEN $15 ELSE updated_at END
    FROM cur
    WHERE internal_id = $1 AND EXISTS (SELECT 1 FROM ev)
    RETURNING 1)
SELECT EXISTS (SELECT 1 FROM cur) AS known, (SELECT count(*) FROM upd) AS updated{commit_ref}"""
# Without waiting for the flush to disk (see PgLedger); set_config(..., true) lasts for this statement's transaction.
_NO_FLUSH = "no_flush AS (SELECT set_config('synchronous_commit', 'off', true) AS s),\n"
_RECORD_NO_FLUSH_SQL = _RECORD_SQL.format(commit=_NO_FLUSH, commit_ref=", (SELECT s FROM no_flush)")
_RECORD_FLUSHED_SQL = _RECORD_SQL.format(commit="", commit_ref="")
# The longest an order-path write (its pooled connection, then its statement) or its read-back is waited for: those
# take milliseconds; past this, the server or the pool is stuck and the write's outcome is unknown.
WRITE_TIMEOUT_S = 10.0
# A write given up on mid-statement: its server process, still there and running a statement (asyncpg's cancel is
# best-effort), is stopped; once it runs none, the write has committed or never will.
_STILL_RUNNING_SQL = "SELECT state = 'active' AS running FROM pg_stat_activity WHERE pid = $1"
_STOP_SQL = "SELECT pg_terminate_backend($1)"
_STOPPED_POLL_S = 0.01



class PgLedger:
    """Ledger on PostgreSQL. Every write is one transaction: the row and its event land together or not at all.

    The write-ahead (insert_new: the order before it goes to the broker) waits for the server's commit as
    configured (synchronous_commit, on by default: flushed to disk). The transitions after it (record: SUBMITTED,
    acknowledgements, fills, cancels) are committed with synchronous_commit off unless `durable_updates`: in the
    database at once, so a crash of NeoPulse loses none, but flushed to disk by the server's WAL writer within
    ~0.6 s (3 x wal_writer_delay) or with the next write-ahead. Only a crash of the server or of its machine in
    that window loses them, and the restart's reconciliation takes them back from the broker's order book
    (PENDING_NEW and SUBMITTED orders are looked up by tag, open ones by exchange id). Waiting for a flush per
    transition (0.3-4 ms each on these machines, one after another) held bursts of orders up by tens of ms."""

    durable = True

    def __init__(self, pool: asyncpg.Pool, durable_updates: bool = False, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.pool = getattr(pool, "pool", pool)
        self.durable_updates = durable_updates
        self.timeout_s = timeout_s
        self._releasing: set[asyncio.Task[None]] = set()
        # Server processes of writes given up on mid-statement (a timeout, a lost connection, a cancelled caller):
        # they may still commit. get() waits until they run nothing, so that its read-back is the last word.
        self._abandoned: set[int] = set()

    async def _write(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """One statement on a pooled connection, handed back in the background: the pool resets a connection it
        takes back (a round trip, ~150 µs here) and the OMS's next write, queued behind this one, need not wait
        for that. Neither the connection nor the statement is waited for longer than timeout_s: a pool used up or a
        server that stopped answering raises TimeoutError (the write's outcome unknown: the OMS reads the row back,
        or keeps it unknown and retries), never holding every order's transitions for as long as it lasts."""
        conn = await self.pool.acquire(timeout=self.timeout_s)
        try:
            return await conn.fetchrow(sql, *args, timeout=self.timeout_s)
        except asyncpg.PostgresError:
            raise  # the server refused it: rolled back
        except BaseException:
            # Given up on while the server may still run it, and commit it after a read-back found nothing.
            self._abandoned.add(conn.get_server_pid())
            conn.terminate()  # never handed out again with that statement still under way
            raise
        finally:
            task = asyncio.get_running_loop().create_task(self.pool.release(conn))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def insert_new(self, order: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> trading_pb2.OrderUpdate | None:
        return (await self.insert_many([(order, audit)]))[0]

    async def insert_many(self, orders: Sequence[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]
                          ) -> list[trading_pb2.OrderUpdate | None]:
        """One transaction (one flush) for them all; what insert_new returns, for each."""
        rows = []
        for order, audit in orders:
            row = _storable(order)
            row.status = trading_pb2.ORDER_STATUS_PENDING_NEW
            rows.append((row, _safe_audit(audit)))
        result = await self._write(INSERT_SQL, *insert_columns(rows))
        written = {str(i) for i in (result["written"] if result is not None and result["written"] else ())}
        refused = [row.client_order_id for row, _ in rows if row.internal_id not in written]
        existing = {r["client_order_id"]: row_to_update(r) for r in await self.pool.fetch(
            f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE client_order_id = ANY($1::text[])", refused)
        } if refused else {}
        out: list[trading_pb2.OrderUpdate | None] = []
        for row, _ in rows:
            if row.internal_id in written:
                out.append(None)
            elif row.client_order_id in existing:
                out.append(existing[row.client_order_id])
            else:  # the internal_id was taken by another client_order_id: a caller bug
                raise ValueError(f"internal_id {row.internal_id} already belongs to another order")
        return out

    async def record(self, update: trading_pb2.OrderUpdate, audit: dict[str, Any]) -> None:
        """One transition after the write-ahead: committed without waiting for the disk flush (see the class)."""
        update, audit = _storable(update), _safe_audit(audit)
        row = await self._write(
            _RECORD_FLUSHED_SQL if self.durable_updates else _RECORD_NO_FLUSH_SQL,
            uuid.UUID(update.internal_id), jsonb(audit), jsonb(log_entry(audit, update)),
            status_name(update.status), status_name(update.previous_status), update.exchange_order_id,
            update.filled_quantity, update.average_price_paise, update.last_fill_quantity,
            update.last_fill_price_paise, update.last_fill_charges_paise, update.reason, update.sequence,
            update.ts_ns, ts_of(update.ts_ns), update.reason_code, payload(update, audit),
            update.request.quantity, update.request.price_paise, update.request.trigger_price_paise,
            update.changes_sent, update.changed_by_hand)
        if row is None or not row["known"]:
            raise KeyError(f"order {update.internal_id} is not in the ledger; insert_new it first")
        # Not updated: recorded before (a retry after a lost reply), row, metadata and event are all there.

    async def get(self, order_id: str) -> trading_pb2.OrderUpdate | None:
        """After a write given up on mid-statement, only once its server process runs it no more (else raises):
        the read-back of a write that failed says whether it committed, never "not yet"."""
        if not _storable_key(order_id):
            return None
        if self._abandoned:
            await self._stop_abandoned()
        try:
            key: Any = uuid.UUID(order_id)
            where = "internal_id = $1"
        except ValueError:
            key, where = order_id, "client_order_id = $1"
        row = await self.pool.fetchrow(f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE {where}", key,
                                       timeout=self.timeout_s)  # the read-back of a write that failed, too
        if row is None and where.startswith("internal_id"):  # a client_order_id that happens to look like a uuid
            row = await self.pool.fetchrow(f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE client_order_id = $1",
                                           order_id, timeout=self.timeout_s)
        return row_to_update(row) if row is not None else None

    async def _stop_abandoned(self) -> None:
        """Stop the statements of writes given up on, and wait until their server processes run none (committed or
        rolled back for good). Raises TimeoutError past timeout_s (the write's outcome is then still unknown)."""
        async with asyncio.timeout(self.timeout_s):
            for pid in list(self._abandoned):
                while await self.pool.fetchval(_STILL_RUNNING_SQL, pid):
                    await self.pool.fetchval(_STOP_SQL, pid)
                    await asyncio.sleep(_STOPPED_POLL_S)
                self._abandoned.discard(pid)

    async def open_orders(self) -> list[trading_pb2.OrderUpdate]:
        rows = await self.pool.fetch(f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE status <> ALL($1::text[]) "
                                     "ORDER BY created_at, written_seq", list(TERMINAL_NAMES))
        return [row_to_update(r) for r in rows]

    async def list_orders(self, *, open_only: bool = False, strategy_tag: str = "", limit: int = 100,
                          day: date | None = None) -> list[trading_pb2.OrderUpdate]:
        if not _storable_key(strategy_tag):
            return []
        lo = day_start(day) if day else None
        hi = day_start(day + timedelta(days=1)) if day else None
        rows = await self.pool.fetch(
            f"SELECT {LEDGER_COLUMNS} FROM order_ledger "
            "WHERE (NOT $1 OR status <> ALL($2::text[])) AND ($3 = '' OR strategy_tag = $3) "
            "AND ($4::timestamptz IS NULL OR (created_at >= $4 AND created_at < $5)) "
            "ORDER BY created_at DESC, written_seq DESC LIMIT $6",
            open_only, list(TERMINAL_NAMES), strategy_tag, lo, hi, limit)
        return [row_to_update(r) for r in rows]

    async def filled_before(self, day: date, products: Sequence[int]) -> list[trading_pb2.OrderUpdate]:
        rows = await self.pool.fetch(
            f"SELECT {LEDGER_COLUMNS} FROM order_ledger WHERE created_at < $1 AND filled_qty > 0 "
            "AND product = ANY($2::text[]) ORDER BY created_at, written_seq",
            day_start(day), [enum_name(trading_pb2.Product, "PRODUCT_", p) for p in products])
        return [row_to_update(r) for r in rows]

    async def history(self, internal_id: str) -> list[tuple[trading_pb2.OrderUpdate, dict[str, Any]]]:
        rows = await self.pool.fetch("SELECT payload FROM order_events WHERE internal_id = $1 "
                                     "ORDER BY sequence, event_id", uuid.UUID(internal_id))
        out = []
        for r in rows:
            payload = json.loads(r["payload"])
            out.append((json_format.ParseDict(payload["update"], trading_pb2.OrderUpdate(), ignore_unknown_fields=True),
                        payload.get("audit") or {}))
        return out

    async def changed_terms(self, internal_ids: Sequence[str]) -> dict[str, set[Terms]]:
        rows = await self.pool.fetch(
            "SELECT internal_id, entry -> 'modify_request' AS request FROM order_ledger, "
            "jsonb_array_elements(metadata -> 'audit_log') AS entry "
            "WHERE internal_id = ANY($1::uuid[]) AND entry ? 'modify_request'", [uuid.UUID(i) for i in internal_ids])
        out: dict[str, set[Terms]] = {}
        for r in rows:
            out.setdefault(str(r["internal_id"]), set()).update(modify_terms(json.loads(r["request"])))
        return out

    async def max_sequence(self) -> int:
        return int(await self.pool.fetchval(MAX_SEQUENCE_SQL))

    async def last_decision_sequence(self) -> int:
        # Risk's sequences only grow (a restarted risk starts above what it published before), and orders are
        # written ahead in decision order: the newest orders hold the highest; no scan of the whole history.
        return int(await self.pool.fetchval(
            "SELECT COALESCE(MAX((metadata -> 'decision' ->> 'sequence')::bigint), 0) FROM "
            "(SELECT metadata FROM order_ledger ORDER BY created_at DESC, written_seq DESC LIMIT 1000) AS recent"))

    async def decisions_accounted(self) -> int:
        value = await self.pool.fetchval("SELECT after_sequence FROM oms_resume_points WHERE name = $1", _DECISIONS)
        return int(value or 0)

    async def save_decisions_accounted(self, sequence: int) -> None:
        await self.pool.execute(
            "INSERT INTO oms_resume_points (name, after_sequence) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET "
            "after_sequence = GREATEST(oms_resume_points.after_sequence, EXCLUDED.after_sequence), updated_at = now()",
            _DECISIONS, sequence)

    async def fill_charges(self, day: date) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT e.internal_id, SUM(e.fill_charges) AS charges FROM order_events e "
            "JOIN order_ledger o ON o.internal_id = e.internal_id "
            "WHERE o.created_at >= $1 AND o.created_at < $2 AND e.fill_charges <> 0 GROUP BY e.internal_id",
            day_start(day), day_start(day + timedelta(days=1)))
        return {str(r["internal_id"]): int(r["charges"]) for r in rows}


# What a broker reply must not leave in the ledger: session tokens and login secrets, by key (compared lowercased,
# without '_' and '-') or, for any key, by a value shaped like a JWT (Kotak's access tokens are JWTs). "token"
# alone is also the instrument token ("2885"): only a value that is not a number is a secret there.
_SECRET_KEYS = frozenset({"authorization", "auth", "sid", "editsid", "edittoken", "viewtoken", "accesstoken",
                          "sessiontoken", "sessionid", "refreshtoken", "bearer", "jwt", "mpin", "pin", "password",
                          "consumerkey", "consumersecret", "totp", "totpsecret", "otp"})
_JWT = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]*$")
REDACTED = "***"


_PLAIN, _SECRET, _TOKEN = 0, 1, 2  # what a key says about its value


@functools.lru_cache(maxsize=4096)
def _key(key: str) -> tuple[str, int]:
    """(The key as jsonb takes it, what it says about its value): keys repeat (field names), so worked out once."""
    k = key.lower().replace("_", "").replace("-", "")
    return _text(key), _SECRET if k in _SECRET_KEYS else _TOKEN if k == "token" else _PLAIN


def _secret(kind: int, value: Any) -> bool:
    return kind == _SECRET or (kind == _TOKEN and isinstance(value, str) and not value.strip().isdigit())


def _text(s: str) -> str:
    """s as PostgreSQL text and jsonb take it: NUL and lone surrogates (undecodable bytes) as escapes."""
    if "\x00" in s:
        s = s.replace("\x00", "\\u0000")
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable_key(key: str) -> bool:
    """Whether an order of the ledger can have `key` as its id or strategy tag: PostgreSQL text holds no NUL, so none
    written has one (escaping it, as _text does for free text, would find an order whose id spells out "\\u0000")."""
    return "\x00" not in key


def _safe(value: Any) -> Any:
    """An audit value as plain JSON that jsonb accepts and that holds no secret."""
    if isinstance(value, str):
        return REDACTED if value.startswith("eyJ") and _JWT.match(value) else _text(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name, kind = _key(str(k))
            out[name] = REDACTED if kind and _secret(kind, v) else _safe(v)
        return out
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Message):
        return _safe(message_dict(value))
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)  # "NaN", "Infinity": jsonb has no such numbers
    return _text(str(value))  # Decimal (exact), bytes (their repr), datetime, ...


def _safe_audit(audit: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = _safe(audit)  # a dict in, a dict out
    return safe


def _storable(u: trading_pb2.OrderUpdate) -> trading_pb2.OrderUpdate:
    """A copy of u whose broker-supplied text (reason, exchange order id) PostgreSQL can store."""
    out = trading_pb2.OrderUpdate()
    out.CopyFrom(u)
    out.reason, out.exchange_order_id = _text(u.reason), _text(u.exchange_order_id)
    return out
