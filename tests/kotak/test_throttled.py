"""Kotak's rate limit (HTTP 429, "too many request received"): an order request it throttled reached nothing there,
so the OMS over the real SDK sends it again after a wait, while its signal is fresh, and never places it twice. One
that stays throttled ends NOT_SENT (a placement), or leaves the order as it was (a change, a cancel).

The simulator answers 429 as Kotak does: for requests told to (throttle_next), or beyond its order quota per second.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from shared.bus import Topic
from shared.contracts import trading_pb2 as T
from shared.errors import NotSent, RetryableError
from shared.kotak.broker import KotakBroker
from shared.kotak.session import RateLimiter
from tests.helpers import eventually
from tests.kotak.conftest import RunningOms, settings_for
from tests.kotak.test_broker import limit_buy, market_buy

FAST = {"throttle_backoff_s": 0.05}  # the tests' wait between tries (Kotak's: 1 s, its limit being per second)


def throttled(method: str) -> float:
    return REGISTRY.get_sample_value("neopulse_kotak_throttled_requests_total", {"method": method}) or 0.0


async def place(running: RunningOms, order: T.OrderRequest) -> None:
    await running.bus.publish(Topic.ORDERS, T.RiskDecision(accepted=True, order=order, signal_id=order.client_order_id))


def tags(sim) -> list[str]:
    return sorted(o.tag for o in sim.exchange.orders.values())


async def test_a_placement_kotak_throttled_goes_again_and_is_placed_once(sim):
    before = throttled("place_order")
    async with RunningOms(sim, kotak=FAST) as running:
        sim.throttle_next("place_order", 2)

        await place(running, limit_buy("coid-429", 120_000))
        await eventually(lambda: (u := running.latest("coid-429")) is not None and u.status == T.ORDER_STATUS_OPEN)

    assert (sim.calls["place_order"], tags(sim)) == (3, ["coid-429"])
    assert throttled("place_order") == before + 2
    assert [u.status for u in running.updates] == [T.ORDER_STATUS_PENDING_NEW, T.ORDER_STATUS_SUBMITTED,
                                                   T.ORDER_STATUS_OPEN]


async def test_a_429_that_is_an_html_page_is_kotaks_throttle_too_and_the_placement_goes_again(sim, caplog):
    """A gateway in front of Kotak can answer 429 with a page, not Kotak's JSON: the SDK could not decode it, and the
    placement read as an unknown outcome (looked up, given up) though nothing was placed."""
    before = throttled("place_order")
    async with RunningOms(sim, kotak=FAST) as running:
        sim.fail_next("place_order", status=429, text="<html><body><h1>429 Too Many Requests</h1></body></html>")

        await place(running, limit_buy("coid-429-html", 120_000))
        await eventually(lambda: (u := running.latest("coid-429-html")) is not None
                         and u.status == T.ORDER_STATUS_OPEN)

    assert (sim.calls["place_order"], tags(sim)) == (2, ["coid-429-html"])
    assert throttled("place_order") == before + 1
    assert not [r.getMessage() for r in caplog.records if "outcome unknown" in r.getMessage()]


async def test_a_placement_kotak_keeps_throttling_ends_not_sent_and_is_not_looked_up(sim, caplog):
    async with RunningOms(sim, kotak={**FAST, "throttle_retries": 2}) as running:
        sim.throttle_next("place_order", 3)

        await place(running, market_buy("coid-429-all"))
        await eventually(lambda: (u := running.latest("coid-429-all")) is not None
                         and u.status == T.ORDER_STATUS_REJECTED)

    last = running.latest("coid-429-all")
    assert last.reason_code == "NOT_SENT" and "throttled it (429" in last.reason and "3 times" in last.reason
    assert (sim.calls["place_order"], tags(sim)) == (3, [])
    assert not [r.getMessage() for r in caplog.records if "outcome unknown" in r.getMessage()]


async def test_a_placement_gone_stale_while_throttled_is_not_sent_again(sim):
    order = market_buy("coid-429-stale")
    async with RunningOms(sim, kotak={"throttle_backoff_s": 1.2}, max_decision_age_s=1.0) as running:
        sim.throttle_next("place_order", 1)

        order.tick_recv_ns = time.time_ns()
        await place(running, order)
        await eventually(lambda: (u := running.latest("coid-429-stale")) is not None
                         and u.status == T.ORDER_STATUS_REJECTED, within=5)

    last = running.latest("coid-429-stale")
    assert last.reason_code == "NOT_SENT" and "max_decision_age_s 1 s" in last.reason and "throttled" in last.reason
    assert (sim.calls["place_order"], tags(sim)) == (1, [])


async def test_a_burst_over_kotaks_order_quota_is_placed_once_each(sim):
    """NeoPulse's own limit set above Kotak's (or another app using the account's quota): the requests over it
    come back 429, wait, and go again; every order is placed, none twice."""
    sim.order_quota_per_s = 3
    coids = [f"coid-burst-{i}" for i in range(8)]
    async with RunningOms(sim, kotak={"throttle_backoff_s": 0.5, "throttle_retries": 3}) as running:
        for coid in coids:
            await place(running, market_buy(coid))

        await eventually(lambda: all((u := running.latest(c)) is not None and u.status == T.ORDER_STATUS_TRADED
                                     for c in coids), within=10)

    assert tags(sim) == sorted(coids)
    assert sim.calls["place_order"] > len(coids)  # some were throttled and sent again


async def test_a_cancel_kotak_throttled_goes_again(sim):
    async with RunningOms(sim, kotak=FAST) as running:
        await place(running, limit_buy("coid-429-cancel", 120_000))
        await eventually(lambda: (u := running.latest("coid-429-cancel")) is not None
                         and u.status == T.ORDER_STATUS_OPEN)
        sim.throttle_next("cancel_order", 1)

        cancelled = await running.oms.engine.cancel("coid-429-cancel")

    assert cancelled.status in (T.ORDER_STATUS_CANCEL_PENDING, T.ORDER_STATUS_CANCELLED)
    assert sim.calls["cancel_order"] == 2
    assert [o.status for o in sim.exchange.orders.values()] == ["cancelled"]


async def test_a_cancel_kotak_keeps_throttling_leaves_the_order_open_and_says_why(sim):
    async with RunningOms(sim, kotak={**FAST, "throttle_retries": 1}) as running:
        await place(running, limit_buy("coid-429-keep", 120_000))
        await eventually(lambda: (u := running.latest("coid-429-keep")) is not None
                         and u.status == T.ORDER_STATUS_OPEN)
        sim.throttle_next("cancel_order", 2)

        with pytest.raises(NotSent, match=r"cancel_order: not sent: Kotak throttled it \(429"):
            await running.oms.engine.cancel("coid-429-keep")

        await eventually(lambda: running.latest("coid-429-keep").status == T.ORDER_STATUS_OPEN)
    assert [o.status for o in sim.exchange.orders.values()] == ["open"]


async def test_after_a_429_no_order_request_goes_until_the_wait_is_over():
    """The quota is the account's: while one request waits out a 429, the others wait too, not hammer Kotak."""
    limiter = RateLimiter(per_second=1000)
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    start = loop.time()

    limiter.hold(0.2)
    await limiter.acquire()

    assert loop.time() - start >= 0.2


async def test_a_simulator_in_another_process_is_told_to_throttle_over_http(sim):
    """`neopulse sim`'s test knob: POST /_sim/faults/<endpoint> {"throttle": n}."""
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        (await http.post("/_sim/faults/place_order", json={"throttle": 2})).raise_for_status()
        async with RunningOms(sim, kotak=FAST) as running:
            await place(running, market_buy("coid-429-http"))
            await eventually(lambda: (u := running.latest("coid-429-http")) is not None
                             and u.status == T.ORDER_STATUS_TRADED)
        calls = (await http.get("/_sim/calls")).json()
    assert (calls["place_order"], tags(sim)) == (3, ["coid-429-http"])


async def no_check(request: T.OrderRequest, filled: int) -> None:
    """Risk's word on a change: yes."""


async def test_a_change_kotak_throttled_goes_again_and_one_it_keeps_throttling_leaves_the_old_terms(sim):
    async with RunningOms(sim, kotak={**FAST, "throttle_retries": 1}) as running:
        await place(running, limit_buy("coid-429-mod", 120_000, qty=2))
        await eventually(lambda: (u := running.latest("coid-429-mod")) is not None
                         and u.status == T.ORDER_STATUS_OPEN)
        sim.throttle_next("modify_order", 1)
        changed = await running.oms.engine.modify("coid-429-mod", (0, 119_000, 0), no_check)
        assert (changed.request.price_paise, sim.calls["modify_order"]) == (119_000, 2)

        sim.throttle_next("modify_order", 2)
        with pytest.raises(NotSent, match=r"modify_order: not sent: Kotak throttled it \(429"):
            await running.oms.engine.modify("coid-429-mod", (0, 118_000, 0), no_check)

        now = running.latest("coid-429-mod")
    assert (now.status, now.request.price_paise, now.changes_sent) == (T.ORDER_STATUS_OPEN, 119_000, 2)
    assert [o.price for o in sim.exchange.orders.values()] == [119_000]  # paise


async def test_a_read_kotak_throttled_is_made_again_after_the_wait(sim):
    """The OMS looks an order up by its tag when a placement's answer was lost: a 429 there must not read as "not
    at the broker" (nor fail the lookup while Kotak would answer a second later)."""
    before = throttled("order_report")
    broker = KotakBroker(settings_for(sim, **FAST))
    await broker.start()
    try:
        await broker.place_order(limit_buy("coid-429-read", 120_000))
        sim.throttle_next("order_book", 2)
        calls = sim.calls["order_book"]

        found = await broker.find_by_tag("coid-429-read")
    finally:
        await broker.stop()

    assert found is not None and found.status == T.ORDER_STATUS_OPEN
    assert (sim.calls["order_book"] - calls, throttled("order_report") - before) == (3, 2)


async def test_a_read_kotak_keeps_throttling_is_a_retryable_error_not_an_answer(sim):
    broker = KotakBroker(settings_for(sim, **FAST, throttle_retries=1))
    await broker.start()
    try:
        sim.throttle_next("order_book", 2)

        with pytest.raises(RetryableError, match=r"order_report: throttled \(429: over its rate limit\) 2 times"):
            await broker.find_by_tag("coid-nothing")
    finally:
        await broker.stop()
