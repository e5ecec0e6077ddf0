"""Reconciliation: at start the ledger's open orders against the broker's order book, today's positions, and the
broker's NRML positions and delivery holdings the book knows nothing of (`take_carried_positions`); while running,
the book's positions against the broker's (`position_differences`).

Runs in OmsModule.start(); adopts the broker's state and never re-sends an order on its own. When the order book
cannot be read at start (or the ledger fails an order's settling, or a remote broker's book lacks an order working
there today and a second look cannot confirm it gone), the orders stay as recorded and OmsModule.run() settles them
(`settle`) once it can. Working orders at the broker that the ledger does not hold are reported at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from prometheus_client import Counter

from services.oms.broker import BrokerOrderEvent, holdings_of
from services.oms.engine import NOT_YET_PLACED, OrderEngine, given_up
from services.oms.states import DAY_BOUND, TERMINAL, IllegalTransition, ReasonCode, name
from shared.clock import day_of, ist_day_number
from shared.contracts import ops_pb2
from shared.contracts import trading_pb2 as t
from shared.money import fmt_inr
from shared.positions import PositionBook

log = logging.getLogger(__name__)

SETTLE_FAILURES = Counter("neopulse_oms_settle_failures",
                          "Orders whose settling against the broker's book failed (e.g. the ledger); tried again")
# An in-process broker's order (the paper VirtualBroker's) that its book does not hold after the restart never reached
# it: that book is this process's, put back from the ledger.
NOT_FOUND = ("not in the broker's order book after the restart (no order tagged {}): it may never have been sent; "
             "place it again if still wanted")
RESTARTED = "NeoPulse restarted before the broker's answer was recorded"  # the outcome unknown of a restored order
# client_order_id shapes NeoPulse gives orders (risk: signals, square-offs, manual orders; the OMS: manual orders).
OWN_TAGS = ("sig-", "SQ-", "man-", "manual-")
MAX_LISTED = 20  # unknown working orders named in the start-up notification; the rest are counted
CONFIRM_AFTER_S = 1.0  # a remote broker's book lacking an order working there today is read again this much later


async def rebuild_positions(engine: OrderEngine, limit: int = 100_000) -> int:
    """Today's filled quantities and their charges from the ledger back into the position book."""
    day = day_of(engine.clock.now_ns())
    orders = await engine.ledger.list_orders(limit=limit, day=day)
    charges = await engine.ledger.fill_charges(day)
    applied = 0
    for u in reversed(orders):  # oldest first, as they were filled
        if u.filled_quantity <= 0:
            continue
        paid = charges.get(u.internal_id, 0)
        engine.positions.apply_update(_filled(u, paid))
        engine.restore_charges(u, paid)
        applied += 1
    return applied


def _filled(u: t.OrderUpdate, charges_paise: int) -> t.OrderUpdate:
    """A recorded order's whole fill (its filled quantity at its average price) as one fill for the book."""
    return t.OrderUpdate(request=u.request, last_fill_quantity=u.filled_quantity,
                         last_fill_price_paise=u.average_price_paise, last_fill_charges_paise=charges_paise)


CARRIED_PRODUCTS = (t.PRODUCT_CNC, t.PRODUCT_NRML)  # what a broker carries overnight (MIS is squared off)


async def rebuild_carried_positions(engine: OrderEngine) -> list[t.Position]:
    """The paper account's positions carried from earlier days, from the ledger's fills (a paper broker has no account
    holding them: its positions read through to the real one): the net of each (token, product)'s CNC and NRML fills
    before today, at the average price of the fills that built it, as a broker carries it. Into the book before
    today's fills (rebuild_positions), so that risk, strategies and the paper RMS's holdings check see them after a
    restart as a process running since would. Returns what was put in the book."""
    orders = await engine.ledger.filled_before(day_of(engine.clock.now_ns()), CARRIED_PRODUCTS)
    earlier = PositionBook()
    for u in orders:  # oldest first, as they were filled
        earlier.apply_update(t.OrderUpdate(request=u.request, last_fill_quantity=u.filled_quantity,
                                           last_fill_price_paise=u.average_price_paise))
    carried = []
    for held in (p.to_proto() for p in earlier.positions.values() if p.net_quantity):
        kept = t.Position(token=held.token, exchange_segment=held.exchange_segment, symbol=held.symbol,
                          product=held.product, net_quantity=held.net_quantity,
                          average_price_paise=held.average_price_paise, last_price_paise=held.average_price_paise,
                          price_factor=held.price_factor if held.HasField("price_factor") else None)
        engine.positions.restore(kept)
        carried.append(kept)
    return carried


