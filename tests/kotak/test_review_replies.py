"""Kotak's replies read as Kotak means them: an "Ok" that carries a message is a success (mapping.reply_error), and
the account's MTM is in the per-segment fields of its limits reply when the top-level ones say 0 (mapping.funds)."""

from __future__ import annotations

import pytest

from shared.contracts import trading_pb2 as T
from shared.kotak import mapping
from tests.kotak.test_broker import limit_buy

# The fields of Kotak's sample limits reply (kotak-neo-python docs/functions/portfolio/limits.md) that matter here.
LIMITS_SAMPLE = {
    "Category": "CLIENT_SPECIAL", "CollateralValue": "38.19", "UnrealizedMtomPrsnt": "0", "RealizedMtomPrsnt": "0",
    "MarginUsed": "18.78", "Net": "19.409999999999997", "CashUnRlsMtomPrsnt": "-0.24", "FoUnRlsMtomPrsnt": "0",
    "ComUnRlsMtomPrsnt": "0", "CurUnRlsMtomPrsnt": "0", "CashRlsMtomPrsnt": "0", "FoRlsMtomPrsnt": "0",
    "ComRlsMtomPrsnt": "0", "CurRlsMtomPrsnt": "0", "stCode": 200, "stat": "Ok",
}


@pytest.mark.parametrize("reply", [
    {"stat": "Ok", "nOrdNo": "251125000000001", "stCode": 200, "message": "Order cancelled"},
    {"stat": "ok", "nOrdNo": "251125000000001", "description": "Order modified successfully"},
    {"nOrdNo": "251125000000001", "stCode": 200, "message": "Order modified successfully"},
])
def test_an_ok_reply_with_a_message_is_a_success(reply):
    assert mapping.reply_error(reply) is None


@pytest.mark.parametrize("reply", [
    {"stat": "Not_Ok", "stCode": 1009, "message": "order not found"},
    {"stCode": 200, "errMsg": "order is completed"},
    {"stat": "Not_Ok", "stCode": 200, "message": "order cannot be cancelled"},  # Not_Ok whatever the code says
])
def test_a_reply_that_is_not_ok_or_names_an_error_is_still_a_refusal(reply):
    assert mapping.reply_error(reply) == ("refused", reply.get("errMsg") or reply.get("message"))


async def test_a_cancel_kotak_carried_out_and_answered_ok_with_a_message_is_acknowledged(sim, broker):
    ack = await broker.place_order(limit_buy("coid-okmsg", 120_000))
    sim.fail_next("cancel_order", status=200, after_work=True, body={
        "stat": "Ok", "nOrdNo": ack.exchange_order_id, "stCode": 200, "message": "Order cancelled"})

    answer = await broker.cancel_order(ack.exchange_order_id)

    assert (answer.exchange_order_id, answer.status) == (ack.exchange_order_id, T.ORDER_STATUS_CANCEL_PENDING)


def test_the_accounts_mtm_is_the_sum_of_the_segments_when_the_top_level_fields_say_zero():
    funds = mapping.funds(LIMITS_SAMPLE, 0)

    assert (funds.unrealised_pnl_paise, funds.realised_pnl_paise) == (-24, 0)


def test_the_accounts_mtm_is_the_top_level_field_when_it_has_one():
    funds = mapping.funds({**LIMITS_SAMPLE, "RealizedMtomPrsnt": "12.50", "CashRlsMtomPrsnt": "3.00"}, 0)

    assert funds.realised_pnl_paise == 1250
