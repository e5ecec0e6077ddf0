"""PgLedger lookups by a key holding NUL (GetOrder, CancelOrder, ModifyOrder, PlaceOrder's duplicate check,
ListOrders by strategy tag): PostgreSQL text holds no NUL, so no order has such a key; it is not found, not an error."""

from __future__ import annotations

import uuid

from services.oms.ledger_pg import PgLedger
from tests.db.helpers import new_order


async def test_an_order_id_holding_nul_is_not_found_instead_of_failing(db_pool):
    ledger = PgLedger(db_pool)
    await ledger.insert_new(new_order(str(uuid.uuid4()), "ORD"), {})

    assert await ledger.get("ORD\x00X") is None


async def test_a_strategy_tag_holding_nul_lists_no_orders_instead_of_failing(db_pool):
    ledger = PgLedger(db_pool)
    await ledger.insert_new(new_order(str(uuid.uuid4()), "sig-1", strategy="x"), {})

    assert await ledger.list_orders(strategy_tag="x\x00") == []


async def test_an_order_id_holding_nul_does_not_find_the_order_whose_id_spells_out_the_escape(db_pool):
    """Escaping the key as the audit text is escaped would make it another order's id: cancelling the wrong order."""
    ledger = PgLedger(db_pool)
    await ledger.insert_new(new_order(str(uuid.uuid4()), "a\\u0000"), {})

    assert await ledger.get("a\x00") is None