Restored = tuple[list[t.OrderUpdate], list[t.OrderUpdate]]  # the ledger's open orders, today's given-up ones


async def reconcile(engine: OrderEngine) -> tuple[dict[str, int], Restored | None]:
    """Adopt the broker's view of every open ledger order; returns counts by outcome, and the restored orders
    when the order book could not be read (counted "unsettled"; `settle` them later, they alone).

    Today's orders given up before the restart (placement outcome unknown) are put back in the book too,
    so that one the broker turns out to have is adopted, now or when it shows up later.
    """
    day = day_of(engine.clock.now_ns())
    open_orders = await engine.ledger.open_orders()
    today = await engine.ledger.list_orders(limit=100_000, day=day)
    abandoned = [u for u in today if given_up(u)]
    for u in [*open_orders, *abandoned]:
        engine.remember(u)
    engine.restore_changed_terms(await engine.ledger.changed_terms([u.internal_id for u in open_orders]))
    restore = getattr(engine.broker, "restore", None)
    if callable(restore):  # VirtualBroker: its book lives only in memory; the orders it keeps working are today's
        restore(open_orders, await engine.ledger.fill_charges(day))
    book = await _order_book(engine, len(open_orders) + len(abandoned))
    if book is None:
        log.warning("working orders at the broker that the ledger does not hold were not looked for (no order book)")
        counts = _counts(unsettled=len(open_orders) + len(abandoned))
    else:
        counts = await _settle_against(engine, book, open_orders, abandoned)
        await _report_unknown_working(engine, book, [*today, *open_orders])
    counts["open"] = len(open_orders)
    return counts, ((open_orders, abandoned) if counts["unsettled"] else None)


def _counts(unsettled: int = 0) -> dict[str, int]:
    """Settled orders by outcome; "looking_up": not in the book yet, looked up by tag in the background."""
    return {"open": 0, "matched": 0, "rejected": 0, "cancelled": 0, "adopted": 0, "looking_up": 0,
            "unsettled": unsettled}


async def _order_book(engine: OrderEngine, orders: int) -> list[BrokerOrderEvent] | None:
    """The broker's order book; None (logged) when it cannot be read."""
    try:
        return await engine.broker.order_book()
    except Exception as exc:
        log.warning("order book unavailable; the orders open before the restart are settled once it can be read",
                    extra={"error": str(exc), "orders": orders})
        return None


async def settle(engine: OrderEngine, open_orders: list[t.OrderUpdate],
                 abandoned: list[t.OrderUpdate]) -> dict[str, int]:
    """Settle restored orders against one read of the broker's order book; with no book, all are "unsettled", and
    so is each order whose settling fails (the ledger). Orders settled already are left alone when called again."""
    if not open_orders and not abandoned:
        return _counts()
    book = await _order_book(engine, len(open_orders) + len(abandoned))
    if book is None:
        return _counts(unsettled=len(open_orders) + len(abandoned))
    return await _settle_against(engine, book, open_orders, abandoned)


