"""OrderService's unary requests on the bus: place (through risk), cancel, modify (checked by risk), get, list,
positions, square-off.

Transport-free: the gRPC layer maps the shared.errors raised here; the OrderEngine does the work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import cast

from google.protobuf.message import Message

from services.oms.config import OmsSettings
from services.oms.engine import OrderEngine
from services.oms.states import name
from shared import rpc
from shared.bus import Bus
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.db.protojson import message_dict
from shared.errors import InvalidInput, NeoPulseError, NotFound, OutcomeUnknown, RiskRejected
from shared.ids import MAX_REASON_CHARS
from shared.order_terms import PRICED, STOPS, unknown_choice
from shared.positions import SQUAREOFF_TAG, chunks, exit_side, whole_lots

log = logging.getLogger(__name__)



def validated(order: t.OrderRequest) -> t.OrderRequest:
    """A copy with defaults filled in; raises InvalidInput naming the first bad field."""
    if order.token <= 0:
        raise InvalidInput("order.token", "must be a positive instrument token; find it with ListInstruments")
    if order.side not in (t.SIDE_BUY, t.SIDE_SELL):
        raise InvalidInput("order.side", "must be SIDE_BUY or SIDE_SELL")
    if order.quantity <= 0:
        raise InvalidInput("order.quantity", "must be a positive number of units (a multiple of the lot size)")
    if order.order_type == t.ORDER_TYPE_UNSPECIFIED:
        raise InvalidInput("order.order_type", "set MARKET, LIMIT, STOP_LIMIT or STOP_MARKET")
    if order.price_paise < 0 or (order.order_type in PRICED and order.price_paise == 0):
        raise InvalidInput("order.price_paise", "a limit price in paise above 0 is required for LIMIT and STOP_LIMIT")
    if order.trigger_price_paise < 0 or (order.order_type in STOPS and order.trigger_price_paise == 0):
        raise InvalidInput("order.trigger_price_paise", "a trigger price in paise above 0 is required for stops")
    unknown = unknown_choice(order)
    if unknown is not None:
        raise InvalidInput(f"order.{unknown[0]}", unknown[1])
    for field in ("client_order_id", "strategy_tag"):
        if any(ord(c) < 32 for c in getattr(order, field)):
            raise InvalidInput(f"order.{field}", "holds a control character (a NUL, a line break); use printable text")
    if len(order.reason) > MAX_REASON_CHARS:
        raise InvalidInput("order.reason", f"is longer than {MAX_REASON_CHARS} characters; say why in fewer words")
    out = t.OrderRequest()
    out.CopyFrom(order)
    out.client_order_id = out.client_order_id or f"manual-{uuid.uuid4().hex[:20]}"
    out.product = out.product or t.PRODUCT_MIS
    out.validity = out.validity or t.VALIDITY_DAY
    out.strategy_tag = out.strategy_tag or "MANUAL"
    return out


class OrderService:
    def __init__(self, bus: Bus, settings: OmsSettings, engine: OrderEngine) -> None:
        self.bus = bus
        self.settings = settings
        self.engine = engine
        self._parts_known: dict[int, int] = {}  # token -> largest order (freeze quantity), from the last list

    def register(self) -> None:
        self.bus.handle(rpc.PLACE_ORDER, self.place_order)
        self.bus.handle(rpc.CANCEL_ORDER, self.cancel_order)
        self.bus.handle(rpc.MODIFY_ORDER, self.modify_order)
        self.bus.handle(rpc.GET_ORDER, self.get_order)
        self.bus.handle(rpc.GET_ORDER_HISTORY, self.get_order_history)
        self.bus.handle(rpc.LIST_ORDERS, self.list_orders)
        self.bus.handle(rpc.LIST_POSITIONS, self.list_positions)
        self.bus.handle(rpc.SQUARE_OFF, self.square_off)
        self.bus.handle(rpc.GET_FUNDS, self.get_funds)

    async def place_order(self, request: oms_pb2.PlaceOrderRequest) -> oms_pb2.PlaceOrderResponse:
        if not request.HasField("order"):
            raise InvalidInput("order", "is required")
        cid = request.order.client_order_id
        existing = (self.engine.lookup(cid) or await self.engine.ledger.get(cid)) if cid else None
        if existing is not None:
            # Risk knows the ids of the orders it accepted lately, not every order ever (one reused days later
            # would be accepted, ignored here as a duplicate and counted by risk as open for good).
            raise RiskRejected("DUPLICATE_ORDER", f"client_order_id {cid} is order {existing.internal_id} "
                               f"({name(existing.status)}); a client_order_id places one order, ever: use a new one")
        return oms_pb2.PlaceOrderResponse(order=await self._submit(validated(request.order)))

    async def _submit(self, order: t.OrderRequest) -> t.OrderUpdate:
        """Through risk (which publishes the accepted decision on ORDERS), then wait for our book."""
        reply = await self.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order))
        decision = reply.decision
        if not decision.accepted:
            raise RiskRejected(decision.reason_code, decision.reason or "rejected by risk")
        client_order_id = decision.order.client_order_id or order.client_order_id
        update = await self.engine.wait_placed(client_order_id, self.settings.place_order_wait_s)
        if update is None:  # it may still be placed: its decision is on its way
            raise OutcomeUnknown(f"order {client_order_id} was accepted by risk but has not reached the OMS yet; "
                                 f"look it up with GetOrder {client_order_id} before trying again, and retry only "
                                 "with the same client_order_id", client_order_id)
        return update

    async def cancel_order(self, request: oms_pb2.CancelOrderRequest) -> oms_pb2.CancelOrderResponse:
        if not request.order_id:
            raise InvalidInput("order_id", "give the internal_id or client_order_id of the order")
        return oms_pb2.CancelOrderResponse(order=await self.engine.cancel(request.order_id))

    async def modify_order(self, request: oms_pb2.ModifyOrderRequest) -> oms_pb2.ModifyOrderResponse:
        if not request.order_id:
            raise InvalidInput("order_id", "give the internal_id or client_order_id of the order")
        change = (request.quantity, request.price_paise, request.trigger_price_paise)
        return oms_pb2.ModifyOrderResponse(order=await self.engine.modify(request.order_id, change, self._check_change,
                                                                          request.strategy_tag))

    async def _check_change(self, order: t.OrderRequest, filled: int) -> None:
        """Risk's word on an order with its new terms (RiskRejected, TradingHalted or InvalidInput when it says no)."""
        await self.bus.call(rpc.CHECK_MODIFY, risk_pb2.CheckModifyRequest(order=order, filled_quantity=filled))

    async def get_order(self, request: oms_pb2.GetOrderRequest) -> oms_pb2.GetOrderResponse:
        return oms_pb2.GetOrderResponse(order=await self._order(request.order_id))

    async def _order(self, order_id: str) -> t.OrderUpdate:
        """By internal, client or exchange id: this run's book, else the ledger (an order of an earlier day)."""
        if not order_id:
            raise InvalidInput("order_id", "give the internal_id or client_order_id of the order")
        order = self.engine.lookup(order_id) or await self.engine.ledger.get(order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}; list orders to find its internal or client id")
        return order

    async def get_order_history(self, request: oms_pb2.GetOrderHistoryRequest) -> oms_pb2.GetOrderHistoryResponse:
        order = await self._order(request.order_id)
        history = await self.engine.ledger.history(order.internal_id)
        return oms_pb2.GetOrderHistoryResponse(entries=[oms_pb2.OrderHistoryEntry(
            update=update, audit_json=json.dumps(audit, default=_jsonable, ensure_ascii=False))
            for update, audit in history])

    async def list_orders(self, request: oms_pb2.ListOrdersRequest) -> oms_pb2.ListOrdersResponse:
        if request.limit < 0:
            raise InvalidInput("limit", "must be 0 (default 100) or positive")
        orders = await self.engine.ledger.list_orders(open_only=request.open_only, strategy_tag=request.strategy_tag,
                                                      limit=request.limit or 100)
        return oms_pb2.ListOrdersResponse(orders=orders)

    async def list_positions(self, request: oms_pb2.ListPositionsRequest) -> oms_pb2.ListPositionsResponse:
        book = self.engine.roll_day()
        return oms_pb2.ListPositionsResponse(
            positions=book.to_protos(), realised_pnl_paise=book.realised_pnl_paise(),
            unrealised_pnl_paise=book.unrealised_pnl_paise(), charges_paise=book.charges_paise(),
            as_of_sequence=self.engine.applied_sequence)

    async def get_funds(self, request: oms_pb2.GetFundsRequest) -> oms_pb2.GetFundsResponse:
        return await self.engine.broker.funds()

    async def square_off(self, request: oms_pb2.SquareOffRequest) -> oms_pb2.SquareOffResponse:
        """Market orders against every open position (or the one symbol named), through risk, for what working exit
        orders do not already cover: one per position, or several where the exchange's freeze quantity caps one. All
        are sent together and carried through even if the caller gives up (Telegram's 10 s, a gRPC deadline: in the
        monolith the handler runs in the caller's task): a square-off cut halfway leaves positions open."""
        task = asyncio.get_running_loop().create_task(self._square_off(request.symbol.upper()), name="oms:square-off")
        self.bus.track(task)
        return await asyncio.shield(task)

    async def _square_off(self, wanted: str) -> oms_pb2.SquareOffResponse:
        orders, covered = [], False
        parts_of: dict[int, int] | None = None
        for pos in list(self.engine.roll_day().positions.values()):
            if pos.net_quantity == 0 or (wanted and pos.symbol.upper() != wanted):
                continue
            side = exit_side(pos.net_quantity)
            quantity = abs(pos.net_quantity) - self._working_quantity(pos.token, pos.product, side)
            if quantity <= 0:
                covered = True
                continue
            if parts_of is None:
                parts_of = await self._largest_parts()
            orders += [t.OrderRequest(
                client_order_id=f"{SQUAREOFF_TAG}-{pos.token}-{uuid.uuid4().hex[:12]}", token=pos.token,
                exchange_segment=pos.exchange_segment, symbol=pos.symbol, side=side, quantity=part,
                order_type=t.ORDER_TYPE_MARKET, product=cast("t.Product", pos.product), validity=t.VALIDITY_DAY,
                strategy_tag=SQUAREOFF_TAG, reason="square-off asked for (SquareOff)")
                for part in chunks(quantity, parts_of.get(pos.token, 0))]
        results = await asyncio.gather(*(self._submit(order) for order in orders), return_exceptions=True)
        placed = [r for r in results if isinstance(r, t.OrderUpdate)]
        failed = [r for r in results if isinstance(r, BaseException)]
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("square-off order not placed: %s", result, extra={"token": order.token,
                                                                              "order_id": order.client_order_id})
        if failed and not placed:  # else the reply lists what went out; the log says what did not
            raise failed[0]
        if wanted and not placed and not covered:
            raise NotFound(f"no open position in {wanted}; ListPositions shows what is open")
        return oms_pb2.SquareOffResponse(orders=placed)

    async def _largest_parts(self) -> dict[int, int]:
        """Token -> the largest order the exchange takes (its freeze quantity, in whole lots); none known: {} (one
        order a position, which risk refuses above a freeze quantity it knows)."""
        try:  # briefly: exits must not wait on a slow ingestion process (split mode's proxy waits 10 s)
            async with asyncio.timeout(LIST_INSTRUMENTS_S):
                reply = await self.bus.call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())
        except (NeoPulseError, TimeoutError) as exc:
            log.warning("instruments not listed in time; square-off orders split by the last list known", extra={
                "error": str(exc) or type(exc).__name__, "known": len(self._parts_known)})
            return self._parts_known
        self._parts_known = {i.token: whole_lots(i.freeze_quantity, i.lot_size or 1)
                             for i in reply.instruments if i.freeze_quantity}
        return self._parts_known

    def _working_quantity(self, token: int, product: int, side: int) -> int:
        """Units still to fill in open orders on this side of the token and product (exits under way)."""
        return sum(u.request.quantity - u.filled_quantity for u in self.engine.open_orders()
                   if u.request.token == token and u.request.side == side
                   and (u.request.product or t.PRODUCT_MIS) == product)


LIST_INSTRUMENTS_S = 0.5  # SquareOff's wait for the freeze quantities, then the last list known


def _jsonable(value: object) -> object:
    """An audit value JSON cannot take as it is: a protobuf message (a risk decision kept in memory) as its JSON
    form, anything else as its text."""
    return message_dict(value) if isinstance(value, Message) else str(value)
