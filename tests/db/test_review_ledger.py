"""Ledger review: PgLedger and MemoryLedger side by side on one script of calls; idempotent inserts racing on
separate connections; stale updates; one transaction per write; what the JSONB audit accepts and keeps out."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import date
from decimal import Decimal

import asyncpg
import pytest

from services.oms.ledger import MemoryLedger
from services.oms.ledger_pg import PgLedger
from shared.clock import NS, ist_ns
from shared.contracts import trading_pb2 as t
from shared.db import migrate, queries
from shared.db.config import DatabaseSettings
from shared.db.database import connect_pool
from shared.db.orders import INSERT_SQL, insert_args, insert_columns
from tests.db.helpers import new_order, transition

DAY = date(2026, 1, 20)
T0 = ist_ns(DAY, 9, 15)


@pytest.fixture(params=["memory", "pg"])
def ledger(request):
    """Each test below runs once on MemoryLedger and once on PgLedger: they must answer alike."""
    if request.param == "memory":
        return MemoryLedger()
    return PgLedger(request.getfixturevalue("db_pool"))


def _ids(orders: list[t.OrderUpdate]) -> list[str]:
    return [o.client_order_id for o in orders]


# -- one script, both ledgers ------------------------------------------------------------------------------


async def test_record_of_an_order_never_inserted_raises_key_error(ledger):
    with pytest.raises(KeyError, match="insert_new it first"):
        await ledger.record(transition(new_order(str(uuid.uuid4()), "ghost"), t.ORDER_STATUS_OPEN, 2), {})

    assert await ledger.get("ghost") is None


async def test_an_update_older_than_the_last_one_recorded_does_not_move_the_order_back(ledger):
    order = new_order(str(uuid.uuid4()), "late", ts_ns=T0)
    await ledger.insert_new(order, {})
    opened = transition(order, t.ORDER_STATUS_OPEN, 5, exchange_id="X-1")
    traded = transition(opened, t.ORDER_STATUS_TRADED, 7, fill=(10, 250_000, 30), filled=(10, 250_000))
    await ledger.record(traded, {})

    await ledger.record(opened, {})  # written before it, recorded after it (two connections, a retry)

    row = await ledger.get("late")
    assert (row.status, row.sequence, row.filled_quantity) == (t.ORDER_STATUS_TRADED, 7, 10)
    assert _ids(await ledger.open_orders()) == []


async def test_an_internal_id_taken_by_another_order_is_refused(ledger):
    await ledger.insert_new(new_order("00000000-0000-4000-8000-000000000001", "one"), {})

    with pytest.raises(ValueError, match="already belongs to another order"):
        await ledger.insert_new(new_order("00000000-0000-4000-8000-000000000001", "two"), {})

    assert await ledger.get("two") is None and (await ledger.get("one")).client_order_id == "one"


async def test_recording_one_fill_twice_counts_its_charges_once(ledger):
    order = new_order(str(uuid.uuid4()), "twice", ts_ns=T0)
    await ledger.insert_new(order, {})
    fill = transition(order, t.ORDER_STATUS_TRADED, 3, fill=(10, 250_000, 500), filled=(10, 250_000))

    await ledger.record(fill, {})
    await ledger.record(fill, {})  # a retry after a lost reply

    assert await ledger.fill_charges(DAY) == {order.internal_id: 500}


async def test_orders_created_in_one_microsecond_list_in_the_order_they_were_written(ledger):
    first = new_order(str(uuid.uuid4()), "first", ts_ns=T0, sequence=1)
    second = new_order(str(uuid.uuid4()), "second", ts_ns=T0, sequence=2)
    await ledger.insert_new(first, {})
    await ledger.insert_new(second, {})
    await ledger.record(transition(first, t.ORDER_STATUS_OPEN, 3), {})  # the older order moves on later

    assert _ids(await ledger.list_orders()) == ["second", "first"]
    assert _ids(await ledger.list_orders(limit=1)) == ["second"]
    assert _ids(await ledger.open_orders()) == ["first", "second"]


async def test_orders_list_by_creation_time_when_the_clock_stepped_back(ledger):
    for tag, ts, seq in [("09:16", T0 + 60 * NS, 1), ("09:15", T0, 2), ("09:17", T0 + 120 * NS, 3)]:
        await ledger.insert_new(new_order(str(uuid.uuid4()), tag, ts_ns=ts, sequence=seq), {})

    assert _ids(await ledger.list_orders()) == ["09:17", "09:16", "09:15"]
    assert _ids(await ledger.open_orders()) == ["09:15", "09:16", "09:17"]
    assert _ids(await ledger.list_orders(limit=0)) == []


async def test_the_day_of_an_order_is_its_ist_date_also_before_0530_ist(ledger):
    just_after_midnight = new_order(str(uuid.uuid4()), "00:10", ts_ns=ist_ns(DAY, 0, 10))  # UTC: the day before
    before_midnight = new_order(str(uuid.uuid4()), "23:50", ts_ns=ist_ns(DAY, 23, 50))  # UTC: same date
    day_before = new_order(str(uuid.uuid4()), "prev 23:59", ts_ns=ist_ns(date(2026, 1, 19), 23, 59))
    next_day = new_order(str(uuid.uuid4()), "next 00:00", ts_ns=ist_ns(date(2026, 1, 21), 0, 0))
    for i, o in enumerate((day_before, just_after_midnight, before_midnight, next_day)):
        o.sequence = i + 1
        await ledger.insert_new(o, {})
        await ledger.record(transition(o, t.ORDER_STATUS_TRADED, 10 + i, fill=(1, 100, 7), filled=(1, 100)), {})

    assert _ids(await ledger.list_orders(day=DAY)) == ["23:50", "00:10"]
    assert await ledger.fill_charges(DAY) == {just_after_midnight.internal_id: 7, before_midnight.internal_id: 7}


async def test_one_script_of_calls_reads_back_alike(ledger):
    a = new_order(str(uuid.uuid4()), "a", strategy="S1", ts_ns=T0, sequence=1)
    b = new_order(str(uuid.uuid4()), "b", strategy="S2", ts_ns=T0 + NS, sequence=2)
    c = new_order(str(uuid.uuid4()), "c", strategy="S1", ts_ns=T0 + 2 * NS, sequence=3)
    for o in (a, b, c):
        assert await ledger.insert_new(o, {"decision": {"signal_id": o.client_order_id}}) is None
    a_open = transition(a, t.ORDER_STATUS_OPEN, 4, exchange_id="X-a")
    await ledger.record(a_open, {"response": {"nOrdNo": "X-a"}})
    a_part = transition(a_open, t.ORDER_STATUS_PARTIALLY_FILLED, 5, fill=(4, 250_000, 40), filled=(4, 250_000))
    await ledger.record(a_part, {})
    await ledger.record(transition(a_part, t.ORDER_STATUS_TRADED, 6, fill=(6, 250_100, 60), filled=(10, 250_060)),
                        {})
    await ledger.record(transition(b, t.ORDER_STATUS_REJECTED, 7, reason="RMS: margin", reason_code="BROKER_REJECTED"),
                        {})
    again = await ledger.insert_new(new_order(str(uuid.uuid4()), "a", ts_ns=T0 + 3 * NS, sequence=8), {})

    assert again is not None and (again.internal_id, again.status) == (a.internal_id, t.ORDER_STATUS_TRADED)
    assert _ids(await ledger.list_orders()) == ["c", "b", "a"]
    assert _ids(await ledger.list_orders(open_only=True)) == ["c"]
    assert _ids(await ledger.list_orders(strategy_tag="S1")) == ["c", "a"]
    assert _ids(await ledger.list_orders(strategy_tag="S1", limit=1)) == ["c"]
    assert _ids(await ledger.open_orders()) == ["c"]
    got = await ledger.get(a.internal_id)
    assert (got.status, got.previous_status, got.exchange_order_id, got.filled_quantity, got.average_price_paise,
            got.last_fill_charges_paise, got.sequence) == (t.ORDER_STATUS_TRADED, t.ORDER_STATUS_PARTIALLY_FILLED,
                                                           "X-a", 10, 250_060, 60, 6)
    assert got.request == a.request
    rejected = await ledger.get("b")
    assert (rejected.reason, rejected.reason_code) == ("RMS: margin", "BROKER_REJECTED")
    assert await ledger.max_sequence() == 7
    assert await ledger.fill_charges(DAY) == {a.internal_id: 100}
    assert await ledger.list_orders(day=date(2026, 1, 21)) == []


# -- PostgreSQL only: races, restarts, transactions, the JSONB audit ------------------------------------------


async def test_inserts_of_one_client_order_id_racing_on_separate_connections_create_one_order(database):
    pools = [await asyncpg.create_pool(database, min_size=4, max_size=4) for _ in range(2)]  # two "processes"
    try:
        for round_ in range(5):
            tag = f"race-{round_}"
            orders = [new_order(str(uuid.uuid4()), tag) for _ in range(8)]
            results = await asyncio.gather(*(PgLedger(pools[i % 2]).insert_new(o, {}) for i, o in enumerate(orders)))

            winners = [o.internal_id for o, r in zip(orders, results, strict=True) if r is None]
            assert len(winners) == 1
            assert {r.internal_id for r in results if r is not None} == set(winners)
            assert await pools[0].fetchval("SELECT count(*) FROM order_ledger WHERE client_order_id = $1", tag) == 1
            assert await pools[0].fetchval("SELECT count(*) FROM order_events e JOIN order_ledger o USING "
                                           "(internal_id) WHERE o.client_order_id = $1", tag) == 1
    finally:
        for pool in pools:
            await pool.close()


async def test_updates_racing_out_of_order_on_separate_connections_leave_the_newest(db_pool):
    ledger = PgLedger(db_pool)
    for round_ in range(10):
        order = new_order(str(uuid.uuid4()), f"ooo-{round_}")
        await ledger.insert_new(order, {})
        opened = transition(order, t.ORDER_STATUS_OPEN, 5)
        traded = transition(opened, t.ORDER_STATUS_TRADED, 6, fill=(10, 250_000, 0), filled=(10, 250_000))
        pair = (traded, opened) if round_ % 2 else (opened, traded)

        await asyncio.gather(*(ledger.record(u, {}) for u in pair))

        row = await ledger.get(order.internal_id)
        assert (row.status, row.sequence, row.filled_quantity) == (t.ORDER_STATUS_TRADED, 6, 10)


async def test_max_sequence_survives_a_restart(database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    order = new_order(str(uuid.uuid4()), sequence=1_000)
    await PgLedger(pool).insert_new(order, {})
    await PgLedger(pool).record(transition(order, t.ORDER_STATUS_SUBMITTED, 1_001), {})
    await PgLedger(pool).record(transition(order, t.ORDER_STATUS_OPEN, 999), {})  # stale: stored as an event only
    await pool.close()

    reopened = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        assert await PgLedger(reopened).max_sequence() == 1_001
    finally:
        await reopened.close()


async def test_a_failed_event_write_rolls_the_row_update_back(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "atomic")
    await ledger.insert_new(order, {})
    await db_pool.execute("""
        CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'order_events is down'; END $$;
        CREATE TRIGGER refuse_event BEFORE INSERT ON order_events FOR EACH ROW EXECUTE FUNCTION refuse_event();""")

    with pytest.raises(asyncpg.RaiseError, match="order_events is down"):
        await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2, exchange_id="X-1"), {"response": {"a": 1}})
    with pytest.raises(asyncpg.RaiseError, match="order_events is down"):
        await ledger.insert_new(new_order(str(uuid.uuid4()), "never"), {})

    row = await ledger.get("atomic")
    assert (row.status, row.exchange_order_id, row.sequence) == (t.ORDER_STATUS_PENDING_NEW, "", 1)
    assert await ledger.get("never") is None
    meta = json.loads(await db_pool.fetchval("SELECT metadata FROM order_ledger"))
    assert "response" not in meta and len(meta["audit_log"]) == 1


async def _stored(pool: asyncpg.Pool, internal_id: str) -> tuple[dict, dict]:
    meta = await pool.fetchval("SELECT metadata FROM order_ledger WHERE internal_id = $1", uuid.UUID(internal_id))
    event = await pool.fetchval("SELECT payload FROM order_events WHERE internal_id = $1 ORDER BY event_id DESC "
                                "LIMIT 1", uuid.UUID(internal_id))
    return json.loads(meta), json.loads(event)


@pytest.mark.parametrize(("value", "stored"), [
    ("bad\x00symbol", "bad\\u0000symbol"),  # jsonb and text refuse NUL: stored as its escape
    ("caf\udce9", "caf\\udce9"),  # a lone surrogate (bytes decoded with surrogateescape) is no UTF-8
    (math.nan, "NaN"), (math.inf, "Infinity"),  # Python's json reads them from a reply; jsonb refuses them
    (Decimal("12.3400"), "12.3400"),
    (b"\xff\x00ok", "b'\\xff\\x00ok'"),  # its repr: lossless
    (t.OrderRequest(client_order_id="odd", token=2885), {"client_order_id": "odd", "token": "2885"}),
    ({1: "a", "b": 2}, {"1": "a", "b": 2}),  # keys of mixed types: json.dumps(sort_keys=True) cannot order them
], ids=["nul", "surrogate", "nan", "inf", "decimal", "bytes", "proto", "mixed_keys"])
async def test_a_broker_reply_with_an_odd_value_is_stored_not_refused(db_pool, value, stored):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "odd")
    await ledger.insert_new(order, {"decision": {"raw": [value]}})
    rejected = transition(order, t.ORDER_STATUS_REJECTED, 2, reason="Kotak: rejected")

    await ledger.record(rejected, {"response": {"raw": {"rejRsn": value}}})

    assert (await ledger.get("odd")).status == t.ORDER_STATUS_REJECTED
    meta, event = await _stored(db_pool, order.internal_id)
    assert meta["decision"]["raw"] == [stored]
    assert meta["response"]["raw"]["rejRsn"] == stored
    assert event["audit"]["response"]["raw"]["rejRsn"] == stored


async def test_a_broker_reason_with_a_nul_is_stored_not_refused(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "nul")
    await ledger.insert_new(order, {})

    await ledger.record(transition(order, t.ORDER_STATUS_REJECTED, 2, reason="RMS:\x00 blocked",
                                   exchange_id="X\x001"), {})

    row = await ledger.get("nul")
    assert (row.status, row.reason, row.exchange_order_id) == (t.ORDER_STATUS_REJECTED, "RMS:\\u0000 blocked",
                                                               "X\\u00001")


async def test_session_secrets_in_a_broker_reply_are_not_stored(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "secret")
    await ledger.insert_new(order, {})
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJYWTEyMyJ9.c2lnbmF0dXJl"
    raw = {"nOrdNo": "X-9", "stat": "Ok", "data": {"token": jwt, "sid": "b1946ac9-sid", "hsServerId": "srv-1",
                                                  "Authorization": "consumer-key-123", "mpin": "123456"},
           "tok": "2885"}

    await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2, exchange_id="X-9"), {"response": {"raw": raw}})

    meta, event = await _stored(db_pool, order.internal_id)
    for text in (json.dumps(meta), json.dumps(event)):
        for secret in (jwt, "b1946ac9-sid", "consumer-key-123", "123456"):
            assert secret not in text
    assert meta["response"]["raw"]["nOrdNo"] == "X-9" and meta["response"]["raw"]["tok"] == "2885"


async def test_a_stale_update_keeps_the_latest_broker_reply_in_metadata(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "meta")
    await ledger.insert_new(order, {})
    await ledger.record(transition(order, t.ORDER_STATUS_TRADED, 7), {"event": {"status": "complete"}})

    await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 5), {"event": {"status": "open"}})

    meta, _ = await _stored(db_pool, order.internal_id)
    assert meta["event"] == {"status": "complete"}
    assert [(e["sequence"], e["event"]["status"]) for e in meta["audit_log"][1:]] == [(7, "complete"), (5, "open")]


async def test_recording_one_update_twice_logs_it_once(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "retry")
    await ledger.insert_new(order, {})
    opened = transition(order, t.ORDER_STATUS_OPEN, 2, exchange_id="X-1")

    await ledger.record(opened, {"response": {"nOrdNo": "X-1"}})
    await ledger.record(opened, {"response": {"nOrdNo": "X-1"}})  # a retry after a lost reply

    meta, _ = await _stored(db_pool, order.internal_id)
    assert [e["status"] for e in meta["audit_log"]] == ["PENDING_NEW", "OPEN"]


async def test_orders_by_day_list_ties_on_created_at_in_the_order_they_were_written(db_pool):
    ledger = PgLedger(db_pool)
    first = new_order(str(uuid.uuid4()), "first", ts_ns=T0, sequence=1)
    second = new_order(str(uuid.uuid4()), "second", ts_ns=T0, sequence=2)
    await ledger.insert_new(first, {})
    await ledger.insert_new(second, {})
    await ledger.record(transition(first, t.ORDER_STATUS_OPEN, 3), {})

    assert _ids(await queries.orders(db_pool, DAY)) == ["second", "first"]


# How the OMS wrote an order before 0004 added the price factor columns.
INSERT_BEFORE_0004 = """
INSERT INTO order_ledger (internal_id, client_order_id, strategy_tag, signal_id, status, side, quantity, price,
    trigger, order_type, product, validity, token, exchange_segment, symbol, last_sequence, last_ts_ns, tick_recv_ns,
    metadata, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19::jsonb, $20, $20)"""


async def test_orders_written_before_0003_get_their_written_order_from_it(pg_server, home):
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(pg_server.rsplit("/", 1)[0] + f"/{name}")
    try:
        for m in migrate.discover()[:2]:
            (home / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
        await migrate.migrate(conn, home)  # a database from before 0003
        for tag, ts, seq in [("b", T0, 3), ("a", T0, 2), ("old", T0 - NS, 9), ("c", T0 + NS, 1)]:
            order = new_order(str(uuid.uuid4()), tag, ts_ns=ts, sequence=seq)
            await conn.execute(INSERT_BEFORE_0004, *insert_args(order, {})[:20])
            await conn.execute("INSERT INTO order_events (internal_id, sequence, status, payload, ts) "
                               "VALUES ($1, $2, 'PENDING_NEW', '{}', now())", uuid.UUID(order.internal_id), seq)
        await conn.execute("UPDATE order_ledger SET last_sequence = 99 WHERE client_order_id = 'b'")

        assert await migrate.migrate(conn) == [m.version for m in migrate.discover()][2:]  # 0003 onwards
        written = [r["client_order_id"] for r in await conn.fetch(
            "SELECT client_order_id FROM order_ledger ORDER BY written_seq")]
        new = new_order(str(uuid.uuid4()), "new", ts_ns=T0 + 2 * NS)
        await conn.execute(INSERT_SQL, *insert_columns([(new, {})]))
        newest = await conn.fetchval("SELECT client_order_id FROM order_ledger ORDER BY written_seq DESC LIMIT 1")
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()

    assert written == ["old", "b", "a", "c"]
    assert newest == "new"


async def test_a_ledger_write_behind_a_row_lock_gives_up_after_lock_timeout_ms_not_never(database):
    """An operator's psql left in a transaction holding an order's row: the OMS's write of that order, which holds
    every transition behind it, fails after [database] lock_timeout_ms and is retried (the OMS's recovery), instead
    of waiting for as long as the lock is held."""
    pool = await connect_pool(database, DatabaseSettings(lock_timeout_ms=300))
    other = await asyncpg.connect(database)
    try:
        ledger = PgLedger(pool)
        order = new_order(str(uuid.uuid4()), "held")
        await ledger.insert_new(order, {})
        held = other.transaction()
        await held.start()
        await other.execute("SELECT 1 FROM order_ledger WHERE internal_id = $1 FOR UPDATE",
                            uuid.UUID(order.internal_id))

        with pytest.raises(asyncpg.LockNotAvailableError):
            async with asyncio.timeout(5):
                await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2), {})

        await held.rollback()
        await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2), {})  # the retry, once the lock is gone
        assert (await ledger.get(order.internal_id)).status == t.ORDER_STATUS_OPEN
    finally:
        await other.close()
        await pool.close()


async def test_a_ledger_write_with_every_pooled_connection_taken_gives_up_after_its_timeout(database):
    """A pool used up (a stuck report on each connection) held the OMS's write, and every transition queued behind
    it, for as long as that lasted: it raises after timeout_s, an unknown outcome the OMS reads back and retries."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        ledger = PgLedger(pool, timeout_s=0.3)
        order = new_order(str(uuid.uuid4()), "no-connection")
        await ledger.insert_new(order, {})
        taken = await pool.acquire()

        began = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):  # the test's own guard: it would end here, 3 s in, without timeout_s
                await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2), {})
        assert time.monotonic() - began < 2

        await pool.release(taken)
        await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 2), {})
        assert (await ledger.get(order.internal_id)).status == t.ORDER_STATUS_OPEN
    finally:
        pool.terminate()  # not close(): it would wait for the connection taken, were the test to fail before