async def _settle_against(engine: OrderEngine, book: list[BrokerOrderEvent], open_orders: list[t.OrderUpdate],
                          abandoned: list[t.OrderUpdate]) -> dict[str, int]:
    counts = _counts()
    book, unconfirmed = await _second_look(engine, book, open_orders)
    by_id = {e.exchange_order_id: e for e in book if e.exchange_order_id}
    by_tag = {e.client_order_id: e for e in book if e.client_order_id}
    for u in abandoned:
        ev = by_tag.get(u.client_order_id)
        if ev is not None and ev.status != t.ORDER_STATUS_REJECTED:
            try:
                async with engine.lock(u.internal_id):
                    await engine.apply_event_locked(u.internal_id, ev)
            except Exception as exc:
                _not_settled(counts, u, exc)
                continue
            counts["adopted"] += 1
    for u in open_orders:
        ev = by_id.get(u.exchange_order_id) if u.exchange_order_id else None
        ev = ev or by_tag.get(u.client_order_id)
        try:
            async with engine.lock(u.internal_id):
                current = engine.lookup(u.internal_id)
                if current is None or current.sequence != u.sequence:
                    continue  # it moved on since the ledger was read (a broker event): nothing to settle
                outcome = await _settle(engine, u, ev, gone=u.internal_id not in unconfirmed)
        except IllegalTransition as exc:
            log.error("reconciliation refused by the state machine: %s", exc, extra={"order_id": u.internal_id})
            continue
        except Exception as exc:
            _not_settled(counts, u, exc)
            continue
        if outcome == "looking_up":
            engine._in_flight(_look_up(engine, u.internal_id), f"oms:look-up:{u.internal_id}")
        counts[outcome] = counts.get(outcome, 0) + 1
    log.info("reconciled open orders", extra=counts)
    return counts


async def _second_look(engine: OrderEngine, book: list[BrokerOrderEvent],
                       open_orders: list[t.OrderUpdate]) -> tuple[list[BrokerOrderEvent], set[str]]:
    """The book with what a second look finds of the working orders of today it lacks, and the internal ids of those
    whose absence it could not confirm (named in a warning; left as recorded, settled again later). A remote broker
    can answer a read without orders it works: Kotak's "No Data" (kotak-neo-api issue 103), an empty book. Booked
    gone on one such read, an order would work and fill on unseen by risk, the kill switch and the square-off. So
    the book is read again a moment later and each order looked up by its number (`order_by_id`, where the broker
    has it): gone only when that read lists orders, not it, and the lookup finds nothing. No wait when the book
    lists them all (or is the process's own: an in-process broker's)."""
    missing = _unlisted(engine, book, open_orders)
    if not missing or engine.broker.in_process:
        return book, set()
    await asyncio.sleep(CONFIRM_AFTER_S)
    again = await _order_book(engine, len(missing)) or []
    found, failed = await _by_number(engine, _unlisted(engine, again, missing))
    rows = [*book, *again, *found]  # the newest last: each order's row is its last one
    unconfirmed = {u.internal_id for u in _unlisted(engine, rows, missing) if not again or u.internal_id in failed}
    if unconfirmed:
        log.warning("working orders the broker's book does not list, not confirmed gone; left as recorded and "
                    "settled again later", extra={"orders": ", ".join(
                        f"{u.client_order_id} ({u.exchange_order_id})" for u in missing
                        if u.internal_id in unconfirmed)})
    return rows, unconfirmed


def _unlisted(engine: OrderEngine, book: list[BrokerOrderEvent], orders: list[t.OrderUpdate]) -> list[t.OrderUpdate]:
    """The orders the broker has taken that the book lists by neither exchange id nor tag; not an earlier day's DAY
    order, which is past its day at any broker (the book is today's)."""
    listed = {i for e in book for i in (e.exchange_order_id, e.client_order_id) if i}
    today = ist_day_number(engine.clock.now_ns())
    return [u for u in orders if u.status not in NOT_YET_PLACED and u.exchange_order_id not in listed
            and u.client_order_id not in listed
            and not (u.ts_ns and ist_day_number(u.ts_ns) < today and u.request.validity in DAY_BOUND)]


async def _by_number(engine: OrderEngine, orders: list[t.OrderUpdate]) -> tuple[list[BrokerOrderEvent], set[str]]:
    """The broker's rows of `orders` looked up by exchange id, where it can; and the internal ids of those whose
    lookup failed."""
    lookup = getattr(engine.broker, "order_by_id", None)
    found: list[BrokerOrderEvent] = []
    failed: set[str] = set()
    for u in orders:
        if not callable(lookup) or not u.exchange_order_id:
            continue
        try:
            ev = await lookup(u.exchange_order_id)
        except Exception as exc:
            log.warning("order lookup by exchange id failed", extra={"order_id": u.internal_id, "error": str(exc)})
            failed.add(u.internal_id)
            continue
        if ev is not None:
            found.append(ev)
    return found, failed


