"""PgLedger: write-ahead that survives a crash, idempotent insert, transitions with events and metadata."""

from __future__ import annotations

import json
import uuid

import asyncpg

from services.oms.engine import given_up
from services.oms.ledger_pg import MAX_SEQUENCE_SQL, PgLedger
from services.oms.states import ReasonCode
from shared.clock import day_of
from shared.contracts import trading_pb2 as t
from tests.db.helpers import new_order, transition


async def test_a_write_ahead_order_is_pending_new_after_a_crash_before_the_broker_call(database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    order = new_order(str(uuid.uuid4()), "sig-crash")
    await PgLedger(pool).insert_new(order, {"decision": {"signal_id": "sig-crash"}})
    pool.terminate()  # the process dies here: the broker never saw the order

    reopened = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        open_orders = await PgLedger(reopened).open_orders()
    finally:
        await reopened.close()

    assert [(o.internal_id, o.status) for o in open_orders] == [(order.internal_id, t.ORDER_STATUS_PENDING_NEW)]
    assert open_orders[0].request == order.request


async def test_why_an_order_was_placed_is_kept_with_it_in_the_ledger(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "sig-why")
    order.request.reason = "trailing stop 1%: tick ₹100.98, 1.00% under the best ₹102.00 since the entry ₹100.00"
    await ledger.insert_many([(order, {})])

    (listed,) = await ledger.list_orders(strategy_tag=order.request.strategy_tag)

    assert listed.request.reason == order.request.reason
    assert await db_pool.fetchval("SELECT request_reason FROM order_ledger WHERE internal_id = $1",
                                  uuid.UUID(order.internal_id)) == order.request.reason


async def test_insert_new_twice_with_one_client_order_id_returns_the_existing_order(db_pool):
    ledger = PgLedger(db_pool)
    first = new_order(str(uuid.uuid4()), "sig-dup")
    await ledger.insert_new(first, {})

    again = await ledger.insert_new(new_order(str(uuid.uuid4()), "sig-dup"), {})

    assert again is not None and again.internal_id == first.internal_id
    assert await db_pool.fetchval("SELECT count(*) FROM order_ledger") == 1


async def test_insert_new_of_a_fresh_order_returns_none(db_pool):
    assert await PgLedger(db_pool).insert_new(new_order(str(uuid.uuid4())), {}) is None


async def test_record_updates_the_row_appends_an_event_and_merges_the_broker_exchange(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "sig-fill")
    await ledger.insert_new(order, {"decision": {"ok": True}})
    submitted = transition(order, t.ORDER_STATUS_SUBMITTED, 2)
    await ledger.record(submitted, {"request": {"qty": 10}})
    opened = transition(submitted, t.ORDER_STATUS_OPEN, 3, exchange_id="X-1")
    await ledger.record(opened, {"response": {"nOrdNo": "X-1"}})
    traded = transition(opened, t.ORDER_STATUS_TRADED, 4, fill=(10, 250_050, 1_234), filled=(10, 250_050))

    await ledger.record(traded, {"response": {"status": "complete"}})

    row = await ledger.get(order.internal_id)
    assert (row.status, row.previous_status, row.exchange_order_id) == (t.ORDER_STATUS_TRADED,
                                                                       t.ORDER_STATUS_OPEN, "X-1")
    assert (row.filled_quantity, row.average_price_paise, row.last_fill_charges_paise) == (10, 250_050, 1_234)
    events = await db_pool.fetch("SELECT status, fill_qty FROM order_events ORDER BY event_id")
    assert [(e["status"], e["fill_qty"]) for e in events] == [("PENDING_NEW", 0), ("SUBMITTED", 0), ("OPEN", 0),
                                                              ("TRADED", 10)]
    meta = json.loads(await db_pool.fetchval("SELECT metadata FROM order_ledger"))
    assert meta["decision"] == {"ok": True} and meta["request"] == {"qty": 10}
    assert meta["response"] == {"status": "complete"}
    assert [e["status"] for e in meta["audit_log"]] == ["PENDING_NEW", "SUBMITTED", "OPEN", "TRADED"]


async def test_recording_the_same_update_twice_appends_one_event(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()))
    await ledger.insert_new(order, {})
    submitted = transition(order, t.ORDER_STATUS_SUBMITTED, 2)

    await ledger.record(submitted, {})
    await ledger.record(submitted, {})

    assert await db_pool.fetchval("SELECT count(*) FROM order_events WHERE status = 'SUBMITTED'") == 1


async def test_an_update_older_than_the_last_one_recorded_does_not_move_the_row_back(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()))
    await ledger.insert_new(order, {})
    await ledger.record(transition(order, t.ORDER_STATUS_OPEN, 5), {})

    await ledger.record(transition(order, t.ORDER_STATUS_SUBMITTED, 3), {})

    assert (await ledger.get(order.internal_id)).status == t.ORDER_STATUS_OPEN


