"""A small typed async Python client for a NeoPulse gRPC server (monolith or any split module).

Wraps the generated stubs; gRPC errors come back as shared.errors types (InvalidInput, NotFound, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from shared.contracts import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    market_pb2,
    notifier_pb2,
    notifier_pb2_grpc,
    oms_pb2,
    oms_pb2_grpc,
    risk_pb2,
    risk_pb2_grpc,
    strategy_pb2,
    strategy_pb2_grpc,
)
from shared.contracts import trading_pb2 as t
from shared.errors import OutcomeUnknown
from shared.grpc.auth import auth_metadata, channel_credentials
from shared.grpc.bridge import error_from_rpc
from shared.ids import new_client_order_id

__all__ = ["NeoPulseClient", "OutcomeUnknown", "new_client_order_id"]


class NeoPulseClient:
    """`async with NeoPulseClient("127.0.0.1:50051", token=...) as np: await np.list_orders()`."""

    def __init__(self, target: str, token: str | None = None, tls_ca: str | Path | None = None,
                 timeout_s: float = 10.0) -> None:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if tls_ca is not None:
            self.channel = grpc.aio.secure_channel(target, channel_credentials(Path(tls_ca)), options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options)
        self.metadata = auth_metadata(token)
        self.timeout_s = timeout_s
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self.channel)
        self.strategy = strategy_pb2_grpc.StrategyServiceStub(self.channel)
        self.risk = risk_pb2_grpc.RiskServiceStub(self.channel)
        self.orders = oms_pb2_grpc.OrderServiceStub(self.channel)
        self.notifier = notifier_pb2_grpc.NotifierServiceStub(self.channel)

    async def __aenter__(self) -> NeoPulseClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _unary(self, method: str, call: Any, request: Any, client_order_id: str = "") -> Any:
        try:
            return await call(request, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(method, err, client_order_id) from None

    async def _stream(self, method: str, call: Any, request: Any, field: str) -> AsyncIterator[Any]:
        rpc_call = call(request, metadata=self.metadata)
        try:
            async for batch in rpc_call:
                for item in getattr(batch, field):
                    yield item
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(method, err) from None
        finally:
            # A caller that stops reading (aclose, break) must end the RPC too: otherwise the server keeps queueing
            # for a stream nobody reads until the whole channel closes.
            rpc_call.cancel()

    # -- market data -----------------------------------------------------------------------------
    def stream_ticks(self, tokens: list[int] | None = None) -> AsyncIterator[market_pb2.Tick]:
        """Ticks as they arrive (all instruments, or only `tokens`)."""
        return self._stream("StreamTicks", self.ingestion.StreamTicks,
                            ingestion_pb2.StreamTicksRequest(tokens=tokens or []), "ticks")

    async def list_instruments(self) -> list[market_pb2.Instrument]:
        reply = await self._unary("ListInstruments", self.ingestion.ListInstruments,
                                  ingestion_pb2.ListInstrumentsRequest())
        return list(reply.instruments)

    # -- orders ----------------------------------------------------------------------------------
    async def place_order(self, instrument: market_pb2.Instrument, side: t.Side, quantity: int, *,
                          price_paise: int = 0, order_type: t.OrderType = t.ORDER_TYPE_LIMIT,
                          product: t.Product = t.PRODUCT_MIS, trigger_price_paise: int = 0,
                          client_order_id: str | None = None, strategy_tag: str = "MANUAL") -> t.OrderUpdate:
        """A manual order through risk; returns the order as the OMS booked it. Prices in paise.

        The order's client_order_id is `client_order_id`, or one minted once here. When the call ends without an
        answer (OutcomeUnknown: a timeout, the server stopping or crashing mid-call) the order may have been placed:
        look it up by `err.client_order_id`, and retry only with that id, which the OMS refuses as DUPLICATE_ORDER
        if the first call placed it."""
        cid = client_order_id or new_client_order_id()
        order = t.OrderRequest(
            client_order_id=cid, token=instrument.token,
            exchange_segment=instrument.exchange_segment, symbol=instrument.symbol, side=side, quantity=quantity,
            order_type=order_type, price_paise=price_paise, trigger_price_paise=trigger_price_paise,
            product=product, validity=t.VALIDITY_DAY, strategy_tag=strategy_tag)
        reply = await self._unary("PlaceOrder", self.orders.PlaceOrder, oms_pb2.PlaceOrderRequest(order=order), cid)
        return reply.order

    async def cancel_order(self, order_id: str) -> t.OrderUpdate:
        reply = await self._unary("CancelOrder", self.orders.CancelOrder, oms_pb2.CancelOrderRequest(order_id=order_id))
        return reply.order

    async def modify_order(self, order_id: str, *, quantity: int = 0, price_paise: int = 0,
                           trigger_price_paise: int = 0) -> t.OrderUpdate:
        """Change a working order (by internal or client id) at the broker, checked by risk first; 0 keeps a term,
        `quantity` is the new total, units already filled included. Returns the order after the broker's answer,
        its request carrying the new terms. Refused, the old terms hold: InvalidInput (naming the field), NotFound,
        RiskRejected / TradingHalted (risk's reason_code), BrokerRejected, OrderStateError (ended, or not changeable
        now: a request of ours still unanswered), NotSent. No answer (RetryableError,
        OutcomeUnknown): get_order shows which terms hold, and asking again for the same terms sends nothing twice."""
        request = oms_pb2.ModifyOrderRequest(order_id=order_id, quantity=quantity, price_paise=price_paise,
                                             trigger_price_paise=trigger_price_paise)
        return (await self._unary("ModifyOrder", self.orders.ModifyOrder, request)).order

    async def get_order(self, order_id: str) -> t.OrderUpdate:
        reply = await self._unary("GetOrder", self.orders.GetOrder, oms_pb2.GetOrderRequest(order_id=order_id))
        return reply.order

    async def list_orders(self, open_only: bool = False, strategy_tag: str = "", limit: int = 0) -> list[t.OrderUpdate]:
        reply = await self._unary("ListOrders", self.orders.ListOrders, oms_pb2.ListOrdersRequest(
            open_only=open_only, strategy_tag=strategy_tag, limit=limit))
        return list(reply.orders)

    async def list_positions(self) -> oms_pb2.ListPositionsResponse:
        return await self._unary("ListPositions", self.orders.ListPositions, oms_pb2.ListPositionsRequest())

    async def funds(self) -> oms_pb2.GetFundsResponse:
        """The account's funds: the broker's (live) or the paper account's."""
        return await self._unary("GetFunds", self.orders.GetFunds, oms_pb2.GetFundsRequest())

    def stream_order_updates(self, after_sequence: int = 0) -> AsyncIterator[t.OrderUpdate]:
        return self._stream("StreamOrderUpdates", self.orders.StreamOrderUpdates,
                            oms_pb2.StreamOrderUpdatesRequest(after_sequence=after_sequence), "updates")

    # -- risk --------------------------------------------------------------------------------------
    async def set_kill_switch(self, engaged: bool, reason: str = "", cancel_open_orders: bool = False) -> int:
        """Engage or release the kill switch; returns the TradingState."""
        reply = await self._unary("SetKillSwitch", self.risk.SetKillSwitch, risk_pb2.SetKillSwitchRequest(
            engaged=engaged, reason=reason, cancel_open_orders=cancel_open_orders))
        return int(reply.state)

    async def risk_state(self) -> risk_pb2.GetRiskStateResponse:
        return await self._unary("GetRiskState", self.risk.GetRiskState, risk_pb2.GetRiskStateRequest())

    # -- strategies and status -----------------------------------------------------------------------
    async def list_strategies(self) -> list[strategy_pb2.StrategyInfo]:
        reply = await self._unary("ListStrategies", self.strategy.ListStrategies, strategy_pb2.ListStrategiesRequest())
        return list(reply.strategies)

    async def pause_strategy(self, name: str, reason: str = "") -> strategy_pb2.StrategyInfo:
        """Pause a strategy; `reason` (why, or who asks) is listed with it until it is resumed."""
        request = strategy_pb2.PauseStrategyRequest(name=name, reason=reason)
        return (await self._unary("PauseStrategy", self.strategy.PauseStrategy, request)).strategy

    async def resume_strategy(self, name: str) -> strategy_pb2.StrategyInfo:
        request = strategy_pb2.ResumeStrategyRequest(name=name)
        return (await self._unary("ResumeStrategy", self.strategy.ResumeStrategy, request)).strategy

    async def quotes(self, symbols: list[str] | None = None) -> list[strategy_pb2.Quote]:
        """The latest tick of each symbol (an index's name too: "Nifty 50"); none: every instrument, indices first."""
        request = strategy_pb2.GetQuotesRequest(symbols=symbols or [])
        return list((await self._unary("GetQuotes", self.strategy.GetQuotes, request)).quotes)

    async def system_status(self) -> notifier_pb2.GetSystemStatusResponse:
        return await self._unary("GetSystemStatus", self.notifier.GetSystemStatus,
                                 notifier_pb2.GetSystemStatusRequest())