async def _look_up(engine: OrderEngine, internal_id: str) -> None:
    """A restored order maybe sent just before the crash, which the broker does not list (yet: it may still be
    processing it), goes the way of a placement whose outcome is unknown while running: SUBMITTED, looked up by tag
    with backoff, adopted if found, else REJECTED OUTCOME_UNKNOWN (adopted if it turns up later), never re-sent. Under
    the order's lock, as a placement is: its broker events wait. A duplicate (settled again meanwhile) finds it
    settled and does nothing."""
    try:
        async with engine.lock(internal_id):
            await engine.until_recorded(internal_id, functools.partial(
                engine._outcome_unknown, internal_id, RuntimeError(RESTARTED)), "placement outcome unknown")
    except Exception:  # not the ledger (until_recorded takes that): logged; the order stays as recorded
        log.exception("restored order not looked up; left as recorded", extra={"order_id": internal_id})


def _not_settled(counts: dict[str, int], u: t.OrderUpdate, error: Exception) -> None:
    """One order that failed to settle (the ledger, most likely) is "unsettled": the caller settles again at its
    next check, and the others are settled meanwhile."""
    SETTLE_FAILURES.inc()
    log.error("order not settled against the broker's book; settled again at the next check", extra={
        "order_id": u.internal_id, "client_order_id": u.client_order_id, "error": f"{type(error).__name__}: {error}"})
    counts["unsettled"] += 1


async def _settle(engine: OrderEngine, u: t.OrderUpdate, ev: BrokerOrderEvent | None, gone: bool = True) -> str:
    """`gone`: an order the book does not list is gone from the broker (not: its absence is not confirmed)."""
    audit: dict[str, Any] = {"reconcile": "start-up"}
    if ev is not None:  # a PENDING_NEW one was sent before the crash, its SUBMITTED not yet recorded
        await engine.apply_event_locked(u.internal_id, ev)
        return "matched"
    if u.status in NOT_YET_PLACED:
        # PENDING_NEW: written ahead, maybe sent (SUBMITTED is recorded after the broker call); the broker may not
        # list it yet, a restart seconds after the crash: looked up again (_look_up) before it is given up.
        if not engine.broker.in_process:
            return "looking_up"
        await engine.transition(u.internal_id, t.ORDER_STATUS_REJECTED, reason=NOT_FOUND.format(u.client_order_id),
                                reason_code=ReasonCode.OUTCOME_UNKNOWN, audit=audit)
        return "rejected"
    if not gone:
        return "unsettled"  # left as recorded: settled again at the next check (_second_look)
    reason = "no longer in the broker's order book (expired at the end of its day, or removed)"
    await engine.transition(u.internal_id, t.ORDER_STATUS_CANCELLED, reason=reason,
                            reason_code=ReasonCode.NOT_IN_BROKER_BOOK, audit=audit)
    return "cancelled"


async def _report_unknown_working(engine: OrderEngine, book: list[BrokerOrderEvent],
                                  known: list[t.OrderUpdate]) -> None:
    """One notification naming the working orders in the broker's book that no ledger order matches (by exchange id
    or tag): placed in the broker's app, or by another NeoPulse, or NeoPulse's own from a lost or restored ledger.
    The OMS does not track them: risk, the kill switch and the square-off do not cover them. CRITICAL when one is
    tagged as NeoPulse tags its orders (OWN_TAGS)."""
    ids = {i for u in known for i in (u.client_order_id, u.exchange_order_id) if i}
    unknown = [e for e in book if e.status not in TERMINAL and not ({e.exchange_order_id, e.client_order_id} & ids)]
    if not unknown:
        return
    own = sum(e.client_order_id.startswith(OWN_TAGS) for e in unknown)
    broker = engine.broker.name.capitalize()
    lines = "; ".join(map(_describe, unknown[:MAX_LISTED]))
    if len(unknown) > MAX_LISTED:
        lines += f"; and {len(unknown) - MAX_LISTED} more"
    log.log(logging.CRITICAL if own else logging.WARNING, "working orders at the broker the ledger does not hold",
            extra={"orders": lines, "neopulse_tagged": own})
    mine = (f" {own} of them carry NeoPulse's tags: placed by another NeoPulse on this account, or NeoPulse's own "
            "orders missing from a lost or restored ledger." if own else "")
    await engine.notify(ops_pb2.SEVERITY_CRITICAL if own else ops_pb2.SEVERITY_WARNING,
                        f"Working orders at {broker} unknown to NeoPulse", (
        f"{len(unknown)} working order(s) at {broker} that NeoPulse's order ledger does not hold: {lines}.{mine} "
        "NeoPulse does not track them: its risk limits, the kill switch and the square-off do not cover them. Check "
        f"them in {broker}'s order book and cancel there any not wanted."),
        orders=str(len(unknown)), neopulse_tagged=str(own))


