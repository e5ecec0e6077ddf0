"""find_by_tag after Kotak rewrote an order's tag, as it does when the order is modified ("<epoch>-<number>-<ucc>-
ADMINAPI") or cancelled ("<tag>-<epoch>"; Kotak-neo-api-v2 issue 33): the simulator's rewrite_tags. The OMS finds
its orders by their client_order_id (read-backs, orders whose placement had no answer)."""

from __future__ import annotations

from shared.kotak.broker import KotakBroker
from tests.kotak.conftest import settings_for
from tests.kotak.test_broker import limit_buy


async def test_an_order_neopulse_changed_is_still_found_by_its_client_order_id(sim, broker):
    sim.exchange.rewrite_tags = True
    ack = await broker.place_order(limit_buy("sig-00000000000000a1", 120_000))
    await broker.modify_order(ack.exchange_order_id, price_paise=121_000)

    found = await broker.find_by_tag("sig-00000000000000a1")

    assert found is not None and (found.exchange_order_id, found.price_paise) == (ack.exchange_order_id, 121_000)
    assert found.raw["GuiOrdId"].endswith("-SIM-ADMINAPI")  # Kotak's row keeps Kotak's tag


async def test_an_order_neopulse_cancelled_is_still_found_by_its_client_order_id(sim, broker):
    sim.exchange.rewrite_tags = True
    ack = await broker.place_order(limit_buy("sig-00000000000000a2", 120_000))
    await broker.cancel_order(ack.exchange_order_id)

    found = await broker.find_by_tag("sig-00000000000000a2")

    assert found is not None and found.exchange_order_id == ack.exchange_order_id


async def test_a_restarted_broker_finds_an_order_cancelled_before_by_its_stamped_tag(sim, broker):
    sim.exchange.rewrite_tags = True
    ack = await broker.place_order(limit_buy("sig-00000000000000a3", 120_000))
    await broker.cancel_order(ack.exchange_order_id)
    restarted = KotakBroker(settings_for(sim))  # knows no order number yet
    await restarted.start()

    found = await restarted.find_by_tag("sig-00000000000000a3")

    assert found is not None and found.exchange_order_id == ack.exchange_order_id


async def test_a_tag_that_extends_another_by_more_than_a_stamp_is_another_order(sim, broker):
    """A square-off's later run is tagged as the earlier one plus "-<run>": not the earlier one."""
    await broker.place_order(limit_buy("SQ-20251125-2885-1-0-t6x1ab", 120_000))

    assert await broker.find_by_tag("SQ-20251125-2885-1-0") is None
