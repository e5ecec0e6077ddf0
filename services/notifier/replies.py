"""Short HTML replies to commands, rendered from what services.notifier.control returns.

Pure functions; every name that came from elsewhere is escaped.
"""

from __future__ import annotations

import json

from services.notifier.control import OUTCOME_UNKNOWN, SystemStatus
from services.notifier.messages import cut, enum_label, esc, side_label
from services.notifier.summary import DailySummary
from shared.clock import ist_datetime
from shared.contracts import oms_pb2, risk_pb2, strategy_pb2, trading_pb2
from shared.money import fmt_inr

# /unkill in <code>: Telegram makes a bare /command a link that sends it on one tap; safety is not released that way.
HELP = """<b>NeoPulse bot</b>
/status – mode, feed, indices, uptime, strategies
/positions – open positions
/orders [open|today] – orders
/history ORDER – an order's transitions and who or what moved each
/pnl – realised, unrealised, charges
/funds – margin available and used (the paper account's in paper mode)
/strategies – strategies and their state
/pause NAME, /resume NAME – a strategy
/quote [SYMBOL, ...] – prices now (the indices followed, when none is named)
/limits [NAME=VALUE ...] – risk state and limits; changes ask to confirm
/params NAME [NAME=VALUE ...] – a strategy's parameters; changes ask to confirm
/kill [reason] – halt trading (asks to confirm)
<code>/unkill</code> – re-arm trading (asks to confirm)
/squareoff [SYMBOL|all] – close positions (asks to confirm)
/cancel ORDER – cancel an order, by the id /orders shows (asks to confirm)
/buy SYMBOL QTY PRICE|mkt [trigger=RUPEES] [CNC|NRML], /sell ... – a manual order through risk, a stop order with
a trigger (asks to confirm)
/modify ORDER [qty=N] [price=RUPEES] [trigger=RUPEES] – change a working order (asks to confirm)"""
# The command menu Telegram shows by the message box (setMyCommands), in /help's order. Not /unkill: a menu entry is
# sent on one tap, and like /help this leaves re-arming trading to be typed (it still asks to confirm).
MENU = (
    ("status", "Mode, feed, uptime, strategies"), ("positions", "Open positions"),
    ("orders", "[open|today] Orders"), ("history", "ORDER: an order's transitions"),
    ("pnl", "Realised, unrealised, charges"), ("funds", "Margin available and used"),
    ("strategies", "Strategies and their state"), ("pause", "NAME: pause a strategy"),
    ("resume", "NAME: resume a strategy"), ("quote", "[SYMBOL ...] Prices now"),
    ("limits", "[NAME=VALUE ...] Risk state and limits; changes ask to confirm"),
    ("params", "NAME [NAME=VALUE ...] A strategy's parameters; changes ask to confirm"),
    ("kill", "[reason] Halt trading (asks to confirm)"),
    ("squareoff", "[SYMBOL|all] Close positions (asks to confirm)"),
    ("cancel", "ORDER: cancel an order (asks to confirm)"),
    ("buy", "SYMBOL QTY PRICE|mkt [CNC|NRML]: a manual buy (asks to confirm)"),
    ("sell", "SYMBOL QTY PRICE|mkt [CNC|NRML]: a manual sell (asks to confirm)"),
    ("modify", "ORDER [qty=N] [price=RUPEES] [trigger=RUPEES]: change a working order (asks to confirm)"),
    ("help", "What the bot can do"))
REASON_CHARS = 300  # a reason quoted in a reply (risk keeps the kill switch's whole) is cut, so the reply fits


def state_label(state: int) -> str:
    return enum_label(risk_pb2.TradingState, state, "TRADING_STATE_")


def duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def status_html(s: SystemStatus) -> str:
    lines = [f"<b>NeoPulse</b> {esc(s.mode)} · up {duration(s.uptime_seconds)}"]
    if s.feed is not None:
        state = "connected" if s.feed.connected else "DISCONNECTED"
        lines.append(f"Feed: {esc(s.feed.source)} {state} · {s.feed.ticks_per_second:.1f} ticks/s · "
                     f"{s.feed.ticks_total} ticks")
    lines += [quote_line(q) for q in s.indices]
    if s.risk is not None:
        lines.append(f"Trading: {state_label(s.risk.state)}{_reason(s.risk.state_reason)} · "
                     f"open orders {s.risk.open_orders}")
    if s.strategies:
        lines.append("Strategies: " + ", ".join(_strategy_short(x) for x in s.strategies))
    lines += [f"{part}: unavailable{_reason(why)}" for part, why in s.unavailable.items()]
    return "\n".join(lines)


def _reason(text: str) -> str:
    """A reason as ' (text)', cut to REASON_CHARS before it is escaped (so no entity is split); '' for none."""
    return f" ({esc(cut(text, REASON_CHARS))})" if text else ""


