"""The one broker interface the OMS talks to: KotakBroker, VirtualBroker and the simulator client.

Nothing above the OMS knows which broker runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from shared.contracts import market_pb2, oms_pb2, trading_pb2


@dataclass
class BrokerAck:
    """The broker's answer to place/modify/cancel."""

    exchange_order_id: str
    status: int  # trading_pb2.OrderStatus
    reason: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    reason_code: str = ""  # a REJECTED one's, when not BROKER_REJECTED (the OMS's own: NOT_SENT)


# An event's reason starts so when the broker refused a change after acknowledging it (Kotak's RMS does): the row
# shows the terms the order works on, which the OMS takes at once, not as a snapshot from before the change.
CHANGE_REFUSED = "change refused: "


@dataclass
class BrokerOrderEvent:
    """An order's state as the broker reports it (order feed, order book, virtual fill).

    filled_quantity, average_price_paise and charges_paise are cumulative for the order; the OMS
    derives each fill as the difference from what it has applied (a repeated event is a no-op).
    A broker that knows the fill itself may add raw["last_fill_quantity"], raw["last_fill_price_paise"]
    and raw["last_fill_charges_paise"] (the VirtualBroker does); the OMS prefers them when they agree.
    quantity, price_paise and trigger_price_paise are the order's terms as the broker holds them now (0: not
    reported); the OMS takes them where they differ from its own (a change made elsewhere, or its answer lost).
    """

    exchange_order_id: str
    client_order_id: str
    status: int  # trading_pb2.OrderStatus
    filled_quantity: int = 0
    average_price_paise: int = 0
    reason: str = ""
    charges_paise: int = 0
    ts_ns: int = 0
    raw: dict[str, Any] = field(default_factory=dict)
    quantity: int = 0
    price_paise: int = 0
    trigger_price_paise: int = 0


def order_age_s(order: trading_pb2.OrderRequest) -> float:
    """Seconds since the tick the order's signal came from arrived (wall clock, as the tick was stamped); 0 for
    an order with no tick behind it (manual, square-off). [oms] max_decision_age_s caps it."""
    return (time.time_ns() - order.tick_recv_ns) / 1e9 if order.tick_recv_ns else 0.0


def decision_age_s(decision: trading_pb2.RiskDecision) -> float:
    """Seconds since the tick its order's signal came from arrived, or, for an order with none behind it (manual,
    square-off), since risk decided it (both on the wall clock); 0 when neither is known (a decision of an older
    risk). [oms] max_decision_age_s caps it: in split mode a restarted OMS is handed again what risk decided while
    it was away, a manual order the trader was told was not sent among them."""
    since = decision.order.tick_recv_ns or decision.decided_wall_ns
    return (time.time_ns() - since) / 1e9 if since else 0.0


@runtime_checkable
class Broker(Protocol):
    name: str
    # True when place_order answers without I/O (the paper VirtualBroker): the OMS places inline, in
    # decision order. False (a REST broker): each placement runs as its own task beside the next decisions.
    in_process: bool
    # True when events carry each fill's charges (the VirtualBroker computes them). False (Kotak reports them
    # only on the contract note): the OMS estimates them with the [oms] charge rates.
    reports_charges: bool

    async def start(self) -> None:
        """Log in / connect. Raises ConfigError for bad credentials."""

    async def stop(self) -> None: ...

    async def place_order(self, order: trading_pb2.OrderRequest) -> BrokerAck:
        """Place once. order.client_order_id is sent as the broker tag.

        Raises BrokerRejected (refused), NotSent (certainly not placed, e.g. gone stale while the session was
        renewed), RetryableError (outcome unknown: the caller must look the tag up with find_by_tag before any
        retry).
        """

    async def modify_order(self, exchange_order_id: str, *, quantity: int | None = None,
                           price_paise: int | None = None, trigger_price_paise: int | None = None) -> BrokerAck: ...

    async def cancel_order(self, exchange_order_id: str) -> BrokerAck: ...

    async def order_book(self) -> list[BrokerOrderEvent]:
        """Every order of the day as the broker sees it (for reconciliation)."""

    async def find_by_tag(self, client_order_id: str) -> BrokerOrderEvent | None:
        """The order placed with this tag, if the broker has it."""

    async def positions(self) -> list[trading_pb2.Position]: ...

    async def limits(self) -> dict[str, Any]: ...

    async def funds(self) -> oms_pb2.GetFundsResponse:
        """What the account has to trade with (OrderService/GetFunds)."""

    def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Order state changes pushed by the broker (order feed, virtual fills), forever."""
        ...

    async def on_candle(self, candle: market_pb2.Candle) -> None:
        """A closed 1-minute candle (VirtualBroker fills from it; live brokers ignore it)."""

    async def on_ticks(self, batch: market_pb2.TickBatch) -> None:
        """Last prices (VirtualBroker market orders); live brokers ignore it."""


@runtime_checkable
class HoldsDelivery(Protocol):
    """A broker over a real account with delivery holdings (KotakBroker); not part of Broker: most have none."""

    async def holdings(self) -> list[trading_pb2.Position]:
        """Settled delivery holdings as CNC positions: long, last price the previous close. Shares bought today
        are in positions() until settlement."""
        ...


async def holdings_of(broker: Broker) -> list[trading_pb2.Position]:
    """The account's settled delivery holdings; none for a broker without such an account, and none for an
    in-process one (the paper VirtualBroker: its book is its own, the real account's holdings are not its)."""
    if broker.in_process or not isinstance(broker, HoldsDelivery):
        return []
    return await broker.holdings()
