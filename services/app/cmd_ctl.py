"""`neopulse ctl COMMAND`: the Telegram bot's commands from a terminal, against a running NeoPulse over gRPC.

The bot's own Control (services/notifier/control.py) behind a local bus whose requests go to the running system's
services (split mode's unary proxies), and the bot's replies as plain text. So `ctl` answers what /status, /orders
or /kill answer, and works where the bot does not (no Telegram configured, or Telegram unreachable). It also
places manual orders (buy, sell: through risk, as PlaceOrder does) and changes them (modify: checked by risk too),
changes risk limits (limits --set) and follows the notifications (watch). The command line is the confirmation:
what it is told, it does at once.

The services are found as the running system serves them: the monolith at [grpc].host and `grpc_port` (the same
settings and --config as `neopulse run`), each split module at its [split] address with --split, or all at
--target. [grpc].auth_token and TLS are the servers' (auth_token from NEOPULSE_GRPC_AUTH_TOKEN, say).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import sys
from typing import Any

from services.app import ctl_args as arg
from services.app.config import positive_s
from shared import config as cfg
from shared.errors import ConfigError, NeoPulseError, OutcomeUnknown

EXIT_FAILED, EXIT_USAGE = 1, 2
# The module each command but status talks to: it must be reachable first (status says which parts answer).
MODULE_OF = {"positions": "oms", "pnl": "oms", "orders": "oms", "order": "oms", "history": "oms", "cancel": "oms",
             "squareoff": "oms", "funds": "oms",
             "strategies": "strategy", "pause": "strategy", "resume": "strategy", "params": "strategy",
             "quote": "strategy",
             "limits": "risk", "halt": "risk", "release": "risk", "buy": "oms", "sell": "oms", "modify": "oms"}
CHECK_WITH = {"cancel": "orders", "squareoff": "positions", "pause": "strategies", "resume": "strategies",
              "params": "params NAME", "modify": "order ORDER_ID",
              "buy": "orders today", "sell": "orders today"}
_TAG = re.compile(r"<[^>]+>")
NOT_REACHED = "Is NeoPulse running (make run), and are --target / --split / --config those it serves on?"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ctl", help="status, orders, positions, kill switch... of a running NeoPulse (gRPC)",
                       description="The Telegram bot's commands from a terminal, against a running NeoPulse.")
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG): where the services listen, auth, TLS")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="HOST:PORT", help="every service at this address (a monolith)")
    where.add_argument("--split", action="store_true", help="each module at its [split] address (split mode)")
    p.add_argument("--timeout", type=positive_s, default=10.0, help="seconds to wait for each answer (default 10)")
    cmds = p.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    for name, helptext in (("status", "mode, feed, trading state, strategies"), ("positions", "open positions"),
                           ("pnl", "realised, unrealised, charges"), ("funds", "margin available and used"),
                           ("strategies", "strategies and their state")):
        cmds.add_parser(name, help=helptext)
    q = cmds.add_parser("limits", help="risk state and limits; --set changes limits")
    q.add_argument("--set", dest="changes", action="append", type=arg.limit_change, default=[], metavar="NAME=VALUE",
                   help="change one limit (repeatable), the others as they are: e.g. max_order_quantity=500, "
                        "daily_loss_halt_paise=5000000 (paise, as RiskLimits names them)")
    q = cmds.add_parser("orders", help="open orders (default) or today's")
    q.add_argument("which", nargs="?", default="open", choices=("open", "today"))
    q.add_argument("--limit", type=arg.count, default=50, help="at most this many, newest first (default 50)")
    cmds.add_parser("order", help="one order").add_argument("order_id", help="its client, internal or exchange id")
    cmds.add_parser("history", help="one order's transitions, oldest first, and who or what moved each").add_argument(
        "order_id", help="its client, internal or exchange id")
    cmds.add_parser("cancel", help="cancel an order at the broker").add_argument("order_id")
    q = cmds.add_parser("modify", help="change a working order's quantity, limit price or trigger, through risk",
                        description="A working order changed at the broker, checked by risk first. What is not "
                                    "given is kept; asking for the terms the order has already sends nothing.")
    q.add_argument("order_id", type=arg.order_id, help="its client or internal id, as orders shows it")
    q.add_argument("--quantity", type=arg.count, default=0, help="the new total, units already filled included")
    q.add_argument("--price", type=arg.rupees, default=0, metavar="RUPEES", help="the new limit price, e.g. 812.50")
    q.add_argument("--trigger", type=arg.rupees, default=0, metavar="RUPEES", help="a stop order's new trigger price")
    cmds.add_parser("quote", help="prices now: of these symbols (an index's name in one argument: \"Nifty 50\"), "
                    "else of every instrument, the indices first").add_argument("symbols", nargs="*")
    q = cmds.add_parser("pause", help="pause a strategy")
    q.add_argument("name")
    q.add_argument("reason", nargs="*", help="why (shown by strategies)")
    cmds.add_parser("resume", help="resume a strategy").add_argument("name")
    q = cmds.add_parser("params", help="a strategy's parameters; NAME=VALUE changes them (all or nothing)")
    q.add_argument("name")
    q.add_argument("changes", nargs="*", type=arg.param_change, metavar="NAME=VALUE")
    q = cmds.add_parser("halt", help="engage the kill switch: no new orders until released")
    q.add_argument("--cancel-orders", action="store_true", help="also cancel every open order")
    q.add_argument("reason", nargs="*", help="why (shown by status and limits)")
    q = cmds.add_parser("release", help="release the kill switch: strategies may place orders again")
    q.add_argument("reason", nargs="*")
    q = cmds.add_parser("squareoff", help="close positions with market orders")
    q.add_argument("symbol", help="a trading symbol (e.g. SBIN-EQ), or all")
    for side in ("buy", "sell"):
        q = cmds.add_parser(side, help=f"a manual {side} order, through risk's checks")
        q.add_argument("symbol", help="a trading symbol, e.g. SBIN-EQ")
        q.add_argument("quantity", type=arg.count)
        how = q.add_mutually_exclusive_group(required=True)
        how.add_argument("--limit", type=arg.rupees, metavar="PRICE", help="a limit order at PRICE rupees, e.g. 812.50")
        how.add_argument("--market", action="store_true", help="a market order")
        q.add_argument("--stop", type=arg.rupees, metavar="TRIGGER",
                       help="a stop order that triggers at TRIGGER rupees (stop-limit with --limit, else stop-market)")
        q.add_argument("--product", choices=("MIS", "CNC", "NRML"), default="MIS", help="default MIS (intraday)")
        q.add_argument("--segment", help="the exchange segment (nse_cm, bse_cm, ...) of a symbol listed on several")
        q.add_argument("--id", dest="client_order_id", type=arg.order_id,
                       help="the order's client id (default: a new one); an order whose outcome was unknown is "
                            "retried with its id, and never placed twice")
    q = cmds.add_parser("watch", help="notifications as they come (fills, rejections, alerts) until interrupted")
    q.add_argument("--for", dest="for_s", type=positive_s, metavar="SECONDS", help="stop after this long")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        targets, grpc_settings = _targets(args)
    except ConfigError as exc:
        print(f"neopulse ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.ctl_command == "watch":
        return _watch_until_stopped(args, targets, grpc_settings)
    if args.ctl_command == "modify" and not (args.quantity or args.price or args.trigger):
        print("neopulse ctl modify: error: give --quantity, --price or --trigger (what is not given is kept)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        text = asyncio.run(_run(args, targets, grpc_settings))
    except NeoPulseError as exc:
        print(f"neopulse ctl: {exc}", file=sys.stderr)
        if isinstance(exc, OutcomeUnknown) and exc.client_order_id:
            print(f"neopulse ctl: look it up: neopulse ctl order {exc.client_order_id}; retry only with "
                  f"--id {exc.client_order_id}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # a change asked for may have been made: the message says where to look
        print(f"neopulse ctl: interrupted; a change it asked for may have been made: check with "
              f"`neopulse ctl {CHECK_WITH.get(args.ctl_command, 'status')}`", file=sys.stderr)
        return 130
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `neopulse ctl orders | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _watch_until_stopped(args: argparse.Namespace, targets: dict[str, str], grpc_settings: Any) -> int:
    try:
        asyncio.run(_watch(args, targets["notifier"], grpc_settings))
    except NeoPulseError as exc:
        print(f"neopulse ctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `neopulse ctl watch | grep -m1 Fill`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _watch(args: argparse.Namespace, addr: str, grpc_settings: Any) -> None:
    """Every notification the notifier sends from now on, a line each, until --for ends, or SIGINT (Ctrl-C), SIGTERM
    or SIGHUP (also when started with SIGINT ignored, as a script's background job is); a broken stream is opened
    again (what was sent meanwhile is not replayed: notifications are not kept)."""
    from shared import runtime
    from shared.grpc.bridge import open_channel

    stop = runtime.stop_on_signals()  # SIGINT, SIGTERM, SIGHUP: installed, so an inherited SIG_IGN does not hold
    channel = open_channel(addr, grpc_settings)
    try:
        await _reachable(channel, "notifier", addr, args.timeout)
        print(f"watching the notifications of {addr}", flush=True)
        follower = asyncio.create_task(_follow(channel, grpc_settings))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({follower, stopped}, timeout=args.for_s, return_when=asyncio.FIRST_COMPLETED)
        for task in (follower, stopped):
            task.cancel()
        await asyncio.gather(follower, stopped, return_exceptions=True)
        if follower in done:
            follower.result()  # the reason it ended (a refused token)
    finally:
        await channel.close()


async def _follow(channel: Any, grpc_settings: Any) -> None:
    import grpc

    from services.notifier.messages import notification_html
    from shared import rpc
    from shared.clock import ist_datetime
    from shared.grpc.bridge import error_from_rpc, method_types

    method = rpc.method("NotifierService", "StreamNotifications")
    req_cls, batch_cls = method_types(method)
    metadata = grpc_settings.client_metadata()
    call = channel.unary_stream(method, request_serializer=req_cls.SerializeToString,
                                response_deserializer=batch_cls.FromString)
    while True:
        try:
            async for batch in call(req_cls(), metadata=metadata):
                for note in batch.notifications:
                    block = _plain(notification_html(note)).replace("\n", " · ")
                    print(f"{ist_datetime(note.ts_ns):%H:%M:%S} {block}", flush=True)
            why = "the stream ended (the notifier stopping?)"
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise error_from_rpc(method, err) from None
            why = f"the stream broke ({err.code().name})"
        print(f"neopulse ctl: {why}; opening it again", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)


def _targets(args: argparse.Namespace) -> tuple[dict[str, str], Any]:
    """module -> host:port of its gRPC server, and the [grpc] settings (auth, TLS)."""
    from services.app.config import AppSettings
    from services.app.split import MODULES, SplitSettings, host_and_port
    from shared.grpc.config import GrpcSettings

    toml = cfg.read_toml(args.config)
    grpc_settings = cfg.load(GrpcSettings, toml)
    if args.split:
        split = cfg.load(SplitSettings, toml)
        return {m: split.addr(m) for m in MODULES}, grpc_settings
    target = args.target or f"{grpc_settings.host}:{cfg.load(AppSettings, toml).grpc_port}"
    try:
        return {m: host_and_port(target) for m in MODULES}, grpc_settings
    except ValueError as exc:
        raise ConfigError(f"--target: {exc}") from None


async def _run(args: argparse.Namespace, targets: dict[str, str], grpc_settings: Any) -> str:
    from services.app.split import COMMANDS, owner
    from services.notifier.control import Control
    from shared import rpc
    from shared.bus import Bus
    from shared.clock import RealClock
    from shared.grpc.bridge import install_unary_proxy, open_channel

    bus, channels = Bus(), {}
    metadata = grpc_settings.client_metadata()
    try:
        for method in (*COMMANDS, rpc.GET_SYSTEM_STATUS):
            addr = targets[owner(method)]
            if addr not in channels:
                channels[addr] = open_channel(addr, grpc_settings)
            # A second past Control's own deadline, whose message says where to check after a change timed out.
            install_unary_proxy(bus, channels[addr], method, metadata, timeout_s=args.timeout + 1.0)
        module = MODULE_OF.get(args.ctl_command)
        if module is not None:
            await _reachable(channels[targets[module]], module, targets[module], args.timeout)
        # The mode and uptime are the running system's (its notifier's), not this command's; so is "today".
        clock = await _system_clock(bus) if args.ctl_command == "orders" and args.which == "today" else RealClock()
        return _plain(await _command(args, Control(bus, clock, "", args.timeout), bus))
    finally:
        for channel in channels.values():
            await channel.close()


async def _system_clock(bus: Any) -> Any:
    """The running system's time as its feed last stamped a tick: a paper session's simulated day is not always
    the calendar's (a weekend or holiday runs the last trading day). The real clock when the feed has none."""
    from shared import rpc
    from shared.clock import ManualClock, RealClock
    from shared.contracts import ingestion_pb2

    try:
        feed = await bus.call(rpc.GET_FEED_STATUS, ingestion_pb2.GetFeedStatusRequest())
    except NeoPulseError:
        return RealClock()
    return ManualClock(feed.last_tick_ns) if feed.last_tick_ns > 0 else RealClock()


async def _reachable(channel: Any, module: str, addr: str, timeout_s: float) -> None:
    """Connected, or a clear error: a call on a channel that never connected fails as "outcome unknown" (an
    acting one), where nothing was sent."""
    try:
        async with asyncio.timeout(timeout_s):
            await channel.channel_ready()
    except TimeoutError:
        raise NeoPulseError(f"cannot reach the {module} at {addr} within {timeout_s:g} s; nothing was sent. "
                            f"{NOT_REACHED}") from None


async def _command(args: argparse.Namespace, control: Any, bus: Any) -> str:
    from services.notifier import replies
    from services.notifier.control import TERMINAL
    from shared import rpc
    from shared.contracts import notifier_pb2

    command = args.ctl_command
    if command == "status":
        status = await control.status()
        if len(status.unavailable) == 3:  # feed, risk, strategies: nothing answered
            raise NeoPulseError("no NeoPulse service answered: " + "; ".join(
                f"{part}: {why}" for part, why in status.unavailable.items()) + f". {NOT_REACHED}")
        try:
            system = await bus.call(rpc.GET_SYSTEM_STATUS, notifier_pb2.GetSystemStatusRequest())
            status.mode, status.uptime_seconds = system.mode, system.uptime_seconds
        except NeoPulseError as exc:
            status.mode, status.uptime_seconds = "(mode unknown)", 0
            status.unavailable["notifier"] = str(exc)
        return replies.status_html(status)
    if command in ("positions", "pnl"):
        positions = await control.positions()
        return replies.positions_html(positions) if command == "positions" else replies.pnl_html(positions)
    if command == "funds":
        return replies.funds_html(await control.funds())
    if command == "orders":
        return replies.orders_html(await control.orders(args.which, args.limit), args.which)
    if command == "order":
        order = await control.order(args.order_id)
        return f"{replies.order_line(order)} · {order.client_order_id} · {order.internal_id}"
    if command == "history":
        return replies.history_html(await control.history(args.order_id))
    if command == "cancel":
        order = await control.order(args.order_id)
        if order.status in TERMINAL:
            return f"Nothing to cancel: {replies.order_line(order)}"
        return f"Cancel sent: {replies.order_line(await control.cancel(order.internal_id))}"
    if command == "modify":
        order = await control.modify(args.order_id, args.quantity, args.price, args.trigger)
        return f"{replies.modified_html(order)} · {order.client_order_id}"
    if command == "strategies":
        return replies.strategies_html(await control.strategies())
    if command == "quote":
        return replies.quotes_html(await control.quotes(args.symbols), asked=True, most=None)
    if command == "pause":
        reason = " ".join(args.reason) or "neopulse ctl pause"
        return replies.strategy_changed_html(await control.pause(args.name, reason=reason))
    if command == "resume":
        return replies.strategy_changed_html(await control.resume(args.name))
    if command == "params":
        return await _params(args, control)
    if command == "limits":
        return replies.limits_html(await (control.set_limits(dict(args.changes)) if args.changes
                                          else control.risk_state()))
    if command == "halt":
        state = await control.kill(" ".join(args.reason) or "neopulse ctl halt", cancel_open_orders=args.cancel_orders)
        extra = " Open orders are being cancelled." if args.cancel_orders else ""
        return f"Kill switch engaged. Trading is {replies.state_label(state)}.{extra}"
    if command == "release":
        state = await control.unkill(" ".join(args.reason) or "neopulse ctl release")
        return f"Kill switch released. Trading is {replies.state_label(state)}."
    if command in ("buy", "sell"):
        return await _place(args, control)
    symbol = args.symbol.strip().upper()
    if not symbol:
        raise NeoPulseError("symbol: give a trading symbol (e.g. SBIN-EQ), or all")
    target = "" if symbol == "ALL" else symbol
    return replies.square_off_html(await control.square_off(target), target)


async def _params(args: argparse.Namespace, control: Any) -> str:
    """The strategy's parameters, after SetStrategyParams made `args.changes` (validated whole by the strategy)."""
    from services.notifier import replies

    info = await (control.set_params(args.name, dict(args.changes)) if args.changes else control.strategy(args.name))
    return replies.params_html(info)


async def _place(args: argparse.Namespace, control: Any) -> str:
    """A manual order (strategy_tag MANUAL) as the OMS's PlaceOrder takes it: through risk, then placed."""
    from services.notifier import replies
    from shared.contracts import trading_pb2 as t

    order = await control.manual_order(
        args.symbol, t.SIDE_BUY if args.ctl_command == "buy" else t.SIDE_SELL, args.quantity,
        limit_paise=args.limit or 0, stop_paise=args.stop or 0, product=t.Product.Value(f"PRODUCT_{args.product}"),
        segment=args.segment or "", client_order_id=args.client_order_id or "")
    placed = await control.place(order)
    if placed.status == t.ORDER_STATUS_REJECTED:  # by the broker, or not sent: a failure, exit 1 with its reason
        raise NeoPulseError(f"Rejected: {replies.order_line(placed)} · {order.client_order_id}: "
                            f"{placed.reason or 'no reason given'}")
    sent = "Placed" if placed.status not in (t.ORDER_STATUS_PENDING_NEW, t.ORDER_STATUS_SUBMITTED) else (
        "Sent (not yet confirmed by the broker)")
    return f"{sent}: {replies.order_line(placed)} · {order.client_order_id}"


def _plain(text: str) -> str:
    """A reply's Telegram HTML as terminal text."""
    return html.unescape(_TAG.sub("", text))