def _strategy_short(info: strategy_pb2.StrategyInfo) -> str:
    return f"{esc(info.name)}{' ⏸' if info.paused else ''}"


def strategies_html(infos: list[strategy_pb2.StrategyInfo]) -> str:
    if not infos:
        return "No strategies."
    rows = [f"{'⏸' if i.paused else '▶️'} <b>{esc(i.name)}</b> {esc(i.kind)} · {len(i.tokens)} tokens · "
            f"{i.signals_emitted} signals · today {fmt_inr(i.day_pnl_paise)}"
            + (f" (loss limit {fmt_inr(i.max_daily_loss_paise)})" if i.max_daily_loss_paise else "") + _paused(i)
            + "".join(_held(p) for p in i.positions)
            for i in infos]
    return "\n".join(rows)


def _held(p: strategy_pb2.StrategyPosition) -> str:
    """'\n   SBIN-EQ +10 @ ₹100.00 · stop ₹99.00 · target ₹102.00': a position of the strategy's and what exits it."""
    exits = (f" · stop {fmt_inr(p.stop_paise)}" if p.stop_paise else " · no stop") + \
        (f" · target {fmt_inr(p.target_paise)}" if p.target_paise else "") + \
        (" · <b>stop reached</b>, exiting" if p.stop_reached else "")
    return f"\n   {esc(p.symbol or str(p.token))} {p.net_quantity:+d} @ {fmt_inr(p.entry_price_paise)}{exits}"


def _paused(info: strategy_pb2.StrategyInfo) -> str:
    """'\n   paused 20 Jan 09:15 IST by NeoPulse: why' for a paused strategy, so "I paused it" and "NeoPulse paused it
    after a restart" read differently; '' for a running one."""
    if not info.paused:
        return ""
    who = "NeoPulse" if info.paused_by == strategy_pb2.PAUSED_BY_NEOPULSE else "the operator"
    when = f" {ist_datetime(info.paused_at_ns):%d %b %H:%M} IST" if info.paused_at_ns else ""
    why = f": {esc(cut(info.pause_reason, REASON_CHARS))}" if info.pause_reason else ""
    return f"\n   paused{when} by {who}{why}"


def strategy_changed_html(info: strategy_pb2.StrategyInfo) -> str:
    return f"<b>{esc(info.name)}</b> is {'paused' if info.paused else 'running'}."


def positions_html(resp: oms_pb2.ListPositionsResponse) -> str:
    """One line a position, with its product: an intraday MIS and a CNC holding of one symbol read apart."""
    open_ = [p for p in resp.positions if p.net_quantity]
    if not open_:
        return "No open positions."
    rows = [f"<b>{esc(p.symbol)}</b>{_product(p.product)} {p.net_quantity:+d} @ {fmt_inr(p.average_price_paise)} · "
            f"LTP {fmt_inr(p.last_price_paise)} · P&amp;L {fmt_inr(p.unrealised_pnl_paise)}" for p in open_]
    return "\n".join(rows)


CARRIED = {trading_pb2.PRODUCT_CNC, trading_pb2.PRODUCT_NRML}  # kept past the day: not the intraday square-off's


def _product(product: int) -> str:
    """' MIS' (with its leading space); '' when the OMS gave none."""
    return f" {enum_label(trading_pb2.Product, product, 'PRODUCT_')}" if product else ""


def square_off_prompt_html(symbol: str, held: list[trading_pb2.Position]) -> str:
    """The question for /squareoff SYMBOL: every position the OMS closes for it (each product and segment), so a
    trader meaning the intraday one sees that a delivery holding kept on purpose is sold too."""
    lines = [f"Square off {esc(symbol)} with market orders? This closes every {esc(symbol)} position:"]
    lines += [f"{esc(p.exchange_segment) or '–'}{_product(p.product)} {p.net_quantity:+d} @ "
              f"{fmt_inr(p.average_price_paise)} · LTP {fmt_inr(p.last_price_paise)}" for p in held]
    if any(p.product in CARRIED for p in held):
        lines.append("⚠️ Includes CNC/NRML (delivery, carry-forward) positions, not only intraday MIS: they are "
                     "closed too.")
    return "\n".join(lines)


def pnl_html(resp: oms_pb2.ListPositionsResponse) -> str:
    net = resp.realised_pnl_paise + resp.unrealised_pnl_paise - resp.charges_paise
    return (f"<b>P&amp;L</b> net {fmt_inr(net)}\nRealised {fmt_inr(resp.realised_pnl_paise)} · "
            f"unrealised {fmt_inr(resp.unrealised_pnl_paise)} · charges {fmt_inr(resp.charges_paise)}")