async def test_get_finds_an_order_by_client_order_id(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "sig-find")
    await ledger.insert_new(order, {})

    found = await ledger.get("sig-find")

    assert found is not None and found.internal_id == order.internal_id


async def test_list_orders_filters_by_strategy_and_open_and_returns_newest_first(db_pool):
    ledger = PgLedger(db_pool)
    a = new_order(str(uuid.uuid4()), "a", strategy="S1", ts_ns=1_764_000_000_000_000_000)
    b = new_order(str(uuid.uuid4()), "b", strategy="S1", ts_ns=1_764_000_001_000_000_000)
    c = new_order(str(uuid.uuid4()), "c", strategy="S2", ts_ns=1_764_000_002_000_000_000)
    for o in (a, b, c):
        await ledger.insert_new(o, {})
    await ledger.record(transition(a, t.ORDER_STATUS_REJECTED, 9, reason="no margin"), {})

    assert [o.client_order_id for o in await ledger.list_orders(strategy_tag="S1")] == ["b", "a"]
    assert [o.client_order_id for o in await ledger.list_orders(open_only=True)] == ["c", "b"]


async def test_max_sequence_is_the_highest_sequence_recorded(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), sequence=7)
    await ledger.insert_new(order, {})
    await ledger.record(transition(order, t.ORDER_STATUS_SUBMITTED, 42), {})

    assert await ledger.max_sequence() == 42


async def test_last_decision_sequence_is_the_highest_of_the_risk_decisions_written_ahead(db_pool):
    ledger = PgLedger(db_pool)
    base = 9_000_000_000_000_000  # above any other test's decisions in this database
    for n, sequence in enumerate((base + 9, base + 5)):
        order = new_order(str(uuid.uuid4()), f"sig-decided-{n}")
        await ledger.insert_new(order, {"decision": t.RiskDecision(accepted=True, sequence=sequence,
                                                                   order=order.request)})
    await ledger.insert_new(new_order(str(uuid.uuid4()), "sig-no-decision"), {})

    assert await ledger.last_decision_sequence() == base + 9


async def test_a_given_up_order_keeps_its_reason_code_through_the_ledger(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "sig-lost")
    await ledger.insert_new(order, {})
    submitted = transition(order, t.ORDER_STATUS_SUBMITTED, 2)
    await ledger.record(submitted, {})
    await ledger.record(transition(submitted, t.ORDER_STATUS_REJECTED, 3, reason="placement outcome unknown (...)",
                                   reason_code=ReasonCode.OUTCOME_UNKNOWN), {})

    row = await ledger.get("sig-lost")
    today = await ledger.list_orders()

    assert (row.status, row.reason_code) == (t.ORDER_STATUS_REJECTED, ReasonCode.OUTCOME_UNKNOWN)
    assert [given_up(u) for u in today] == [True]


async def test_fill_charges_sums_the_recorded_fills_of_the_days_orders(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), "sig-charged")
    await ledger.insert_new(order, {})
    part = transition(order, t.ORDER_STATUS_PARTIALLY_FILLED, 2, fill=(4, 250_000, 700), filled=(4, 250_000))
    await ledger.record(part, {})
    await ledger.record(transition(part, t.ORDER_STATUS_TRADED, 3, fill=(6, 250_000, 900), filled=(10, 250_000)), {})

    charges = await ledger.fill_charges(day_of(order.ts_ns))

    assert charges == {order.internal_id: 1_600}


async def _wal_flushes(pool: asyncpg.Pool) -> int:
    """WAL writes the client backends made (PostgreSQL 18's pg_stat_io): a commit that waits for the WAL to
    reach the disk writes it itself; one that does not leaves it to the WAL writer. The pool's one connection's
    own counts are made visible first. (The test server runs with fsync off: the writes are there, not syncs.)"""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")  # the flush happens as the statement before ends
        return int(await conn.fetchval("SELECT coalesce(sum(writes), 0) FROM pg_stat_io "
                                       "WHERE object = 'wal' AND backend_type = 'client backend'"))


async def test_the_write_ahead_waits_for_the_disk_and_the_transitions_after_it_do_not(database):
    """A flush per transition held bursts of orders up by tens of ms; the write-ahead keeps its flush."""
    # As a production server is configured (the test server commits without waiting, for speed).
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1, server_settings={"synchronous_commit": "on"})
    try:
        ledger, durable = PgLedger(pool), PgLedger(pool, durable_updates=True)
        orders = [new_order(str(uuid.uuid4()), f"sig-flush-{n}") for n in range(40)]
        before = await _wal_flushes(pool)
        for order in orders:
            await ledger.insert_new(order, {})
        inserted = await _wal_flushes(pool)
        for order in orders:
            await ledger.record(transition(order, t.ORDER_STATUS_SUBMITTED, 2), {})
        recorded = await _wal_flushes(pool)
        for order in orders:
            await durable.record(transition(order, t.ORDER_STATUS_OPEN, 3), {})
        recorded_durably = await _wal_flushes(pool)
    finally:
        await pool.close()

    assert inserted - before >= 40
    assert recorded - inserted < 10  # the WAL writer's flushes in the background, if any
    assert recorded_durably - recorded >= 40


