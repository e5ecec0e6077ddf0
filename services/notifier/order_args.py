"""What the order commands take (/buy, /sell, /modify): their arguments read and checked before anything is asked.

Pure functions for the Telegram skin (telegram_bot.py); a price typed in rupees becomes exact paise, never rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.ids import MAX_TEXT_CHARS
from shared.money import exact_paise
from shared.order_terms import Terms

MAX_SYMBOL_CHARS = 40  # longer is no trading symbol (and would not fit the prompt that quotes it)
MAX_QUANTITY = 10**9  # a manual order's quantity below this (risk's max_order_quantity decides; int64 holds it)
PRODUCTS = ("MIS", "CNC", "NRML")
CHANGE_KEYS = {"qty": 0, "quantity": 0, "price": 1, "trigger": 2}  # /modify's NAME=VALUE -> its place in Terms
CHANGE_NAMES = ("qty", "price", "trigger")  # what /modify calls each term, in its replies
MAX_CHANGE_CHARS = 40  # one NAME=VALUE: longer is no quantity or price


@dataclass(frozen=True)
class ManualOrder:
    """A manual order as /buy or /sell give it: `limit_paise` 0 is a market order; `trigger_paise` makes it a stop
    order (SL: with a limit; SL-M: at market)."""

    symbol: str
    quantity: int
    limit_paise: int
    product: str
    trigger_paise: int = 0


def manual_order(args: list[str]) -> ManualOrder | None:
    """SYMBOL QUANTITY PRICE|mkt, then in any order [trigger=RUPEES] [MIS|CNC|NRML]; None when malformed (the caller
    replies with the usage)."""
    if not 3 <= len(args) <= 5 or max(map(len, args)) > MAX_SYMBOL_CHARS or not whole(args[1]):
        return None
    quantity, product, trigger = int(args[1]), "", 0
    for arg in args[3:]:
        name, eq, value = arg.partition("=")
        if eq and name.lower() == "trigger" and not trigger:
            try:
                trigger = exact_paise(value)
            except ValueError:
                return None
        elif not eq and arg.upper() in PRODUCTS and not product:
            product = arg.upper()
        else:
            return None
    if not 0 < quantity < MAX_QUANTITY:
        return None
    limit = 0
    if args[2].lower() != "mkt":
        try:
            limit = exact_paise(args[2])
        except ValueError:
            return None
    return ManualOrder(args[0], quantity, limit, product or "MIS", trigger)


def order_change(args: list[str]) -> tuple[str, Terms] | None:
    """ORDER_ID then qty=N, price=RUPEES and trigger=RUPEES (any of them, each once): the id and the change, 0 for a
    term kept; None when malformed (the caller replies with the usage)."""
    if not 2 <= len(args) <= 4 or len(args[0]) > MAX_TEXT_CHARS or max(map(len, args[1:])) > MAX_CHANGE_CHARS:
        return None
    change = [0, 0, 0]
    for arg in args[1:]:
        name, eq, value = arg.partition("=")
        at = CHANGE_KEYS.get(name.lower())
        if not eq or at is None or change[at]:
            return None
        if at == 0:
            if not whole(value) or not 0 < int(value) < MAX_QUANTITY:
                return None
            change[0] = int(value)
            continue
        try:
            change[at] = exact_paise(value)
        except ValueError:
            return None
    return args[0], (change[0], change[1], change[2])


def whole(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²', which int() refuses."""
    return text.isascii() and text.isdigit()
