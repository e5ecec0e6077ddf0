"""Notifications from order-path events (fills, rejections) and their short HTML form for Telegram.

Pure functions over the contract protos; no bus, no I/O.
"""

from __future__ import annotations

import re
from html import escape, unescape

from shared.contracts import ops_pb2, trading_pb2
from shared.money import fmt_inr
from shared.order_terms import Terms, terms_of

SOURCE = "notifier"
MAX_MESSAGE_CHARS = 4096  # Bot API limit for one text message, in UTF-16 code units of the visible text
TEXT_CHARS = 3000  # a notification's text is cut here, leaving room for its title
BLOCK_SEP = "\n\n"
TERM_LABELS = ("qty", "price", "trigger")
CHANGED_AT_BROKER = "CHANGED_AT_BROKER"  # OrderUpdate.reason_code: terms the broker reports, NeoPulse never sent
CANCELLED_AT_BROKER = "CANCELLED_AT_BROKER"  # OrderUpdate.reason_code: a cancel NeoPulse never asked for
_URGENT_KINDS = {ops_pb2.NOTIFICATION_KIND_KILL_SWITCH, ops_pb2.NOTIFICATION_KIND_RISK_BREACH}
_TAG = re.compile(r"<[^>]*>")

_ICONS = {
    ops_pb2.NOTIFICATION_KIND_FILL: "✅",
    ops_pb2.NOTIFICATION_KIND_REJECTION: "⛔",
    ops_pb2.NOTIFICATION_KIND_RISK_BREACH: "⚠️",
    ops_pb2.NOTIFICATION_KIND_KILL_SWITCH: "🛑",
    ops_pb2.NOTIFICATION_KIND_FEED: "📡",
    ops_pb2.NOTIFICATION_KIND_SESSION: "🔑",
    ops_pb2.NOTIFICATION_KIND_SYSTEM: "⚙️",
    ops_pb2.NOTIFICATION_KIND_DAILY_SUMMARY: "📊",
}


