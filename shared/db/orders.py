"""Order rows <-> OrderUpdate protos: the one mapping between order_ledger/order_events columns and the contract.

Pure conversion (no I/O); used by services/oms/ledger_pg.py and shared/db/queries.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from google.protobuf.message import Message

from shared.clock import UTC
from shared.contracts import trading_pb2 as t
from shared.db.protojson import message_dict
from shared.price_factor import factor_of, price_factor

TERMINAL_NAMES = ("TRADED", "REJECTED", "CANCELLED")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Column list shared by every SELECT that rebuilds an OrderUpdate.
LEDGER_COLUMNS = """internal_id, client_order_id, exchange_id, strategy_tag, signal_id, status, previous_status, side,
    quantity, price, trigger, order_type, product, validity, token, exchange_segment, symbol, filled_qty, avg_price,
    last_fill_qty, last_fill_price, last_fill_charges, reason, reason_code, last_sequence, last_ts_ns, tick_recv_ns,
    price_factor_num, price_factor_den, changes_sent, changed_by_hand, request_reason"""


def enum_name(enum: Any, prefix: str, value: int) -> str:
    """ORDER_STATUS_OPEN -> 'OPEN' (how enums are stored: readable in SQL)."""
    return enum.Name(value).removeprefix(prefix)


def enum_value(enum: Any, prefix: str, name: str) -> Any:
    """'OPEN' -> ORDER_STATUS_OPEN (typed Any: the generated stubs want their own enum type, not int)."""
    return enum.Value(prefix + name)


def status_name(value: int) -> str:
    return enum_name(t.OrderStatus, "ORDER_STATUS_", value)


def ts_of(ns: int) -> datetime:
    """UTC ns -> timestamptz (microseconds); 0 means now."""
    return _EPOCH + timedelta(microseconds=ns // 1000) if ns else datetime.now(UTC)


def _json_default(value: Any) -> Any:
    # Audit entries may carry protobuf messages as they are: converting them here, on the way to the
    # database, keeps that cost off the order path of runs that keep no database.
    if isinstance(value, Message):
        return message_dict(value)
    return str(value)


def jsonb(value: dict[str, Any]) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def payload(update: t.OrderUpdate, audit: dict[str, Any]) -> str:
    """One order_events payload: the whole update plus the broker exchange that caused it."""
    return jsonb({"update": message_dict(update), "audit": audit})


def row_to_update(row: Any) -> t.OrderUpdate:
    """A record with LEDGER_COLUMNS -> the order's latest OrderUpdate."""
    req = t.OrderRequest(
        client_order_id=row["client_order_id"], token=row["token"], exchange_segment=row["exchange_segment"],
        symbol=row["symbol"], side=enum_value(t.Side, "SIDE_", row["side"]), quantity=row["quantity"],
        order_type=enum_value(t.OrderType, "ORDER_TYPE_", row["order_type"]), price_paise=row["price"],
        trigger_price_paise=row["trigger"], product=enum_value(t.Product, "PRODUCT_", row["product"]),
        validity=enum_value(t.Validity, "VALIDITY_", row["validity"]), strategy_tag=row["strategy_tag"],
        signal_id=row["signal_id"], tick_recv_ns=row["tick_recv_ns"],
        price_factor=price_factor(Fraction(row["price_factor_num"], row["price_factor_den"])),
        reason=row["request_reason"])
    return t.OrderUpdate(
        internal_id=str(row["internal_id"]), client_order_id=row["client_order_id"],
        exchange_order_id=row["exchange_id"], status=enum_value(t.OrderStatus, "ORDER_STATUS_", row["status"]),
        previous_status=enum_value(t.OrderStatus, "ORDER_STATUS_", row["previous_status"]),
        filled_quantity=row["filled_qty"], average_price_paise=row["avg_price"],
        last_fill_quantity=row["last_fill_qty"], last_fill_price_paise=row["last_fill_price"],
        last_fill_charges_paise=row["last_fill_charges"], reason=row["reason"], reason_code=row["reason_code"],
        request=req, ts_ns=row["last_ts_ns"], sequence=row["last_sequence"], changes_sent=row["changes_sent"],
        changed_by_hand=row["changed_by_hand"])


