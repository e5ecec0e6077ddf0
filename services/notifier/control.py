"""What a user can ask of the running system (status, positions, orders, P&L, pause, kill switch, square-off).

Transport-free, like freqtrade's rpc.py: talks only through bus requests and publishes Commands for audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from services.notifier.messages import cut
from services.notifier.summary import DailySummary, summarise
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import Clock, day_of
from shared.contracts import ingestion_pb2, oms_pb2, ops_pb2, risk_pb2, strategy_pb2, trading_pb2
from shared.errors import InvalidInput, NeoPulseError, NotFound, OutcomeUnknown, RetryableError
from shared.ids import new_client_order_id

log = logging.getLogger(__name__)

TERMINAL = {trading_pb2.ORDER_STATUS_TRADED, trading_pb2.ORDER_STATUS_REJECTED, trading_pb2.ORDER_STATUS_CANCELLED}
SUMMARY_ORDER_LIMIT = 5000
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # OrderUpdate.reason_code of an order the OMS gave up without the broker's answer
REASON_CHARS = 200  # risk keeps a kill switch reason as given and quotes it in every /status and /limits
# Calls that change something -> where to look when one does not answer in time: the module may finish the change
# after we stop waiting (or have done it already), so "try again" could repeat it.
CHECK_AFTER_TIMEOUT = {rpc.SET_KILL_SWITCH: "/status", rpc.SQUARE_OFF: "/positions and /orders",
                       rpc.PAUSE_STRATEGY: "/strategies", rpc.RESUME_STRATEGY: "/strategies",
                       rpc.CANCEL_ORDER: "/orders", rpc.MODIFY_ORDER: "/orders", rpc.PLACE_ORDER: "/orders"}


@dataclass
class SystemStatus:
    mode: str
    uptime_seconds: int
    feed: ingestion_pb2.GetFeedStatusResponse | None = None
    risk: risk_pb2.GetRiskStateResponse | None = None
    strategies: list[strategy_pb2.StrategyInfo] = field(default_factory=list)
    indices: list[strategy_pb2.Quote] = field(default_factory=list)  # the indices followed, as quoted now
    # part -> short reason, for the parts that did not answer (module down, not in this process)
    unavailable: dict[str, str] = field(default_factory=dict)


class Control:
    """One method per user action; each raises shared.errors types the skins turn into short replies."""

    def __init__(self, bus: Bus, clock: Clock, mode: str, timeout_seconds: float = 10.0) -> None:
        self.bus = bus
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.mode = mode
        self._started = time.monotonic()

    async def _call(self, method: str, request: Any, client_order_id: str = "") -> Any:
        """A bus request with a deadline, so a stuck module cannot hang the bot; a change that times out is
        reported as possibly in progress, with where to check, never as "try again" (an order's placement as
        OutcomeUnknown naming `client_order_id`, the id to look it up by and to retry with)."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self.bus.call(method, request)
        except TimeoutError:
            late = f"{method.rsplit('.', 1)[-1]} did not answer within {self.timeout_seconds:g} s"
            where = CHECK_AFTER_TIMEOUT.get(method)
            if where is None:
                raise RetryableError(f"{late}; try again") from None
            if client_order_id:
                raise OutcomeUnknown(f"{late}; it may still be in progress, or done: check {where} for order "
                                     f"{client_order_id} before asking again, and retry only with that id",
                                     client_order_id) from None
            raise RetryableError(f"{late}; it may still be in progress, or done: check {where} before "
                                 "asking again") from None

    @property
    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self._started)

    async def status(self) -> SystemStatus:
        """Every part that answers; a missing module is reported, not raised."""
        status = SystemStatus(mode=self.mode, uptime_seconds=self.uptime_seconds)

        # Asked together: a part that hangs costs one timeout, not one per part (and /kill waits behind it).
        async def part(name: str, answer: Awaitable[Any]) -> Any:
            try:
                return await answer
            except NeoPulseError as exc:
                status.unavailable[name] = str(exc)
                return None

        async def indices() -> list[strategy_pb2.Quote]:
            try:
                return [q for q in await self.quotes([]) if q.instrument.is_index]
            except NeoPulseError:
                return []  # the strategy module's: said once, as "strategies"

        answers: tuple[Any, ...] = await asyncio.gather(
            part("feed", self._call(rpc.GET_FEED_STATUS, ingestion_pb2.GetFeedStatusRequest())),
            part("risk", self._call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())),
            part("strategies", self.strategies()), indices())
        status.feed, status.risk, status.strategies, status.indices = (answers[0], answers[1], answers[2] or [],
                                                                       answers[3])
        return status

    async def positions(self) -> oms_pb2.ListPositionsResponse:
        return await self._call(rpc.LIST_POSITIONS, oms_pb2.ListPositionsRequest())

    async def funds(self) -> oms_pb2.GetFundsResponse:
        return await self._call(rpc.GET_FUNDS, oms_pb2.GetFundsRequest())

    async def orders(self, which: str = "open", limit: int = 20) -> list[trading_pb2.OrderUpdate]:
        """Open orders, or today's (IST) orders, newest first; at most `limit`."""
        return (await self.orders_and_more(which, limit))[0]

    async def orders_and_more(self, which: str = "open", limit: int = 20) -> tuple[list[trading_pb2.OrderUpdate], int]:
        """The newest `limit` open orders (led by today's whose outcome is unknown: they may be live at the broker), or
        today's (placed on today's IST date), and how many more (older) there are: a trader checking what is live must
        not take the first `limit` for all of them."""
        if which not in ("open", "today"):
            raise InvalidInput("orders", f"unknown filter {which!r}; use open or today")
        today = day_of(self.clock.now_ns())
        given_up = await self._given_up_today(today) if which == "open" else []
        resp = await self._call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(open_only=which == "open",
                                                                           limit=max(limit, SUMMARY_ORDER_LIMIT)))
        orders = list(resp.orders)
        if which == "today":
            earlier = await self._placed_earlier(orders, today)
            orders = [o for o in orders if day_of(o.ts_ns) == today and o.internal_id not in earlier]
        listed = {o.internal_id for o in orders}  # one adopted since (open again) is listed once, as it is now
        orders = [o for o in given_up if o.internal_id not in listed] + orders
        return orders[:limit], max(0, len(orders) - limit)

    async def _given_up_today(self, today: date) -> list[trading_pb2.OrderUpdate]:
        """Today's orders the OMS gave up without the broker's answer (REJECTED, OUTCOME_UNKNOWN), newest first: not
        open to the OMS, but they may be live at the broker, and the CRITICAL alert sends the trader to check them.
        They lead the open list (with replies' "outcome unknown" warning): its limit cuts older open orders first."""
        resp = await self._call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(limit=SUMMARY_ORDER_LIMIT))
        return [o for o in resp.orders if o.status == trading_pb2.ORDER_STATUS_REJECTED
                and o.reason_code == OUTCOME_UNKNOWN and day_of(o.ts_ns) == today]

    async def _placed_earlier(self, orders: list[trading_pb2.OrderUpdate], day: date) -> dict[str, int]:
        """internal_id -> when it was placed (its history's first entry, the write-ahead), of the listed orders last
        updated on `day` or later but placed before it: a DAY order still working at its day's close is settled when
        the next day starts (the OMS's day roll, its start-up check, the paper broker's expiry at the next day's first
        tick), yet it traded, and was placed, on its own day. ListOrders lists orders newest placed first (the ledger
        orders them by creation): every order after the first one last updated before `day` was placed before it too;
        of those ahead of it, the settled ones are the last, read back to the first placed on `day`."""
        ahead: list[trading_pb2.OrderUpdate] = []
        earlier: dict[str, int] = {}
        past_an_older = False
        for order in orders:
            if day_of(order.ts_ns) < day:
                past_an_older = True
            elif past_an_older:  # placed before an order last updated before `day`: before `day` too
                earlier[order.internal_id] = await self._placed_at(order)
            else:
                ahead.append(order)
        for order in reversed(ahead):
            placed = await self._placed_at(order)
            if day_of(placed) >= day:
                break
            earlier[order.internal_id] = placed
        return earlier

    async def _placed_at(self, order: trading_pb2.OrderUpdate) -> int:
        history = await self.history(order.internal_id)
        return history[0].update.ts_ns if history else order.ts_ns

    async def order(self, order_id: str) -> trading_pb2.OrderUpdate:
        """One order by its client, internal or exchange id."""
        return (await self._call(rpc.GET_ORDER, oms_pb2.GetOrderRequest(order_id=order_id))).order

    async def history(self, order_id: str) -> list[oms_pb2.OrderHistoryEntry]:
        """Every transition recorded for one order (by its client, internal or exchange id), oldest first."""
        request = oms_pb2.GetOrderHistoryRequest(order_id=order_id)
        return list((await self._call(rpc.GET_ORDER_HISTORY, request)).entries)

    async def cancel(self, order_id: str) -> trading_pb2.OrderUpdate:
        """Cancel one order at the broker; the order as the OMS has it then (CANCEL_PENDING, or CANCELLED)."""
        return (await self._call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=order_id))).order

    async def modify(self, order_id: str, quantity: int = 0, price_paise: int = 0,
                     trigger_price_paise: int = 0) -> trading_pb2.OrderUpdate:
        """Change a working order's terms at the broker, checked by risk first; 0 keeps a term, `quantity` is the new
        total (filled units included). The order as the OMS has it then: its new terms, or as it was when it had
        them already (asking again for the same terms sends nothing twice)."""
        request = oms_pb2.ModifyOrderRequest(order_id=order_id, quantity=quantity, price_paise=price_paise,
                                             trigger_price_paise=trigger_price_paise)
        return (await self._call(rpc.MODIFY_ORDER, request)).order

    async def strategies(self) -> list[strategy_pb2.StrategyInfo]:
        resp = await self._call(rpc.LIST_STRATEGIES, strategy_pb2.ListStrategiesRequest())
        return list(resp.strategies)

    async def pause(self, name: str, reason: str = "") -> strategy_pb2.StrategyInfo:
        """Pause a strategy; `reason` (why, or who asked) is what /strategies shows for it."""
        request = strategy_pb2.PauseStrategyRequest(name=_named(name), reason=cut(reason, REASON_CHARS))
        resp = await self._call(rpc.PAUSE_STRATEGY, request)
        return resp.strategy

    async def resume(self, name: str) -> strategy_pb2.StrategyInfo:
        resp = await self._call(rpc.RESUME_STRATEGY, strategy_pb2.ResumeStrategyRequest(name=_named(name)))
        return resp.strategy

    async def quotes(self, symbols: list[str]) -> list[strategy_pb2.Quote]:
        """The latest tick of each symbol (every instrument, the indices first, for none); NotFound names one
        unknown."""
        resp = await self._call(rpc.GET_QUOTES, strategy_pb2.GetQuotesRequest(symbols=symbols))
        return list(resp.quotes)

    async def strategy(self, name: str) -> strategy_pb2.StrategyInfo:
        """One strategy by name (NotFound lists the configured ones)."""
        strategies = await self.strategies()
        found = next((s for s in strategies if s.name == name), None)
        if found is None:
            raise NotFound(f"no strategy named {name!r}; configured: {', '.join(s.name for s in strategies)}")
        return found

    async def set_params(self, name: str, changes: dict[str, str]) -> strategy_pb2.StrategyInfo:
        """Change some of a strategy's parameters; the strategy checks them all with the rest (all or nothing)."""
        request = strategy_pb2.SetStrategyParamsRequest(name=_named(name), params=changes)
        return (await self._call(rpc.SET_STRATEGY_PARAMS, request)).strategy

    async def risk_state(self) -> risk_pb2.GetRiskStateResponse:
        return await self._call(rpc.GET_RISK_STATE, risk_pb2.GetRiskStateRequest())

    async def set_limits(self, changes: dict[str, Any]) -> risk_pb2.GetRiskStateResponse:
        """The limits risk has, with `changes` made (SetRiskLimits replaces them whole; risk checks them all and
        takes none when one is wrong); the risk state after."""
        limits = (await self.risk_state()).limits
        for name, value in changes.items():
            setattr(limits, name, value)
        await self._call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=limits))
        return await self.risk_state()

    async def kill(self, reason: str, cancel_open_orders: bool) -> int:
        """Engage the kill switch; returns the new TradingState."""
        resp = await self._call(rpc.SET_KILL_SWITCH, risk_pb2.SetKillSwitchRequest(
            engaged=True, reason=cut(reason, REASON_CHARS), cancel_open_orders=cancel_open_orders))
        return resp.state

    async def unkill(self, reason: str) -> int:
        request = risk_pb2.SetKillSwitchRequest(engaged=False, reason=cut(reason, REASON_CHARS))
        resp = await self._call(rpc.SET_KILL_SWITCH, request)
        return resp.state

    async def manual_order(self, symbol: str, side: trading_pb2.Side, quantity: int, *, limit_paise: int = 0,
                           stop_paise: int = 0, product: trading_pb2.Product = trading_pb2.PRODUCT_MIS,
                           segment: str = "", client_order_id: str = "") -> trading_pb2.OrderRequest:
        """A manual order on `symbol` (strategy_tag MANUAL) as PlaceOrder takes it, not placed yet: a limit order at
        `limit_paise`, else a market order; a stop order triggering at `stop_paise` when given. The symbol is looked
        up in ingestion's instruments (`segment` picks one listed on several); the client order id is
        `client_order_id`, or a new one."""
        wanted = symbol.strip().upper()
        listed = (await self._call(rpc.LIST_INSTRUMENTS, ingestion_pb2.ListInstrumentsRequest())).instruments
        named = [i for i in listed if i.symbol.upper() == wanted]
        found = [i for i in named if not segment or i.exchange_segment == segment]
        if not found:
            where = f" on {segment} (it is on {', '.join(i.exchange_segment for i in named)})" if named else ""
            raise NotFound(f"no instrument {cut(wanted, 40)!r}{where}; the instruments NeoPulse trades are those "
                           "ingestion lists, e.g. " + ", ".join(i.symbol for i in listed[:5]))
        if len(found) > 1:
            raise InvalidInput("symbol", f"{wanted} is on {', '.join(i.exchange_segment for i in found)}: name the "
                                         "segment")
        inst = found[0]
        if limit_paise:
            order_type = trading_pb2.ORDER_TYPE_STOP_LIMIT if stop_paise else trading_pb2.ORDER_TYPE_LIMIT
        else:
            order_type = trading_pb2.ORDER_TYPE_STOP_MARKET if stop_paise else trading_pb2.ORDER_TYPE_MARKET
        return trading_pb2.OrderRequest(
            client_order_id=client_order_id or new_client_order_id(), token=inst.token,
            exchange_segment=inst.exchange_segment, symbol=inst.symbol, side=side, quantity=quantity,
            order_type=order_type, price_paise=limit_paise, trigger_price_paise=stop_paise, product=product,
            validity=trading_pb2.VALIDITY_DAY, strategy_tag="MANUAL")

    async def place(self, order: trading_pb2.OrderRequest) -> trading_pb2.OrderUpdate:
        """Place a manual order (through risk, as PlaceOrder does); the order as the OMS booked it. No answer in time:
        OutcomeUnknown naming the order's id (it may have been placed: look it up, retry only with that id)."""
        request = oms_pb2.PlaceOrderRequest(order=order)
        return (await self._call(rpc.PLACE_ORDER, request, order.client_order_id)).order

    async def square_off(self, symbol: str = "") -> list[trading_pb2.OrderUpdate]:
        """Close one symbol's position (or all with "") with market orders."""
        resp = await self._call(rpc.SQUARE_OFF, oms_pb2.SquareOffRequest(symbol=symbol))
        return list(resp.orders)

    async def daily_summary(self, day: date | None = None) -> DailySummary:
        day = day or day_of(self.clock.now_ns())
        orders = list((await self._call(rpc.LIST_ORDERS, oms_pb2.ListOrdersRequest(limit=SUMMARY_ORDER_LIMIT))).orders)
        positions = await self.positions()
        summary = summarise(day, orders, positions, await self._placed_earlier(orders, day))
        try:
            summary.funds = await self.funds()
        except NeoPulseError as exc:  # the broker's limits unread: the day's trades are the summary
            log.warning("the daily summary goes without the account's funds", extra={"error": str(exc)})
        return summary

    async def audit(self, name: str, args: list[str], origin: str) -> ops_pb2.Command:
        """Publish the command as it entered the system on Topic.COMMANDS."""
        command = ops_pb2.Command(command_id=str(uuid.uuid4()), name=name, args=args, origin=origin,
                                  ts_ns=self.clock.now_ns())
        await self.bus.publish(Topic.COMMANDS, command)
        log.info("command received", extra={"command": name, "command_args": args, "origin": origin,
                                            "command_id": command.command_id})
        return command


def _named(name: str) -> str:
    if not name.strip():
        raise InvalidInput("name", "give the strategy name, e.g. /pause MOMENTUM_RSI")
    return name.strip()