async def test_a_burst_of_orders_is_written_ahead_with_one_flush_in_the_order_given(database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1, server_settings={"synchronous_commit": "on"})
    try:
        ledger = PgLedger(pool)
        burst = [new_order(str(uuid.uuid4()), f"sig-burst-{n}", sequence=n + 1) for n in range(20)]
        singles = [new_order(str(uuid.uuid4()), f"sig-single-{n}") for n in range(20)]
        before = await _wal_flushes(pool)
        assert await ledger.insert_many([(o, {"decision": {"n": n}}) for n, o in enumerate(burst)]) == [None] * 20
        after_burst = await _wal_flushes(pool)
        for o in singles:
            await ledger.insert_new(o, {})
        after_singles = await _wal_flushes(pool)
        written = [r["client_order_id"] for r in await pool.fetch(
            "SELECT client_order_id FROM order_ledger WHERE client_order_id LIKE 'sig-burst-%' ORDER BY written_seq")]
        events = await pool.fetchval("SELECT count(*) FROM order_events e JOIN order_ledger o USING (internal_id) "
                                     "WHERE o.client_order_id LIKE 'sig-burst-%' AND e.status = 'PENDING_NEW'")
    finally:
        await pool.close()

    assert after_burst - before <= 2
    assert after_singles - after_burst >= 20
    assert written == [f"sig-burst-{n}" for n in range(20)]
    assert events == 20


async def test_a_burst_with_an_order_already_in_the_ledger_writes_the_others_and_returns_that_one(db_pool):
    ledger = PgLedger(db_pool)
    earlier = new_order(str(uuid.uuid4()), "sig-seen")
    await ledger.insert_new(earlier, {})
    burst = [new_order(str(uuid.uuid4()), c) for c in ("sig-a", "sig-seen", "sig-b")]

    result = await ledger.insert_many([(o, {}) for o in burst])

    assert result[0] is None and result[2] is None
    assert result[1] is not None and result[1].internal_id == earlier.internal_id
    assert {o.client_order_id for o in await ledger.open_orders()} >= {"sig-a", "sig-b", "sig-seen"}
    assert await ledger.get(burst[1].internal_id) is None  # the refused one left no row


async def test_sequences_as_the_oms_numbers_them_fit(db_pool):
    """The OMS's sequences start at the process start in microseconds (~1.8e15): past 32 bits."""
    ledger = PgLedger(db_pool)
    start = 1_795_662_222_694_711
    order = new_order(str(uuid.uuid4()), "sig-big-sequence", sequence=start)
    await ledger.insert_new(order, {})

    await ledger.record(transition(order, t.ORDER_STATUS_SUBMITTED, start + 1), {})
    await ledger.record(transition(order, t.ORDER_STATUS_OPEN, start + 2), {})

    row = await ledger.get(order.internal_id)
    assert (row.status, row.sequence) == (t.ORDER_STATUS_OPEN, start + 2)
    assert await ledger.max_sequence() == start + 2


async def test_max_sequence_reads_an_index_not_every_event(db_pool):
    ledger = PgLedger(db_pool)
    order = new_order(str(uuid.uuid4()), sequence=1)
    await ledger.insert_new(order, {})
    await db_pool.execute("""
        INSERT INTO order_events (internal_id, sequence, status, payload, ts)
        SELECT $1::uuid, g, 'OPEN', '{}', now() FROM generate_series(2, 50000) g""", order.internal_id)
    await db_pool.execute("ANALYZE order_events")

    plan = "\n".join(r[0] for r in await db_pool.fetch(f"EXPLAIN {MAX_SEQUENCE_SQL}"))

    assert "order_events_sequence" in plan and "Seq Scan" not in plan, plan
    assert await ledger.max_sequence() == 50_000


async def test_where_risks_decisions_were_accounted_for_is_kept_and_never_moves_back(db_pool):
    ledger = PgLedger(db_pool)
    base = 9_100_000_000_000_000  # above anything another test keeps in this database
    await ledger.save_decisions_accounted(base + 7)
    await ledger.save_decisions_accounted(base + 3)  # an OMS that connected to an older risk process

    assert await PgLedger(db_pool).decisions_accounted() == base + 7