def funds_html(f: oms_pb2.GetFundsResponse) -> str:
    when = f" at {ist_datetime(f.as_of_ns):%H:%M:%S}" if f.as_of_ns else ""
    return (f"<b>Funds</b> ({esc(f.account)} account{when})\nAvailable {fmt_inr(f.available_paise)} of "
            f"{fmt_inr(f.total_paise)} · margin used {fmt_inr(f.margin_used_paise)}\n"
            f"Today: realised {fmt_inr(f.realised_pnl_paise)} · unrealised {fmt_inr(f.unrealised_pnl_paise)}")


def orders_html(orders: list[trading_pb2.OrderUpdate], which: str, more: int = 0) -> str:
    """One line an order, ending with its id (tap to copy, for /cancel); then how many `more` (older) are not shown."""
    if not orders:
        return f"No {which} orders."
    lines = [f"{order_line(o)} · <code>{esc(o.client_order_id)}</code>" for o in orders]
    if more:
        lines.append(f"… and {more} more {which} orders, older ones not shown")
    return "\n".join(lines)


def order_line(o: trading_pb2.OrderUpdate) -> str:
    r = o.request
    price = fmt_inr(r.price_paise) if r.price_paise else "MKT"
    if r.trigger_price_paise:
        price += f" trigger {fmt_inr(r.trigger_price_paise)}"
    status = enum_label(trading_pb2.OrderStatus, o.status, "ORDER_STATUS_")
    if o.reason_code == OUTCOME_UNKNOWN:  # given up without the broker's answer: it may be live there
        status += " ⚠️ outcome unknown, check the broker"
    tag = esc(r.strategy_tag) + (", changed by hand" if o.changed_by_hand and r.signal_id else "")
    return (f"{side_label(r.side)} {r.quantity} <b>{esc(r.symbol)}</b> {price} · {status} "
            f"{o.filled_quantity}/{r.quantity}" + (f" [{tag}]" if r.strategy_tag else ""))


def history_html(entries: list[oms_pb2.OrderHistoryEntry]) -> str:
    """An order's transitions, one line each (IST time, status, fills, terms, and who or what moved it)."""
    if not entries:
        return "No history recorded for this order."
    first = entries[0].update
    lines = [f"History of <code>{esc(first.client_order_id)}</code>: {side_label(first.request.side)} "
             f"<b>{esc(first.request.symbol)}</b>" + (f" [{esc(first.request.strategy_tag)}]"
                                                      if first.request.strategy_tag else "")]
    if first.request.reason:
        lines.append(f"Why: {esc(first.request.reason)}")
    for entry in entries:
        u, r = entry.update, entry.update.request
        price = fmt_inr(r.price_paise) if r.price_paise else "MKT"
        if r.trigger_price_paise:
            price += f" trigger {fmt_inr(r.trigger_price_paise)}"
        line = (f"{ist_datetime(u.ts_ns):%H:%M:%S} {enum_label(trading_pb2.OrderStatus, u.status, 'ORDER_STATUS_')} "
                f"· {u.filled_quantity}/{r.quantity} · {price}")
        if u.last_fill_quantity:
            line += f" · filled {u.last_fill_quantity} @ {fmt_inr(u.last_fill_price_paise)}"
        cause = _cause(entry.audit_json)
        if u.reason_code or cause:
            line += f" · {esc(u.reason_code or cause)}"
        if u.reason and u.status in (trading_pb2.ORDER_STATUS_REJECTED, trading_pb2.ORDER_STATUS_CANCELLED):
            line += f": {esc(cut(u.reason, 120))}"
        lines.append(line)
    return "\n".join(lines)


def _cause(audit_json: str) -> str:
    """Who or what moved an order, from its audit: a change asked (by a strategy, or by hand), the broker's word,
    a reconciliation at start."""
    try:
        audit = json.loads(audit_json or "{}")
    except ValueError:
        return ""
    if "modify_request" in audit:
        by = audit["modify_request"].get("by", "")
        return "change by hand" if by in ("", "hand") else f"change by {by}"
    if "reconcile" in audit:
        return "reconciled at start"
    if "event" in audit or "late_fill" in audit:
        return "broker"
    return ""


def modified_html(o: trading_pb2.OrderUpdate) -> str:
    """The answer to a change: the order with its terms as the OMS has them after the broker's answer."""
    sent = o.status == trading_pb2.ORDER_STATUS_MODIFY_PENDING  # the broker has not said yet which terms hold
    return f"{'Change sent' if sent else 'Modified'}: {order_line(o)}"


QUOTE_LINES = 25  # a /quote reply's lines at most (one message)


