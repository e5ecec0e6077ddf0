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
from services.oms.reconcile import net_by_key
from services.oms.states import name
from shared import rpc
from shared.bus import Bus
from shared.contracts import ingestion_pb2, oms_pb2, risk_pb2
from shared.contracts import trading_pb2 as t
from shared.db.protojson import message_dict
from shared.errors import (
    InvalidInput,
    NeoPulseError,
    NotFound,
    OrderStateError,
    OutcomeUnknown,
    RetryableError,
    RiskRejected,
)
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
        self._squaring = asyncio.Lock()  # one SquareOff at a time (see _square_off)

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
        """Close every open position (or the one symbol named) at market, as risk's own square-off does: its working
        orders (both sides; square-off orders excepted) cancelled and ended first, since a resting stop or target
        would keep the position open (risk counts it as closing and refuses the market order REDUCE_ONLY) and a
        resting entry could open it again; then market orders through risk for the whole net less what square-off
        orders already working close: one per position, or several where the exchange's freeze quantity caps one.
        A position not closed so (a cancel refused or not confirmed in time, an order refused) is named, with why,
        in an OrderStateError. Carried through even if the caller gives up (Telegram's 10 s, a gRPC deadline: in the
        monolith the handler runs in the caller's task): a square-off cut halfway leaves positions open."""
        return await self.bus.to_the_end(self._square_off(request.symbol.upper()), "oms:square-off")

    async def _square_off(self, wanted: str) -> oms_pb2.SquareOffResponse:
        """One at a time: a SquareOff asked again waits for the first's orders, then finds them working (idempotent).
        The positions go side by side, each closed as soon as its own working orders have ended."""
        async with self._squaring:
            held = [(pos.token, pos.product) for pos in list(self.engine.roll_day().positions.values())
                    if pos.net_quantity != 0 and (not wanted or pos.symbol.upper() == wanted)]
            if wanted and not held:
                raise NotFound(f"no open position in {wanted}; ListPositions shows what is open")
            if not held:
                return oms_pb2.SquareOffResponse()
            opposed = await self._opposed_to_broker(held)
            held = [key for key in held if key not in opposed]
            deadline = asyncio.get_running_loop().time() + SQUARE_OFF_WAIT_S
            parts = asyncio.get_running_loop().create_task(self._largest_parts(), name="oms:square-off:parts")
            try:
                outcomes = await asyncio.gather(*(self._square_off_position(key, parts, deadline) for key in held))
            finally:
                await asyncio.gather(parts, return_exceptions=True)  # its end: at most LIST_INSTRUMENTS_S
        placed = [u for orders, _ in outcomes for u in orders]
        left = [*opposed.items(), *((key, why) for key, (_, why) in zip(held, outcomes, strict=True) if why)]
        if left:
            raise OrderStateError(self._not_squared_off(left, placed))
        return oms_pb2.SquareOffResponse(orders=placed)

    async def _square_off_position(self, key: tuple[int, int], parts: asyncio.Task[dict[int, int]],
                                   deadline: float) -> tuple[list[t.OrderUpdate], str]:
        """The position's working orders ended, then market orders closing it: those placed, and "" or why the
        position is not closed (then nothing is sent while an order of its own still works)."""
        had_working = bool(self._working(key))
        why = await self._end_working(key, deadline)
        if why:
            return [], why
        if had_working:  # risk learns of the cancels from ORDER_UPDATES, after the book: let it take them first
            await asyncio.sleep(RISK_SETTLE_S)
        return await self._close(key, await parts, deadline)

    async def _end_working(self, key: tuple[int, int], deadline: float) -> str:
        """Cancel the position's working orders other than square-off ones and wait until they have ended: "", or
        why not by the deadline. A cancel that could not go yet (the order still being placed) or got no answer is
        asked again; one the broker refused (or that was not sent) is not: the position is named instead."""
        loop = asyncio.get_running_loop()
        tasks: dict[str, asyncio.Task[BaseException | None]] = {}
        while working := self._working(key):
            for u in working:
                task = tasks.get(u.internal_id)
                if task is None or (task.done() and not task.cancelled()
                                    and isinstance(task.result(), (OrderStateError, RetryableError))):
                    tasks[u.internal_id] = loop.create_task(self._cancel(u.internal_id), name="oms:square-off:cancel")
                    self.bus.track(tasks[u.internal_id])
            left = deadline - loop.time()
            if left <= 0:
                return "; ".join(_cancel_outcome(u, tasks.get(u.internal_id)) for u in working)
            await self._book_changed(min(left, RECANCEL_S))
        return ""

    async def _cancel(self, internal_id: str) -> BaseException | None:
        """Cancel one order for a square-off: None, or what the cancel raised (it ends as the caller looks on)."""
        try:
            await self.engine.cancel(internal_id)
        except Exception as exc:
            log.warning("square-off: a working order not cancelled: %s", exc, extra={"order_id": internal_id})
            return exc
        return None

    async def _book_changed(self, within_s: float) -> None:
        """Until an order's state changes, or `within_s` (a cancel refused without a change)."""
        try:
            async with self.engine.changed, asyncio.timeout(within_s):
                await self.engine.changed.wait()
        except TimeoutError:
            pass

    async def _close(self, key: tuple[int, int], parts_of: dict[int, int],
                     deadline: float) -> tuple[list[t.OrderUpdate], str]:
        """Market orders for the net position less what working square-off orders close: those placed, and "" or why
        the position is not all closed. Refused REDUCE_ONLY is asked again until the deadline: risk may not have
        applied the cancels yet, or a square-off order it accepted (its own, at square-off time) may not be in the
        book yet; each time from the book as it then is, so nothing is closed twice."""
        placed: list[t.OrderUpdate] = []
        pause = RISK_SETTLE_S  # doubling: each refusal is published (and told on Telegram) as a rejection
        while True:
            pos = self.engine.roll_day().positions.get(key)
            if pos is None or pos.net_quantity == 0:
                return placed, ""
            side = exit_side(pos.net_quantity)
            quantity = abs(pos.net_quantity) - self._closing(key, side)
            if quantity <= 0:
                return placed, ""
            orders = [t.OrderRequest(
                client_order_id=f"{SQUAREOFF_TAG}-{pos.token}-{uuid.uuid4().hex[:12]}", token=pos.token,
                exchange_segment=pos.exchange_segment, symbol=pos.symbol, side=side, quantity=part,
                order_type=t.ORDER_TYPE_MARKET, product=cast("t.Product", pos.product), validity=t.VALIDITY_DAY,
                strategy_tag=SQUAREOFF_TAG, reason="square-off asked for (SquareOff)")
                for part in chunks(quantity, parts_of.get(pos.token, 0))]
            results = await asyncio.gather(*(self._submit(order) for order in orders), return_exceptions=True)
            placed += [r for r in results if isinstance(r, t.OrderUpdate) and r.status != t.ORDER_STATUS_REJECTED]
            refused = [r for r in results if isinstance(r, t.OrderUpdate) and r.status == t.ORDER_STATUS_REJECTED]
            if refused:  # by the broker (its RMS, a circuit limit, a freeze) or not sent: the position stays open
                return placed, (f"{len(refused)} of {len(orders)} market order(s) refused: "
                                f"{refused[0].reason or name(refused[0].status)}")
            failed = [r for r in results if isinstance(r, BaseException)]
            for order, result in zip(orders, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("square-off order not placed: %s", result, extra={"token": order.token,
                                                                                  "order_id": order.client_order_id})
            if not failed:
                return placed, ""
            lagging = all(isinstance(r, RiskRejected) and r.reason_code == "REDUCE_ONLY" for r in failed)
            if not lagging or asyncio.get_running_loop().time() + pause > deadline:
                return placed, f"{len(failed)} of {len(orders)} market order(s) not placed: {failed[0]}"
            await asyncio.sleep(pause)
            pause *= 2

    async def _opposed_to_broker(self, held: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The positions whose net in the book is on the other side of the broker's, with why: closing the book's
        would grow the real one (a carried long partly sold today, rebuilt after a restart as a short: the market
        order would buy). A live broker's positions only, read briefly; unread, nothing is held back (an exit must
        not wait on it), and the position check's alert stands."""
        if self.engine.broker.in_process:
            return {}
        try:
            async with asyncio.timeout(BROKER_POSITIONS_S):
                rows = await self.engine.broker.positions()
        except Exception as exc:
            log.warning("square-off: broker positions not read; the book's are closed", extra={"error": str(exc)})
            return {}
        theirs = net_by_key(rows)
        book = self.engine.roll_day().positions
        ours = {key: book[key].net_quantity for key in held if key in book}
        return {key: (f"NeoPulse holds {net:+d}, {self.engine.broker.name.capitalize()} {theirs[key]:+d}: closing "
                      "NeoPulse's would grow the real position; close it by hand")
                for key, net in ours.items() if net * theirs.get(key, 0) < 0}

    def _not_squared_off(self, left: list[tuple[tuple[int, int], str]], placed: list[t.OrderUpdate]) -> str:
        """The error naming each position left open, with why, and what went out for the others."""
        names = []
        for (token, product), why in left:
            pos = self.engine.roll_day().positions.get((token, product))
            symbol = (pos.symbol if pos is not None else "") or token
            names.append(f"{symbol} {t.Product.Name(product).removeprefix('PRODUCT_')} ({why})")
        sent = f"; {len(placed)} square-off order(s) sent for the rest" if placed else ""
        return (f"NOT squared off: {'; '.join(names)}{sent}. Check the orders and positions, then square off "
                "again or close it by hand")

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

    def _working(self, key: tuple[int, int]) -> list[t.OrderUpdate]:
        """The position's working orders, either side, other than square-off ones: what a square-off cancels."""
        return [u for u in self.engine.open_orders() if (u.request.token, u.request.product or t.PRODUCT_MIS) == key
                and u.request.strategy_tag != SQUAREOFF_TAG]

    def _closing(self, key: tuple[int, int], side: int) -> int:
        """Units still to fill in the position's working square-off orders (this one's, an earlier one's, risk's)."""
        return sum(u.request.quantity - u.filled_quantity for u in self.engine.open_orders()
                   if (u.request.token, u.request.product or t.PRODUCT_MIS) == key and u.request.side == side
                   and u.request.strategy_tag == SQUAREOFF_TAG)


LIST_INSTRUMENTS_S = 0.5  # SquareOff's wait for the freeze quantities, then the last list known
BROKER_POSITIONS_S = 1.0  # SquareOff's wait for the broker's positions (a side check), then none
# How long a SquareOff waits for a position's working orders to end (and risk to see it) before naming it as not
# squared off: a few seconds, well inside Telegram's 10 s request timeout.
SQUARE_OFF_WAIT_S = 3.0
RECANCEL_S = 0.2  # SquareOff's longest wait before looking again at working orders (a cancel that could not go yet)
RISK_SETTLE_S = 0.05  # SquareOff's pause for risk to apply cancels before (and between) its market orders


def _cancel_outcome(u: t.OrderUpdate, task: asyncio.Task[BaseException | None] | None) -> str:
    """Why one of a position's working orders has not ended: its cancel's error, or no confirmation in time."""
    error = task.result() if task is not None and task.done() and not task.cancelled() else None
    if error is not None:
        return f"cancel of order {u.client_order_id} refused: {error}"
    return (f"order {u.client_order_id} still {name(u.status)}: cancel not confirmed within "
            f"{SQUARE_OFF_WAIT_S:g} s")


def _jsonable(value: object) -> object:
    """An audit value JSON cannot take as it is: a protobuf message (a risk decision kept in memory) as its JSON
    form, anything else as its text."""
    return message_dict(value) if isinstance(value, Message) else str(value)
