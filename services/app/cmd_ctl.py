"""`neopulse ctl COMMAND`: the Telegram bot's commands from a terminal, against a running NeoPulse over gRPC.

The bot's own Control (services/notifier/control.py) behind a local bus whose requests go to the running system's
services (split mode's unary proxies), and the bot's replies as plain text. So `ctl` answers what /status, /orders
or /kill answer, and works where the bot does not (no Telegram configured, or Telegram unreachable). The command
line is the confirmation: halt, release, cancel and square-off act at once, without the bot's buttons.

The services are found as the running system serves them: the monolith at [grpc].host and `grpc_port` (the same
settings and --config as `neopulse run`), each split module at its [split] address with --split, or all at
--target. [grpc].auth_token and TLS are the servers' (auth_token from NEOPULSE_GRPC_AUTH_TOKEN, say).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import math
import os
import re
import sys
from typing import Any

from shared import config as cfg
from shared.errors import ConfigError, NeoPulseError

EXIT_FAILED, EXIT_USAGE = 1, 2
# The module each command but status talks to: it must be reachable first (status says which parts answer).
MODULE_OF = {"positions": "oms", "pnl": "oms", "orders": "oms", "order": "oms", "cancel": "oms", "squareoff": "oms",
             "strategies": "strategy", "pause": "strategy", "resume": "strategy",
             "limits": "risk", "halt": "risk", "release": "risk"}
CHECK_WITH = {"cancel": "orders", "squareoff": "positions", "pause": "strategies", "resume": "strategies"}
_TAG = re.compile(r"<[^>]+>")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ctl", help="status, orders, positions, kill switch... of a running NeoPulse (gRPC)",
                       description="The Telegram bot's commands from a terminal, against a running NeoPulse.")
    p.add_argument("--config", help="TOML config file (also NEOPULSE_CONFIG): where the services listen, auth, TLS")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="HOST:PORT", help="every service at this address (a monolith)")
    where.add_argument("--split", action="store_true", help="each module at its [split] address (split mode)")
    p.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait for each answer (default 10)")
    cmds = p.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    for name, helptext in (("status", "mode, feed, trading state, strategies"), ("positions", "open positions"),
                           ("pnl", "realised, unrealised, charges"), ("strategies", "strategies and their state"),
                           ("limits", "risk state and limits")):
        cmds.add_parser(name, help=helptext)
    q = cmds.add_parser("orders", help="open orders (default) or today's")
    q.add_argument("which", nargs="?", default="open", choices=("open", "today"))
    q.add_argument("--limit", type=_count, default=50, help="at most this many, newest first (default 50)")
    cmds.add_parser("order", help="one order").add_argument("order_id", help="its client, internal or exchange id")
    cmds.add_parser("cancel", help="cancel an order at the broker").add_argument("order_id")
    q = cmds.add_parser("pause", help="pause a strategy")
    q.add_argument("name")
    q.add_argument("reason", nargs="*", help="why (shown by strategies)")
    cmds.add_parser("resume", help="resume a strategy").add_argument("name")
    q = cmds.add_parser("halt", help="engage the kill switch: no new orders until released")
    q.add_argument("--cancel-orders", action="store_true", help="also cancel every open order")
    q.add_argument("reason", nargs="*", help="why (shown by status and limits)")
    q = cmds.add_parser("release", help="release the kill switch: strategies may place orders again")
    q.add_argument("reason", nargs="*")
    q = cmds.add_parser("squareoff", help="close positions with market orders")
    q.add_argument("symbol", help="a trading symbol (e.g. SBIN-EQ), or all")
    p.set_defaults(handler=handle)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return seconds


def _count(text: str) -> int:
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def handle(args: argparse.Namespace) -> int:
    try:
        targets, grpc_settings = _targets(args)
    except ConfigError as exc:
        print(f"neopulse ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = asyncio.run(_run(args, targets, grpc_settings))
    except NeoPulseError as exc:
        print(f"neopulse ctl: {exc}", file=sys.stderr)
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


def _targets(args: argparse.Namespace) -> tuple[dict[str, str], Any]:
    """module -> host:port of its gRPC server, and the [grpc] settings (auth, TLS)."""
    from services.app.config import AppSettings
    from services.app.split import MODULES, SplitSettings
    from shared.grpc.config import GrpcSettings

    toml = cfg.read_toml(args.config)
    grpc_settings = cfg.load(GrpcSettings, toml)
    if args.split:
        split = cfg.load(SplitSettings, toml)
        return {m: split.addr(m) for m in MODULES}, grpc_settings
    target = args.target or f"{grpc_settings.host}:{cfg.load(AppSettings, toml).grpc_port}"
    host, colon, port = target.rpartition(":")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"--target: expected host:port with a port 1-65535, got {target!r}")
    return {m: target for m in MODULES}, grpc_settings


async def _run(args: argparse.Namespace, targets: dict[str, str], grpc_settings: Any) -> str:
    from services.app.split import COMMANDS, owner
    from services.notifier.control import Control
    from shared import rpc
    from shared.bus import Bus
    from shared.clock import RealClock
    from shared.grpc.auth import auth_metadata
    from shared.grpc.bridge import install_unary_proxy, open_channel

    bus, channels = Bus(), {}
    token = grpc_settings.auth_token
    metadata = auth_metadata(token.get_secret_value() if token else None)
    try:
        for method in (*COMMANDS, rpc.GET_FEED_STATUS, rpc.GET_SYSTEM_STATUS):
            addr = targets[owner(method)]
            if addr not in channels:
                channels[addr] = open_channel(addr, grpc_settings)
            # A second past Control's own deadline, whose message says where to check after a change timed out.
            install_unary_proxy(bus, channels[addr], method, metadata, timeout_s=args.timeout + 1.0)
        module = MODULE_OF.get(args.ctl_command)
        if module is not None:
            await _reachable(channels[targets[module]], module, targets[module], args.timeout)
        # The mode and uptime are the running system's (its notifier's), not this command's.
        return _plain(await _command(args, Control(bus, RealClock(), "", args.timeout), bus))
    finally:
        for channel in channels.values():
            await channel.close()


async def _reachable(channel: Any, module: str, addr: str, timeout_s: float) -> None:
    """Connected, or a clear error: a call on a channel that never connected fails as "outcome unknown" (an
    acting one), where nothing was sent."""
    try:
        async with asyncio.timeout(timeout_s):
            await channel.channel_ready()
    except TimeoutError:
        raise NeoPulseError(f"cannot reach the {module} at {addr} within {timeout_s:g} s; nothing was sent. Is "
                            "NeoPulse running (make run), and are --target / --split / --config those it serves "
                            "on?") from None


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
                f"{part}: {why}" for part, why in status.unavailable.items()) + ". Is it running (make run), and "
                "are --target / --split / --config those it serves on?")
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
    if command == "orders":
        return replies.orders_html(await control.orders(args.which, args.limit), args.which)
    if command == "order":
        order = await control.order(args.order_id)
        return f"{replies.order_line(order)} · {order.client_order_id} · {order.internal_id}"
    if command == "cancel":
        order = await control.order(args.order_id)
        if order.status in TERMINAL:
            return f"Nothing to cancel: {replies.order_line(order)}"
        return f"Cancel sent: {replies.order_line(await control.cancel(order.internal_id))}"
    if command == "strategies":
        return replies.strategies_html(await control.strategies())
    if command == "pause":
        reason = " ".join(args.reason) or "neopulse ctl pause"
        return replies.strategy_changed_html(await control.pause(args.name, reason=reason))
    if command == "resume":
        return replies.strategy_changed_html(await control.resume(args.name))
    if command == "limits":
        return replies.limits_html(await control.risk_state())
    if command == "halt":
        state = await control.kill(" ".join(args.reason) or "neopulse ctl halt", cancel_open_orders=args.cancel_orders)
        extra = " Open orders are being cancelled." if args.cancel_orders else ""
        return f"Kill switch engaged. Trading is {replies.state_label(state)}.{extra}"
    if command == "release":
        state = await control.unkill(" ".join(args.reason) or "neopulse ctl release")
        return f"Kill switch released. Trading is {replies.state_label(state)}."
    symbol = args.symbol.strip().upper()
    if not symbol:
        raise NeoPulseError("symbol: give a trading symbol (e.g. SBIN-EQ), or all")
    target = "" if symbol == "ALL" else symbol
    return replies.square_off_html(await control.square_off(target), target)


def _plain(text: str) -> str:
    """A reply's Telegram HTML as terminal text."""
    return html.unescape(_TAG.sub("", text))
