"""On real Kotak a market order becomes a limit at the last price +/- its market protection, and it can rest while
the price runs past it (kotak-neo-api-v2 #78: one rested 17 minutes): a stop's exit or a square-off sent so guards
nothing. The OMS tells the trader of a market order working with nothing filled for market_order_alert_s, once."""

from __future__ import annotations

from services.oms.charges import ChargeModel
from services.oms.config import OmsSettings
from services.oms.virtual_broker import VirtualBroker
from shared.bus import Topic
from shared.clock import ManualClock
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from tests.helpers import eventually as until
from tests.oms.conftest import accepted
from tests.oms.helpers import order


class AtKotak(VirtualBroker):
    """A broker outside the process, as Kotak: its market orders are watched (the paper broker fills its own)."""

    in_process = False


def alerts(oms) -> list[ops_pb2.Notification]:
    return [n for n in oms.notifications if n.title == "Market order not filled"]


async def test_a_market_order_resting_unfilled_is_told_once(start_oms):
    oms = await start_oms(broker=AtKotak(None, ChargeModel.default(), ManualClock(0)),
                          settings=OmsSettings(lookup_backoff_s=0, poll_interval_s=0, place_order_wait_s=2,
                                               market_order_alert_s=0.05, position_check_s=0, funds_check_s=0))
    # No tick yet: the stand-in holds the market order as Kotak holds one its protection keeps from filling.
    await oms.bus.publish(Topic.ORDERS, accepted(order(kind=t.ORDER_TYPE_MARKET, price=0, client_order_id="mkt")))
    await oms.until_status("mkt", t.ORDER_STATUS_OPEN)
    oms.clock.advance(1)

    await until(lambda: alerts(oms))
    oms.clock.advance(1)
    await oms.bus.drain()

    (alert,) = alerts(oms)
    assert alert.severity == ops_pb2.SEVERITY_CRITICAL and "at market has been working" in alert.text
    assert "mkt" in alert.text
