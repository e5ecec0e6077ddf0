"""/orders shows the newest orders and says how many more there are, so a trader never takes 20 lines for all."""

from __future__ import annotations

from shared.contracts import trading_pb2
from tests.notifier.conftest import DAY_START, order
from tests.notifier.test_commands import ask


async def test_orders_says_how_many_older_open_orders_it_does_not_show(notifier, fake_api, standins):
    standins.orders = [order(symbol=f"S{i}-EQ", status=trading_pb2.ORDER_STATUS_OPEN, filled=0, avg=0,
                             ts_ns=DAY_START + i) for i in range(25)]

    reply = await ask(fake_api, "/orders")

    assert reply.count("OPEN 0/10") == 20 and reply.endswith("\n… and 5 more open orders, older ones not shown")
