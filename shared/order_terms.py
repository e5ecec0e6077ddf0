"""An order's terms (quantity, limit price, trigger price) and what a change of them may be: one rule for the OMS,
which decides (services/oms/modifying.py), and the skins, which ask a trader to confirm before they send one.
"""

from __future__ import annotations

from shared.contracts import trading_pb2 as t
from shared.errors import InvalidInput

Terms = tuple[int, int, int]  # quantity, price_paise, trigger_price_paise, as in an OrderRequest
TERM_NAMES = ("quantity", "price_paise", "trigger_price_paise")
PRICED = frozenset({t.ORDER_TYPE_LIMIT, t.ORDER_TYPE_STOP_LIMIT})  # order types with a limit price
STOPS = frozenset({t.ORDER_TYPE_STOP_LIMIT, t.ORDER_TYPE_STOP_MARKET})  # ... and with a trigger price
# Validities that end with the trading day (unspecified is DAY at the broker); a later GTC would not be one.
DAY_BOUND = frozenset({t.VALIDITY_UNSPECIFIED, t.VALIDITY_DAY, t.VALIDITY_IOC})
# Segments Kotak takes DAY orders only on (the SDK's settings.validity_allowed_by_segment): no IOC on MCX.
DAY_ONLY_SEGMENTS = frozenset({"mcx_fo"})


# What of a stop's terms Kotak and the exchange refuse (stop_fault): each caller says it in its own words.
LIMIT_SHORT_OF_TRIGGER, TRIGGER_REACHED = "limit short of trigger", "trigger reached"


def stop_fault(side: int, kind: int, price_paise: int, trigger_paise: int, last_paise: int) -> str:
    """The term of a stop order Kotak/NSE refuse, '' for none (and for any order that is no stop):
    LIMIT_SHORT_OF_TRIGGER, a stop-limit whose limit is short of its trigger (a buy's under it, a sell's over it:
    once triggered it would rest behind the market); TRIGGER_REACHED, with `last_paise` (today's last price; 0:
    unknown, not judged), a trigger the market has reached already (a buy's at or under it, a sell's at or over it:
    it would trade at once; "Trigger price for stoploss buy orders should be higher than the last traded price")."""
    if kind not in STOPS:
        return ""
    buy = side == t.SIDE_BUY
    if kind == t.ORDER_TYPE_STOP_LIMIT and (price_paise < trigger_paise if buy else price_paise > trigger_paise):
        return LIMIT_SHORT_OF_TRIGGER
    if last_paise > 0 and (trigger_paise <= last_paise if buy else trigger_paise >= last_paise):
        return TRIGGER_REACHED
    return ""


# Each field's numbers, as sets made once: the enum wrappers' values() builds a new list on every call.
_CHOICES = tuple((field, enum, frozenset(enum.values()))
                 for field, enum in (("order_type", t.OrderType), ("product", t.Product), ("validity", t.Validity)))
_ORDER_TYPES = _CHOICES[0][2]


def unknown_choice(order: t.OrderRequest) -> tuple[str, str] | None:
    """The first of order_type, product and validity holding a number the contract does not name (a proto3 enum
    takes any), as (field, what to send instead); None when all are known. Such an order is never placed."""
    for field, enum, known in _CHOICES:
        value = getattr(order, field)
        if value not in known:
            return field, f"{value} is not one the contract defines; use one of {', '.join(enum.keys()[1:])}"
    return None


def kind_name(request: t.OrderRequest) -> str:
    """LIMIT, MARKET, ... (a number the contract does not name, as the number)."""
    value = request.order_type
    return t.OrderType.Name(value).removeprefix("ORDER_TYPE_") if value in _ORDER_TYPES else str(value)


def terms_of(request: t.OrderRequest) -> Terms:
    return request.quantity, request.price_paise, request.trigger_price_paise


def changed_terms(request: t.OrderRequest, filled: int, change: Terms, names: tuple[str, str, str] = TERM_NAMES
                  ) -> Terms:
    """The order's terms with `change` made (0 keeps a term; the quantity is the new total, filled units included).
    InvalidInput, naming the term as `names` call them, for a change the order cannot take."""
    quantity, price, trigger = change
    for field, value in zip(names, change, strict=True):
        if value < 0:
            raise InvalidInput(field, f"must be positive (or 0 to keep it), got {value}")
    if not any(change):
        raise InvalidInput(names[0], f"give the new {', '.join(names)} (0 keeps one)")
    kind = kind_name(request)
    if price and request.order_type not in PRICED:
        raise InvalidInput(names[1], f"a {kind} order has no limit price; cancel it and place a limit order")
    if trigger and request.order_type not in STOPS:
        raise InvalidInput(names[2], f"a {kind} order has no trigger price")
    if quantity and quantity <= filled:
        raise InvalidInput(names[0], f"{quantity} must stay above the {filled} units already filled (the new total, "
                                     "filled units included); cancel the rest instead")
    old = terms_of(request)
    return quantity or old[0], price or old[1], trigger or old[2]
