"""/orders (open) also lists today's orders the OMS gave up without the broker's answer (REJECTED, OUTCOME_UNKNOWN):
they may be live at the broker, and the CRITICAL alert sends the trader to check them."""

from __future__ import annotations

import re
from datetime import date

from shared.clock import ist_ns
from shared.contracts import trading_pb2
from tests.notifier.conftest import DAY_START, order
from tests.notifier.test_commands import ask

REJECTED, OPEN = trading_pb2.ORDER_STATUS_REJECTED, trading_pb2.ORDER_STATUS_OPEN


def ended(symbol: str, reason_code: str, ts_ns: int = DAY_START) -> trading_pb2.OrderUpdate:
    o = order(symbol, filled=0, avg=0, status=REJECTED, ts_ns=ts_ns)
    o.reason_code = reason_code
    return o


async def test_open_orders_are_led_by_todays_orders_whose_outcome_is_unknown(notifier, fake_api, standins):
    standins.orders = [
        ended("SBIN-EQ", "OUTCOME_UNKNOWN"),
        ended("TCS-EQ", "BROKER_REJECTED"),  # refused by the broker: ended for sure
        ended("INFY-EQ", "OUTCOME_UNKNOWN", ts_ns=ist_ns(date(2026, 11, 24), 11, 0)),  # an earlier day's
        order("HDFC-EQ", filled=0, avg=0, status=OPEN),
    ]

    reply = await ask(fake_api, "/orders")

    assert re.findall(r"<b>(\S+)</b>", reply) == ["SBIN-EQ", "HDFC-EQ"], reply