def _describe(e: BrokerOrderEvent) -> str:
    price = f" at {fmt_inr(e.price_paise)}" if e.price_paise else ""
    return (f"{e.exchange_order_id or '(no id)'} tagged {e.client_order_id or '(none)'}: {name(e.status)}, "
            f"{e.filled_quantity} of {e.quantity} filled{price}")


class PositionDifference(NamedTuple):
    token: int
    product: int
    symbol: str
    broker: int  # net quantity at the broker
    ours: int  # net quantity in the OMS book

    def describe(self, broker_name: str) -> str:
        def signed(n: int) -> str:
            return f"{n:+d}" if n else "0"

        return (f"{self.symbol or self.token} {t.Product.Name(self.product).removeprefix('PRODUCT_')}: "
                f"{broker_name.capitalize()} {signed(self.broker)}, NeoPulse {signed(self.ours)}")


def net_by_key(positions: Iterable[t.Position]) -> dict[tuple[int, int], int]:
    """A broker's net quantity per (token, product), its rows on one key added up (a product the broker mapping does
    not know, e.g. Kotak's BO, counts as MIS)."""
    net: dict[tuple[int, int], int] = {}
    for p in positions:
        key: tuple[int, int] = (p.token, p.product or t.PRODUCT_MIS)
        net[key] = net.get(key, 0) + p.net_quantity
    return net


async def position_differences(engine: OrderEngine) -> list[PositionDifference]:
    """Net quantity per (token, product) at the broker against the book's, where they differ; delivery (CNC)
    is left out: it moves from the broker's positions to its holdings with settlement, on its own schedule.
    Rows on one key are added up (net_by_key). Raises what the broker's positions read raises."""
    rows = await engine.broker.positions()
    theirs = net_by_key(rows)
    symbols: dict[tuple[int, int], str] = {}
    for p in rows:
        key: tuple[int, int] = (p.token, p.product or t.PRODUCT_MIS)
        symbols[key] = symbols.get(key) or p.symbol
    ours = engine.roll_day().positions
    out = []
    for key in sorted(k for k in theirs.keys() | ours.keys() if k[1] != t.PRODUCT_CNC):
        book = ours.get(key)
        broker_net, our_net = theirs.get(key, 0), (book.net_quantity if book else 0)
        if broker_net != our_net:
            symbol = symbols.get(key) or (book.symbol if book else "")
            out.append(PositionDifference(key[0], key[1], symbol, broker_net, our_net))
    return out