def insert_args(u: t.OrderUpdate, audit: dict[str, Any]) -> tuple[Any, ...]:
    """One order's row values, from a write-ahead OrderUpdate (INSERT_SQL takes them as columns: insert_columns)."""
    r = u.request
    factor = factor_of(r.price_factor)
    return (u.internal_id, u.client_order_id, r.strategy_tag, r.signal_id, status_name(u.status),
            enum_name(t.Side, "SIDE_", r.side), r.quantity, r.price_paise, r.trigger_price_paise,
            enum_name(t.OrderType, "ORDER_TYPE_", r.order_type), enum_name(t.Product, "PRODUCT_", r.product),
            enum_name(t.Validity, "VALIDITY_", r.validity), r.token, r.exchange_segment, r.symbol, u.sequence,
            u.ts_ns, r.tick_recv_ns, jsonb(with_log(audit, u)), ts_of(u.ts_ns), factor.numerator, factor.denominator,
            r.reason)


def with_log(audit: dict[str, Any], u: t.OrderUpdate) -> dict[str, Any]:
    """The metadata of a new order: the audit keys, plus audit_log (one entry per transition, kept in full)."""
    return {**audit, "audit_log": [log_entry(audit, u)]}


def log_entry(audit: dict[str, Any], u: t.OrderUpdate) -> dict[str, Any]:
    return {"sequence": u.sequence, "status": status_name(u.status), "ts_ns": u.ts_ns, **audit}


def insert_columns(orders: list[tuple[t.OrderUpdate, dict[str, Any]]]) -> list[list[Any]]:
    """INSERT_SQL's arguments for write-ahead orders and their audits: one array per column, each order's row
    values (insert_args) followed by its first event's fill and payload."""
    rows = [(*insert_args(u, audit), u.last_fill_quantity, u.last_fill_price_paise, u.last_fill_charges_paise,
             payload(u, audit)) for u, audit in orders]
    return [list(column) for column in zip(*rows, strict=True)]


# The write-ahead of one order or of a burst: their rows and first events in one statement (one round trip, one
# commit), in the order given. An order whose internal_id or client_order_id is in the ledger already is not
# written (ON CONFLICT); the statement returns the internal_ids it wrote.
INSERT_SQL = """
WITH new AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[],
                         $15::text[], $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::timestamptz[],
                         $21::bigint[], $22::bigint[], $23::text[], $24::bigint[], $25::bigint[], $26::bigint[],
                         $27::text[])
        WITH ORDINALITY AS r (internal_id, client_order_id, strategy_tag, signal_id, status, side, quantity, price,
                              trigger, order_type, product, validity, token, exchange_segment, symbol, sequence,
                              ts_ns, tick_recv_ns, metadata, created_at, factor_num, factor_den, request_reason,
                              fill_qty, fill_price, fill_charges, payload, n)),
ins AS (
    INSERT INTO order_ledger (internal_id, client_order_id, strategy_tag, signal_id, status, side, quantity, price,
        trigger, order_type, product, validity, token, exchange_segment, symbol, last_sequence, last_ts_ns,
        tick_recv_ns, metadata, created_at, updated_at, price_factor_num, price_factor_den, request_reason)
    SELECT internal_id, client_order_id, strategy_tag, signal_id, status, side, quantity, price, trigger, order_type,
        product, validity, token, exchange_segment, symbol, sequence, ts_ns, tick_recv_ns, metadata::jsonb, created_at,
        created_at, factor_num, factor_den, request_reason
    FROM new ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING internal_id),
ev AS (
    INSERT INTO order_events (internal_id, sequence, status, fill_qty, fill_price, fill_charges, payload, ts)
    SELECT new.internal_id, sequence, status, fill_qty, fill_price, fill_charges, payload::jsonb, created_at
    FROM new JOIN ins USING (internal_id) ORDER BY n
    RETURNING event_id)
SELECT array_agg(internal_id) AS written, (SELECT count(*) FROM ev) AS events FROM ins"""