def esc(text: str) -> str:
    """Escape text for Telegram's HTML parse mode (only <, > and & are special there)."""
    return escape(text, quote=False)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: an emoji outside the BMP is two."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """At most `limit` UTF-16 units, ending in … when cut (never inside a surrogate pair)."""
    if utf16_len(text) <= limit:
        return text
    return text.encode("utf-16-le")[:2 * (limit - 1)].decode("utf-16-le", "ignore") + "…"


def is_urgent(note: ops_pb2.Notification) -> bool:
    """Sent first and never shed for ordinary notices: critical ones, the kill switch and risk breaches."""
    return note.severity == ops_pb2.SEVERITY_CRITICAL or note.kind in _URGENT_KINDS


def enum_label(enum_type: object, value: int, prefix: str) -> str:
    """SIDE_BUY -> BUY, ORDER_STATUS_OPEN -> OPEN; unknown numbers stay visible."""
    try:
        name: str = enum_type.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def side_label(side: int) -> str:
    return enum_label(trading_pb2.Side, side, "SIDE_")


def order_fields(req: trading_pb2.OrderRequest) -> dict[str, str]:
    return {"client_order_id": req.client_order_id, "symbol": req.symbol, "token": str(req.token),
            "strategy": req.strategy_tag, "side": side_label(req.side), "quantity": str(req.quantity)}


def terms_change(old: Terms, new: Terms) -> str:
    """The terms that differ, as a trader reads them: 'qty 10 → 20, price ₹100.00 → ₹101.00' ('' if none does)."""
    return ", ".join(f"{label} {_term(label, was)} → {_term(label, now)}"
                     for label, was, now in zip(TERM_LABELS, old, new, strict=True) if was != now)


def _term(label: str, value: int) -> str:
    if label == "qty":
        return str(value)
    return fmt_inr(value) if value else ("MKT" if label == "price" else "none")


def fill_notification(update: trading_pb2.OrderUpdate) -> ops_pb2.Notification:
    req = update.request
    text = (f"{side_label(req.side)} {update.last_fill_quantity} {req.symbol} @ "
            f"{fmt_inr(update.last_fill_price_paise)} (filled {update.filled_quantity}/{req.quantity})")
    if req.strategy_tag:
        text += f" [{req.strategy_tag}]"
    if req.reason:
        text += f"\n{req.reason}"
    fields = order_fields(req) | {"internal_id": update.internal_id,
                                  "fill_quantity": str(update.last_fill_quantity),
                                  "fill_price_paise": str(update.last_fill_price_paise),
                                  "charges_paise": str(update.last_fill_charges_paise)}
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_FILL, severity=ops_pb2.SEVERITY_INFO,
                                title="Fill", text=text, ts_ns=update.ts_ns, fields=fields, source=SOURCE)


def modified_notification(update: trading_pb2.OrderUpdate, old: Terms) -> ops_pb2.Notification:
    """A working order whose terms changed from `old`: a change the broker took, or one made elsewhere (Kotak's app:
    reason_code CHANGED_AT_BROKER, a warning of its own)."""
    req = update.request
    text = f"{side_label(req.side)} {req.symbol}: {terms_change(old, terms_of(req))}"
    if req.strategy_tag:
        text += f" [{req.strategy_tag}]"
    outside = update.reason_code == CHANGED_AT_BROKER
    if update.changed_by_hand and req.signal_id:
        text += f"\nChanged by hand: {req.strategy_tag} leaves this order to you."
    fields = order_fields(req) | {"internal_id": update.internal_id, "price_paise": str(req.price_paise),
                                  "trigger_price_paise": str(req.trigger_price_paise),
                                  "previous_quantity": str(old[0]), "previous_price_paise": str(old[1]),
                                  "previous_trigger_price_paise": str(old[2])}
    if outside:  # not through NeoPulse: Kotak's app or another tool on the account
        return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_WARNING,
                                    title="Order changed outside NeoPulse", text=text, ts_ns=update.ts_ns,
                                    fields=fields | {"reason_code": CHANGED_AT_BROKER}, source=SOURCE)
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_INFO,
                                title="Order modified", text=text, ts_ns=update.ts_ns, fields=fields, source=SOURCE)


def risk_rejection_notification(decision: trading_pb2.RiskDecision) -> ops_pb2.Notification:
    req = decision.order
    strategy = decision.strategy or req.strategy_tag
    what = f"{side_label(req.side)} {req.quantity} {req.symbol}".strip()
    text = f"{what}: {decision.reason or decision.reason_code}"
    if strategy:
        text += f" [{strategy}]"
    fields = order_fields(req) | {"strategy": strategy, "reason_code": decision.reason_code,
                                  "signal_id": decision.signal_id}
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_REJECTION, severity=ops_pb2.SEVERITY_WARNING,
                                title=f"Risk rejected {decision.reason_code}".strip(), text=text,
                                ts_ns=decision.ts_ns, fields=fields, source=SOURCE)


# OrderUpdate.reason_code of a REJECTED order -> (title, severity); anything else is the broker's rejection.
_REJECTED_BY_CODE = {
    # The OMS gave the order up without the broker's answer: it may be live there. Someone must look.
    "OUTCOME_UNKNOWN": ("Order outcome unknown: check the broker's order book", ops_pb2.SEVERITY_CRITICAL),
    "NOT_SENT": ("Order not sent", ops_pb2.SEVERITY_WARNING),  # stopping, or the ledger refused it
}


def cancelled_elsewhere_notification(update: trading_pb2.OrderUpdate) -> ops_pb2.Notification:
    """A working order cancelled without NeoPulse asking (Kotak's app, the broker's risk system, the exchange): a
    stop-loss can vanish this way, so it is a warning of its own."""
    req = update.request
    text = (f"{side_label(req.side)} {req.quantity} {req.symbol}, {update.filled_quantity} filled: "
            f"{update.reason or 'no reason given'}")
    if req.strategy_tag:
        text += f" [{req.strategy_tag}]"
    fields = order_fields(req) | {"internal_id": update.internal_id, "reason_code": CANCELLED_AT_BROKER}
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_SYSTEM, severity=ops_pb2.SEVERITY_WARNING,
                                title="Order cancelled outside NeoPulse", text=text, ts_ns=update.ts_ns,
                                fields=fields, source=SOURCE)


def broker_rejection_notification(update: trading_pb2.OrderUpdate) -> ops_pb2.Notification:
    """A REJECTED order: by the broker, or given up by the OMS (reason_code says which)."""
    req = update.request
    text = f"{side_label(req.side)} {req.quantity} {req.symbol}: {update.reason or 'no reason given'}"
    if req.strategy_tag:
        text += f" [{req.strategy_tag}]"
    fields = order_fields(req) | {"internal_id": update.internal_id, "reason_code": update.reason_code}
    title, severity = _REJECTED_BY_CODE.get(update.reason_code, ("Broker rejected", ops_pb2.SEVERITY_WARNING))
    return ops_pb2.Notification(kind=ops_pb2.NOTIFICATION_KIND_REJECTION, severity=severity, title=title, text=text,
                                ts_ns=update.ts_ns, fields=fields, source=SOURCE)


def notification_html(note: ops_pb2.Notification) -> str:
    """One short HTML block: icon, bold title, the text; every user-supplied part escaped."""
    icon = _ICONS.get(note.kind, "ℹ️")
    if note.severity == ops_pb2.SEVERITY_CRITICAL:
        icon = "🚨"
    title = esc(note.title[:200]) if note.title else enum_label(ops_pb2.NotificationKind, note.kind,
                                                            "NOTIFICATION_KIND_")
    body = f"{icon} <b>{title}</b>"
    # Cut before escaping so an entity such as &amp; is never split; Telegram counts the visible UTF-16 units.
    room = MAX_MESSAGE_CHARS - utf16_len(f"{icon} {unescape(title)}\n")
    return f"{body}\n{esc(cut(note.text, min(TEXT_CHARS, room)))}" if note.text else body


def plain_fallback(html: str) -> str:
    """The visible text of a block Telegram refused, tags dropped, escaped again and cut: it always parses."""
    return esc(cut(unescape(_TAG.sub("", html)), MAX_MESSAGE_CHARS)) or "(empty notification)"


def group_blocks(parts: list[str], limit: int = MAX_MESSAGE_CHARS, sep: str = BLOCK_SEP) -> list[list[str]]:
    """HTML blocks packed in order into as few groups as fit one message each (measured in UTF-16 units,
    tags and entities included, so never short); a block longer than the limit alone goes out alone."""
    groups: list[list[str]] = []
    size = 0
    for part in parts:
        if groups and size == 0:  # nothing visible yet (empty lines): the part starts the group instead
            groups[-1] = [part]
            size = utf16_len(part)
        elif groups and size + utf16_len(sep) + utf16_len(part) <= limit:
            groups[-1].append(part)
            size += utf16_len(sep) + utf16_len(part)
        else:
            groups.append([part])
            size = utf16_len(part)
    return groups


def join_messages(parts: list[str], limit: int = MAX_MESSAGE_CHARS, sep: str = BLOCK_SEP) -> list[str]:
    """Pack HTML blocks (each shorter than the limit) into as few messages as fit the Bot API limit."""
    return [sep.join(group) for group in group_blocks(parts, limit, sep)]


def split_lines(html: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """A reply of one line per item (positions, orders, square-off results) in messages that fit the limit,
    cut between lines (never inside a tag)."""
    return join_messages(html.split("\n"), limit, sep="\n") or [html]