def quotes_html(quotes: list[strategy_pb2.Quote], asked: bool, most: int | None = QUOTE_LINES) -> str:
    """One line per quote: price (an index's without ₹), change from the previous close, and the tick's IST time;
    at most `most` lines. Not `asked` for symbols: the indices, or (none followed) every instrument."""
    if not asked:
        quotes = [q for q in quotes if q.instrument.is_index] or quotes
    shown = quotes if most is None else quotes[:most]
    lines = [quote_line(q) for q in shown] or ["No instruments."]
    if len(quotes) > len(shown):
        lines.append(f"… and {len(quotes) - len(shown)} more: name one to see it")
    return "\n".join(lines)


def quote_line(q: strategy_pb2.Quote) -> str:
    name = f"<b>{esc(q.instrument.symbol)}</b>"
    if not q.HasField("tick") or not q.tick.ltp_paise:
        return f"{name} no tick yet"
    t = q.tick

    def money(paise: int) -> str:
        return fmt_inr(paise).replace("₹", "") if q.instrument.is_index else fmt_inr(paise)

    line = f"{name} {money(t.ltp_paise)}"
    if t.close_paise:
        change = t.ltp_paise - t.close_paise
        arrow = "▲" if change > 0 else "▼" if change < 0 else "="
        line += f" {arrow} {money(abs(change))} ({change * 100 / t.close_paise:+.2f}%)"
    return f"{line} · {ist_datetime(t.ts_ns):%H:%M:%S}"


def params_html(info: strategy_pb2.StrategyInfo) -> str:
    """A strategy's parameters, NAME=VALUE in name order."""
    listed = ", ".join(f"{key}={value}" for key, value in sorted(info.params.items()))
    return f"{esc(info.name)} ({esc(info.kind)}){' paused' if info.paused else ''}: {esc(listed) or 'no parameters'}"


def limits_html(r: risk_pb2.GetRiskStateResponse) -> str:
    lim = r.limits
    return "\n".join([
        f"<b>Risk</b> {state_label(r.state)}{_reason(r.state_reason)}",
        f"Open orders {r.open_orders}/{lim.max_open_orders} · P&amp;L {fmt_inr(r.realised_pnl_paise)} realised, "
        f"{fmt_inr(r.unrealised_pnl_paise)} unrealised",
        f"Max order qty {lim.max_order_quantity} · value {fmt_inr(lim.max_order_value_paise)} · "
        f"position qty {lim.max_position_quantity}",
        f"Max position value {_cap(lim.max_position_value_paise)} · gross exposure "
        f"{_cap(lim.max_gross_exposure_paise)}",
        f"Daily loss: reducing at {fmt_inr(lim.daily_loss_reducing_paise)}, halt at "
        f"{fmt_inr(lim.daily_loss_halt_paise)} · square-off {esc(lim.square_off_time_ist) or '–'}",
    ])


def _cap(paise: int) -> str:
    return fmt_inr(paise) if paise else "no limit"


NO_LIMIT_AT_ZERO = {"max_position_value_paise", "max_gross_exposure_paise"}  # RiskLimits: 0 = no limit


def limit_value(name: str, value: object) -> str:
    """A RiskLimits field's value as /limits shows it: money (a field in paise) in rupees, so a slipped digit or a
    paise/rupee mix-up (100x) is seen on the confirmation; others as they are."""
    if name.endswith("_paise") and isinstance(value, int):
        return _cap(value) if name in NO_LIMIT_AT_ZERO else fmt_inr(value)
    return esc(str(value))


def state_html(state: int, reason: str) -> str:
    """'HALTED (kill switch engaged: fills look wrong)'."""
    return f"{state_label(state)}{_reason(reason)}"


def square_off_html(orders: list[trading_pb2.OrderUpdate], symbol: str) -> str:
    if not orders:
        return f"Nothing to square off ({esc(symbol or 'all')})."
    return f"Square-off sent {len(orders)} order(s):\n" + "\n".join(order_line(o) for o in orders)


def summary_text(s: DailySummary) -> str:
    """Plain text (the notification renderer escapes it): totals, then one line per strategy."""
    lines = [f"Trades {s.trades} · net {fmt_inr(s.net_pnl_paise)}",
             f"Realised {fmt_inr(s.realised_pnl_paise)} · unrealised {fmt_inr(s.unrealised_pnl_paise)} · "
             f"charges {fmt_inr(s.charges_paise)}"]
    for name, day in sorted(s.strategies.items()):
        lines.append(f"• {name}: {day.trades} trades, {fmt_inr(day.realised_pnl_paise)} realised, "
                     f"{fmt_inr(day.unrealised_pnl_paise)} open")
    if s.funds is not None:
        lines.append(f"Funds ({s.funds.account}): {fmt_inr(s.funds.available_paise)} available of "
                     f"{fmt_inr(s.funds.total_paise)}")
    return "\n".join(lines)
