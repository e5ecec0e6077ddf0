"""The VirtualBroker's fill rules as pure functions of an order and a tick or a candle, and the terms NSE and Kotak's
RMS refuse before an order works. No state, no I/O: virtual_broker.py decides when to call them.

The rules, as the VirtualBroker applies them:
- Arrival (place_order, and modify_order: a changed order arrives anew), against the last tick of the token (the
  fill is decided there, at that tick's prices; it is booked, charges and event, once the caller yields, so that a
  burst of orders goes out before their fills are worked out, or as soon as anything reads or changes the book):
  * MARKET fills at once, all of it, at the ask (buy) / bid (sell), or the ltp when the tick has no quote.
    With no tick yet, only one of an earlier IST day (yesterday's close, before today's first tick), one from
    outside the session the order works in (below), or while the feed is stalled (below), it waits: it fills the
    same way at the token's next ticks of its day (the latest of the batch that brings them, on_ticks), or at the
    open of the next candle should that come first.
  * LIMIT that is marketable (buy limit >= ask, sell limit <= bid) fills at once at the ask / bid; not against
    a tick it could not have traded at (the cases above: it rests, and later ticks and candles fill it).
  * Depth: a tick carrying depth levels (Tick.asks / Tick.bids, best first) is walked instead of its touch: a fill at
    each level's price for what that level shows (one fill event each), a LIMIT only through levels at or better
    than its limit (its remainder rests as above), a MARKET's quantity beyond the visible depth at the last visible
    level's price (the exchange would go deeper; no price is made up). Orders deciding at the same tick take its
    depth in turn (what one took, the next does not find). A tick without depth fills at its touch as above.
  * STOP orders wait for a tick or a candle to trigger them (TRIGGER_PENDING); a triggered one is the MARKET
    (STOP_MARKET) or LIMIT (STOP_LIMIT) order it became: changed, it arrives as one (trades at once if marketable).
  * IOC: whatever did not fill on arrival is cancelled.
  * An order made from a tick this broker has not taken yet (OrderRequest.tick_recv_ns newer than the token's last
    tick here: signals overtake the market data on the way) arrives at the token's last tick of the batch that
    carries it: never at a price from before the tick its signal came from. A change of it meanwhile waits too.
- Validity (validity_refusal), as the SDK refuses it before the order leaves for Kotak: MCX (mcx_fo) takes DAY
  orders only, so an IOC order there is refused, never filled on arrival as elsewhere.
- Stop terms (stop_refusal), as Kotak refuses them on placing and on changing a stop not triggered yet: a buy stop's
  trigger must be above the token's last price of today, a sell stop's below it; a stop-limit buy's limit at or
  above its trigger, a sell's at or below it.
- Session: an order placed while its segment trades (shared.clock.segment_open) works in that session only. A tick
  or candle from outside it neither triggers nor fills it (it is still the token's last price), and the first tick
  or candle at or after the close expires it ("DAY order expired at the end of <date>: the exchange closed <segment>
  at <HH:MM> IST"). One placed while its segment is closed (risk's enforce_market_hours off: paper trading out of
  hours on purpose) works on the ticks and candles it gets, until the end of its IST day.
- Stalled feed: while no tick of any token has come for more than the broker's stall_s (the ingestion watchdog's
  stall_seconds, 15 s; real seconds, as the watchdog's: on a simulated session at --speed N, N times as many of its
  clock's) during an order's session, the last prices are no prices for it: MARKET orders wait for the first tick
  after the stall, as they do for yesterday's ticks (the feed going mute is no quiet market).
- Validity: a DAY order works until the end of the IST day it was placed on. The first tick or candle of a later
  day cancels it ("DAY order expired at the end of <date>"), before that tick can trigger or fill it; restore()
  leaves out a DAY order of an earlier day or of a session closed since, any IOC order, and one whose cancel was
  under way (this broker took it at once, and its book went with the process), so that reconciliation cancels them
  as gone from the broker's book.
- Ticks (on_ticks): a stop order is triggered by the first tick at or through its trigger (a buy's ltp at or above
  it, a sell's at or below) taken after the order (not of a second before it was accepted): a STOP_MARKET fills at
  once, all of it, at that tick's ask (buy) / bid (sell) or ltp (its depth, when it has some); a STOP_LIMIT becomes
  a limit, filling there what is marketable at that price, the rest resting (below) from the trigger on: it counts
  as accepted at the tick (the candle under way opened before it).
- Resting limits (on_ticks): a LIMIT not filled in full on arrival, and a triggered STOP_LIMIT, rest in the book at
  their limit. The first tick taken after one came to rest (from the next batch; not of a second before it was
  accepted, and one of its session, before its close) whose trade or quote reaches the limit (limit_reached: a buy's
  ltp at or below it, or its ask at or below it; a sell's ltp or bid at or above it) fills it at its limit: the
  resting order is the passive side, and an exchange trades it at its own price when the market comes to it, never
  at a later, better trade beyond it. As much as the tick shows there (resting_fill): a trade its ltq, the other
  side's quote its depth levels at or better than the limit (without depth, its ask_qty / bid_qty), both the larger;
  resting orders a tick reaches take that in turn (the order they came to rest in; a change puts one at the back),
  and the orders deciding at it afterwards (arrivals, stops it triggers) find the rest of its depth. A tick with no
  quantity at all (ltq, quote quantities and depth all 0: synthetic or lite ticks) fills all that is left. The rest
  keeps resting, for later ticks and candles.
- Candles (on_candle / process_candle): a candle only fills orders accepted BEFORE its start (no look-ahead).
  * LIMIT buy fills when low < limit, sell when high > limit, at its limit (it rested while the market came to it).
    Only on its session's first candle (one starting at the open: opens_session) does it get the open when better
    (buy: min(limit, open), sell: max(limit, open)): that is the opening price NSE's pre-open call auction sets,
    which the orders in the book before the open trade at.
  * MARKET (no tick on arrival, or a partial remainder) fills at the open.
  * STOP_MARKET buy triggers when high >= trigger and fills at max(trigger, open); sell when
    low <= trigger at min(trigger, open).
  * STOP_LIMIT triggers the same way, then follows the limit rule in the same candle with the trigger price
    as the reference, the price it arrives at as a limit (buy: low < limit at min(limit, max(trigger, open))); not
    crossing it, it stays OPEN, a resting limit from then on (the LIMIT rule, ticks included).
  * Every working order is checked against every candle: a stop triggers even when orders ahead of it used up
    the candle's volume. Only the quantity filled is capped by the volume, less what ticks of that minute filled
    of resting limits of its token (that volume was theirs already), shared by orders in acceptance order (a
    modify accepts an order anew: it queues behind the others); a remainder stays PARTIALLY_FILLED for later
    ticks and candles. A zero-volume candle fills nothing.
  * A candle not later than the last one processed for its token (a repeated delivery) is ignored: its volume
    was already shared out.
- An order fills only while it has a remainder and is not terminal: nothing is ever filled twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.clock import (
    day_of,
    fmt_hhmm,
    ist_day_number,
    ist_minute_of_day,
    ist_time_on_day_ns,
    segment_open,
    session_in_force,
)
from shared.contracts import market_pb2
from shared.contracts import trading_pb2 as t
from shared.money import fmt_inr
from shared.order_terms import DAY_ONLY_SEGMENTS, LIMIT_SHORT_OF_TRIGGER, stop_fault

Leg = tuple[int, int]  # one fill: quantity, price in paise


def trades_at(tick_ts_ns: int, now_ns: int, opens_ns: int, closes_ns: int) -> bool:
    """Whether an order working in the session [opens_ns, closes_ns) may trade at `now_ns` at the prices of a tick of
    `tick_ts_ns`: one of that session, before its close. Placed out of hours (closes_ns 0): a tick of its IST day;
    one of an earlier day is no price (yesterday's last quote is not where the market opens)."""
    if closes_ns:
        return opens_ns <= tick_ts_ns < closes_ns and now_ns < closes_ns
    return ist_day_number(tick_ts_ns) >= ist_day_number(now_ns)


def limit_marketable(side: int, limit_paise: int, price_paise: int) -> bool:
    """A limit at or through the arrival price trades at once."""
    if price_paise <= 0:
        return False
    return limit_paise >= price_paise if side == t.SIDE_BUY else limit_paise <= price_paise


def tick_fills(side: int, tick: market_pb2.Tick, quantity: int, limit_paise: int = 0, taken: int = 0) -> list[Leg]:
    """The fills a MARKET (limit_paise 0) or LIMIT order of `quantity` gets at `tick`, which it may trade at: its
    depth walked (depth_fills), else all at its touch (the ask / bid, or the ltp) when marketable there. `taken`:
    units of that side's depth orders before it took at this tick. No fills: the order rests (a LIMIT) or waits."""
    levels = tick.asks if side == t.SIDE_BUY else tick.bids
    if levels:
        legs = depth_fills(side, levels, quantity, limit_paise, taken)
        if legs is not None:
            return legs
    price = (tick.ask_paise if side == t.SIDE_BUY else tick.bid_paise) or tick.ltp_paise
    if price <= 0 or (limit_paise and not limit_marketable(side, limit_paise, price)):
        return []
    return [(quantity, price)]


def depth_fills(side: int, levels: Sequence[market_pb2.DepthLevel], quantity: int, limit_paise: int,
                taken: int) -> list[Leg] | None:
    """Walk the depth (best first) as the exchange matches an order against it: each level's units at its price,
    after the `taken` units orders before it took. A LIMIT (limit_paise > 0) stops at the first level beyond its
    limit; a MARKET order's quantity beyond the visible depth fills at the last visible level's price. None: no
    level holds anything (Kotak sends empty levels as zeros), so the touch rule applies."""
    legs: list[Leg] = []
    left, last_price = quantity, 0
    for level in levels:
        price, size = level.price_paise, level.quantity
        if price <= 0 or size <= 0:
            continue
        last_price = price
        if taken >= size:
            taken -= size
            continue
        size, taken = size - taken, 0
        if limit_paise and not limit_marketable(side, limit_paise, price):
            return legs
        take = min(size, left)
        legs.append((take, price))
        left -= take
        if not left:
            return legs
    if not last_price:
        return None
    if left and not limit_paise:  # one fill with the last level's own, when the walk ended there
        taken_there = legs.pop()[0] if legs and legs[-1][1] == last_price else 0
        legs.append((taken_there + left, last_price))
    return legs


def validity_refusal(order_id: str, segment: str, validity: int) -> str:
    """Why Kotak refuses an order of this validity on `segment` ('' when it takes it), in the words of the SDK's check
    before sending (req_data_validation: "Invalid validity ... Allowed values are DAY"), with what to do instead. A
    paper IOC on MCX would otherwise fill on arrival where the live order never reaches the exchange."""
    segment = segment.lower()
    if validity != t.VALIDITY_IOC or segment not in DAY_ONLY_SEGMENTS:
        return ""
    return (f"order {order_id}: Invalid validity 'IOC' for exchange segment '{segment}'. Allowed values are DAY: "
            f"{segment} takes DAY orders only; send it with validity DAY (and cancel what does not fill at once, if "
            "it must not rest)")


def stop_refusal(order_id: str, side: int, kind: int, price_paise: int, trigger_paise: int, ltp_paise: int) -> str:
    """Why Kotak refuses a stop with these terms ('' when it takes them: shared.order_terms.stop_fault), in its words
    with what to do instead; `ltp_paise`: the last price of today (0: none, not judged)."""
    fault = stop_fault(side, kind, price_paise, trigger_paise, ltp_paise)
    if not fault:
        return ""
    higher, above, name = ("higher", "above", "buy") if side == t.SIDE_BUY else ("lower", "below", "sell")
    if fault == LIMIT_SHORT_OF_TRIGGER:
        return (f"order {order_id}: Price limit has to be {higher} than the trigger: the limit {fmt_inr(price_paise)} "
                f"of a {name} stop-loss (SL) must be at or {above} its trigger {fmt_inr(trigger_paise)}; set it "
                "so, or use a stop-loss market (SL-M) order")
    return (f"order {order_id}: Trigger has to be {higher} than the last traded price of "
            f"{fmt_inr(ltp_paise)} (trigger {fmt_inr(trigger_paise)}): set the trigger {above} "
            f"{fmt_inr(ltp_paise)}, or send a MARKET or LIMIT order to {name} now")


def session_window(segment: str, ts_ns: int) -> tuple[int, int]:
    """(open, close) in ns of the session `segment` trades in at `ts_ns` (shared.clock's sessions: special ones,
    holidays, MCX's moving close); (0, 0) when it does not trade then."""
    if not segment_open(segment, ts_ns):
        return 0, 0
    opens, closes = session_in_force(segment, ts_ns)
    return ist_time_on_day_ns(ts_ns, opens), ist_time_on_day_ns(ts_ns, closes)


def closed_reason(segment: str, close_ns: int) -> str:
    """Why an order still working at its session's close is cancelled then, as the next-day expiry says it."""
    minute = ist_minute_of_day(close_ns)
    return (f"DAY order expired at the end of {day_of(close_ns).isoformat()}: the exchange closed "
            f"{segment or 'nse_cm'} at "
            f"{fmt_hhmm((minute // 60, minute % 60))} IST")


def limit_price_in(side: int, limit_paise: int, candle: market_pb2.Candle, reference_paise: int = 0) -> int | None:
    """Where a limit order working through `candle` trades: a buy when low < limit, a sell when high > limit (None:
    it does not). At its limit when it rested there (reference 0): a resting order trades at its own price, the
    later trades beyond it are others'. `reference_paise`: the price it met the market at instead, when better (a
    buy at min(limit, reference), a sell at max(limit, reference)): the session's opening auction price, or the
    trigger price a stop-limit reached inside the candle (it arrives there as a limit)."""
    if side == t.SIDE_BUY:
        if candle.low_paise >= limit_paise:
            return None
        return min(limit_paise, reference_paise) if reference_paise else limit_paise
    if candle.high_paise <= limit_paise:
        return None
    return max(limit_paise, reference_paise) if reference_paise else limit_paise


def opens_session(segment: str, start_ns: int) -> bool:
    """Whether a candle starting at `start_ns` is its segment's first of a session: its open is the opening price
    (for NSE cash, the pre-open call auction's), which the orders in the book before the open trade at."""
    return session_window(segment, start_ns)[0] == start_ns


def limit_reached(side: int, limit_paise: int, tick: market_pb2.Tick) -> bool:
    """Whether `tick` reaches a resting limit: a trade (ltp) or the other side's quote at or through it (a buy's ltp
    or ask at or below the limit, a sell's ltp or bid at or above it). A price of 0 is none."""
    return _reaches(side, limit_paise, tick.ltp_paise) or \
        _reaches(side, limit_paise, tick.ask_paise if side == t.SIDE_BUY else tick.bid_paise)


def resting_fill(side: int, limit_paise: int, tick: market_pb2.Tick, remaining: int, taken: int = 0) -> int:
    """How many of a resting limit's `remaining` units `tick` fills at its limit (0: none): what the market shows
    there, less the `taken` units orders resting before it took at this tick. A trade at or through the limit shows
    its ltq; the other side's quote at or through it shows its depth levels at or better than the limit (depth_fills),
    or without depth its quantity (ask_qty / bid_qty); both: the larger, as the print may have been against that very
    quote. A tick with no quantity at all (ltq, quote quantities and depth all 0: a synthetic or lite tick) says
    nothing of size: it fills all of `remaining`."""
    buy = side == t.SIDE_BUY
    traded = _reaches(side, limit_paise, tick.ltp_paise)
    quoted = _reaches(side, limit_paise, tick.ask_paise if buy else tick.bid_paise)
    if not (traded or quoted):
        return 0
    if not (tick.ltq or tick.ask_qty or tick.bid_qty or _holds_depth(tick.asks) or _holds_depth(tick.bids)):
        return remaining
    units = tick.ltq - taken if traded else 0
    if quoted:
        levels = tick.asks if buy else tick.bids
        legs = depth_fills(side, levels, remaining, limit_paise, taken) if levels else None
        shown = sum(quantity for quantity, _ in legs) if legs is not None \
            else (tick.ask_qty if buy else tick.bid_qty) - taken
        units = max(units, shown)
    return max(0, min(remaining, units))


def _reaches(side: int, limit_paise: int, price_paise: int) -> bool:
    """A price (0: none) at or through a limit: a buy's at or below it, a sell's at or above it."""
    if side == t.SIDE_BUY:
        return 0 < price_paise <= limit_paise
    return 0 < limit_paise <= price_paise


def _holds_depth(levels: Sequence[market_pb2.DepthLevel]) -> bool:
    """Whether any depth level shows a quantity (Kotak sends empty levels as zeros)."""
    return any(level.quantity > 0 for level in levels)


def stop_triggered(side: int, trigger_paise: int, candle: market_pb2.Candle) -> bool:
    """A buy stop triggers when high >= trigger, a sell stop when low <= trigger."""
    if side == t.SIDE_BUY:
        return candle.high_paise >= trigger_paise
    return candle.low_paise <= trigger_paise


def tick_triggers(side: int, trigger_paise: int, ltp_paise: int) -> bool:
    """A tick triggers a buy stop when its ltp is at or above the trigger, a sell stop when at or below."""
    return ltp_paise >= trigger_paise if side == t.SIDE_BUY else ltp_paise <= trigger_paise


def stop_price_in(side: int, trigger_paise: int, candle: market_pb2.Candle) -> int:
    """Where a triggered stop trades: max(trigger, open) for a buy, min(trigger, open) for a sell (gaps)."""
    if side == t.SIDE_BUY:
        return max(trigger_paise, candle.open_paise)
    return min(trigger_paise, candle.open_paise)


def candle_price(request: t.OrderRequest, triggered: bool, candle: market_pb2.Candle,
                 opening: bool = False) -> tuple[int | None, bool]:
    """(fill price or None, triggered after this candle) for an order working through `candle`; `opening`: the
    candle is the first of its session (opens_session), whose open a limit resting before it may get."""
    side, kind = request.side, request.order_type
    if kind == t.ORDER_TYPE_MARKET:
        return candle.open_paise, triggered
    auction_paise = candle.open_paise if opening else 0
    if kind == t.ORDER_TYPE_LIMIT:
        return limit_price_in(side, request.price_paise, candle, auction_paise), triggered
    if triggered:  # a stop triggered earlier: its remainder works as a market or a limit order
        if kind == t.ORDER_TYPE_STOP_MARKET:
            return candle.open_paise, True
        return limit_price_in(side, request.price_paise, candle, auction_paise), True
    if not stop_triggered(side, request.trigger_price_paise, candle):
        return None, False
    reached = stop_price_in(side, request.trigger_price_paise, candle)
    if kind == t.ORDER_TYPE_STOP_MARKET:
        return reached, True
    return limit_price_in(side, request.price_paise, candle, reached), True