async def take_carried_positions(engine: OrderEngine) -> list[t.Position]:
    """After a restart the book holds only today's fills: an NRML position carried from an earlier day (or opened
    outside NeoPulse), and the delivery (CNC) shares the account holds, are missing from it, and so from risk's
    position and loss limits (a sale of held shares would look like a short). Each one on an instrument and
    product NeoPulse has no order on today, and no position in the book, is put in the book at the broker's
    quantity, carried at its last price as a new day carries a held quantity (its gain or loss before now is not
    today's, so it must not count against today's loss limit; a holding's last price is the previous close; a row
    without one is carried at its average price). The book only: the ledger records NeoPulse's own orders and
    fills. Returns what was taken; raises what the positions or holdings read raises (then nothing is taken).

    Holdings are settled shares only: shares bought CNC today are in the broker's positions until settlement and
    in the book from the ledger (NeoPulse's) or not at all (bought outside NeoPulse), never counted twice.

    Left to the position check's alert: MIS (not carried: a trade made outside NeoPulse today, which risk's
    square-off must not take over), CNC rows of the broker's positions (today's delivery trades; the position
    check leaves CNC out), rows without a price, and holdings on instruments NeoPulse traded CNC today (a sale today
    may or may not have lowered the holding yet; logged).

    An NRML position on an instrument NeoPulse traded today: the book holds today's fills from the ledger, and the
    broker's row tells its carried part apart (a broker position's buy and sell quantities are the day's:
    `carried_quantity`). That part is put under today's fills, as a process running since the start of the day has
    it: a sale of 3 of a carried 5 leaves +2, not a short of 3 that a square-off would buy back. Its price is the
    broker's last price, as above. Today's fills outside NeoPulse stay with the position check's alert."""
    today = await engine.ledger.list_orders(limit=100_000, day=day_of(engine.clock.now_ns()))
    ordered = {(u.request.token, u.request.product or t.PRODUCT_MIS) for u in [*today, *engine.orders.values()]}
    carried = [p for p in await engine.broker.positions() if p.product == t.PRODUCT_NRML]
    held = await holdings_of(engine.broker) if engine.settings.take_holdings else []
    book = engine.roll_day()
    taken = []
    for p in [*carried, *held]:
        key = (p.token, p.product)
        traded = key in ordered
        if traded and p.product == t.PRODUCT_CNC:
            if p.net_quantity:
                log.warning("holding on an instrument NeoPulse traded CNC today: not taken into the book (the "
                            "broker's figures may mix today's fills with it); risk counts only today's fills",
                            extra={"token": p.token, "symbol": p.symbol, "quantity": p.net_quantity})
            continue
        quantity = carried_quantity(p) if traded else p.net_quantity
        if not quantity or (not traded and key in book.positions):
            continue
        basis = p.last_price_paise or p.average_price_paise
        if basis <= 0:
            log.warning("broker position without a price; not taken into the book", extra={
                "token": p.token, "symbol": p.symbol, "net_quantity": quantity})
            continue
        kept = t.Position(token=p.token, exchange_segment=p.exchange_segment, symbol=p.symbol,
                          product=p.product, net_quantity=quantity,
                          average_price_paise=basis, last_price_paise=basis,
                          price_factor=p.price_factor if p.HasField("price_factor") else None)
        if traded and not await _under_todays_fills(engine, kept, today):
            continue
        if not traded:
            book.restore(kept)
        taken.append(kept)
    return taken


def carried_quantity(position: t.Position) -> int:
    """The part of a broker position's net quantity carried from earlier days: its buy and sell quantities are the
    day's (KotakBroker: Kotak's flBuyQty and flSellQty; the net adds cfBuyQty - cfSellQty)."""
    return position.net_quantity - (position.buy_quantity - position.sell_quantity)


async def _under_todays_fills(engine: OrderEngine, carried: t.Position, today: list[t.OrderUpdate]) -> bool:
    """Put `carried` in the book with the day's recorded fills on its (token, product) replayed on top, oldest first,
    as rebuild_positions put them on a flat book. False (logged; the book left as it is) when the book's position
    is not those fills: something else moved it, and a replay would lose that."""
    key = (carried.token, carried.product)
    charges = await engine.ledger.fill_charges(day_of(engine.clock.now_ns()))
    fills = [_filled(u, charges.get(u.internal_id, 0)) for u in reversed(today)
             if u.filled_quantity > 0 and (u.request.token, u.request.product or t.PRODUCT_MIS) == key]
    alone, under = PositionBook(), PositionBook()
    under.restore(carried)
    for fill in fills:
        alone.apply_update(fill)
        under.apply_update(fill)
    book = engine.roll_day()
    if _quantities(book, key) != _quantities(alone, key):
        log.warning("carried part of a broker position not taken into the book: the book's position is not the "
                    "ledger's fills of today", extra={"token": carried.token, "symbol": carried.symbol,
                                                      "carried": carried.net_quantity})
        return False
    target, replayed = book.position(*key), under.position(*key)
    for field in dataclasses.fields(replayed):  # in place: the book's by-token index holds this object
        setattr(target, field.name, getattr(replayed, field.name))
    return True


def _quantities(book: PositionBook, key: tuple[int, int]) -> tuple[int, int, int]:
    held = book.positions.get(key)
    return (held.net_quantity, held.buy_quantity, held.sell_quantity) if held else (0, 0, 0)
