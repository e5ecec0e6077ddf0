"""What the risk+OMS fuzz watches: every decision risk takes (with its own view at that moment), every order the
paper broker receives, and the checks that hold the broker, the ledger, the OMS and risk to each other.

Hooks wrap the real RiskEngine.decide and VirtualBroker.place_order of one World (tests/risk/test_fuzz_square_off).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from services.oms.broker import BrokerAck
from services.oms.ledger import TERMINAL
from services.oms.states import name as status_name
from services.oms.virtual_broker import VirtualOrder
from services.risk.engine import HALTED, REDUCING, RiskEngine, product_of, state_name
from shared.bus import Topic
from shared.contracts import market_pb2, trading_pb2
from shared.positions import SQUAREOFF_TAG
from shared.price_factor import factor_of, value_paise
from tests.risk.test_fuzz_square_off import World

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MIS = trading_pb2.PRODUCT_MIS
MARKET = trading_pb2.ORDER_TYPE_MARKET


@dataclass
class Values:
    """Rupees at stake when an order was decided, from risk's positions, working orders and the ticks published:
    the order's token at its resulting position (check_position's count), and every token at its larger side."""

    grows: bool  # the order grows its token's net position or flips it (else it only shrinks it)
    position_value: int
    gross: int
    position_limit: int
    gross_limit: int

    def over(self) -> list[str]:
        out = []
        if self.grows and self.position_limit and self.position_value > self.position_limit:
            out.append(f"position value {self.position_value} past max_position_value {self.position_limit}")
        if self.grows and self.gross_limit and self.gross > self.gross_limit:
            out.append(f"gross exposure {self.gross} past max_gross_exposure {self.gross_limit}")
        return out


@dataclass
class Decided:
    """An accepted order and what risk knew when it accepted it: its trading state, the net position of the
    order's token and product, and the working quantity on the order's side of them."""

    order: trading_pb2.OrderRequest
    state: int
    net: int
    pending: int
    values: Values | None = None
    kill: bool = False  # the kill switch was engaged (HALTED by it: only square-off orders pass; by the loss: exits)

    @property
    def reduces(self) -> bool:
        if self.net == 0 or (self.net > 0) == (self.order.side == BUY):
            return False
        return self.pending + self.order.quantity <= abs(self.net)


@dataclass
class Watch:
    """Decisions and placements of one run, and the bounds the limits in force promise (caps move only when the
    limits are replaced: a lowered limit does not shrink what was already held or working)."""

    w: World
    decisions: list[trading_pb2.RiskDecision] = field(default_factory=list)
    decided: dict[str, Decided] = field(default_factory=dict)
    placed: list[tuple[trading_pb2.OrderRequest, bool]] = field(default_factory=list)  # (order, kill engaged)
    # Every order the broker took, by client_order_id: its book drops those that ended on an earlier day.
    at_broker: dict[str, VirtualOrder] = field(default_factory=dict)
    published: Counter[str] = field(default_factory=Counter)  # signal_id -> times published
    kill: bool = False
    rolled: bool = False  # a new IST day started: P&L and charges restarted from zero
    cancel_all: bool = False  # the kill switch was engaged with cancel_open_orders in this step
    marks: dict[int, int] = field(default_factory=dict)  # token -> last traded price of the ticks published
    # The kill switch released over a loss limit: REDUCING, and not HALTED again by marks (RiskEngine.set_kill_switch)
    released_over_limit: bool = False
    caps: dict[int, tuple[int, int]] = field(default_factory=dict)  # token -> (long, short) exposure allowed
    open_cap: int = 0
    square_offs: Counter[tuple[int, int]] = field(default_factory=Counter)  # (token, side) -> placed since
    wrong_value_denials: list[str] = field(default_factory=list)  # MAX_POSITION_VALUE/GROSS_EXPOSURE not over it

    def hook(self) -> None:
        engine, broker = self.w.risk.engine, self.w.broker
        decide, place = engine.decide, broker.place_order

        def decide_noting(order: trading_pb2.OrderRequest) -> trading_pb2.RiskDecision:
            net, pending = risk_view(engine, order)
            state, values, kill = engine.state, self.values_at_stake(order), engine.kill_switch_engaged
            decision = decide(order)
            if decision.accepted:
                self.decided[order.client_order_id] = Decided(decision.order, state, net, pending, values, kill)
            elif decision.reason_code in ("MAX_POSITION_VALUE", "MAX_GROSS_EXPOSURE") and values is not None:
                word = "position value" if decision.reason_code == "MAX_POSITION_VALUE" else "gross exposure"
                if not any(text.startswith(word) for text in values.over()):
                    self.wrong_value_denials.append(f"{order.client_order_id}: {decision.reason}")
            return decision

        async def place_noting(order: trading_pb2.OrderRequest) -> BrokerAck:
            copy = trading_pb2.OrderRequest()
            copy.CopyFrom(order)
            self.placed.append((copy, self.kill))
            if order.strategy_tag == SQUAREOFF_TAG:
                self.square_offs[(order.token, order.side)] += order.quantity
            ack = await place(order)
            self.at_broker[order.client_order_id] = broker.book[ack.exchange_order_id]
            return ack

        engine.decide = decide_noting  # type: ignore[method-assign]
        broker.place_order = place_noting  # type: ignore[method-assign]

        async def collect(decision: trading_pb2.RiskDecision) -> None:
            self.decisions.append(decision)

        async def mark(batch: market_pb2.TickBatch) -> None:
            self.marks.update((t.token, t.ltp_paise) for t in batch.ticks if t.ltp_paise)

        self.w.bus.subscribe(Topic.ORDERS, "fuzz-decisions", collect)
        self.w.bus.subscribe(Topic.TICKS, "fuzz-marks", mark)
        self.limits_replaced()

    def limits_replaced(self) -> None:
        """New limits: each bound is the new limit, or what is held and working now when that is more."""
        limits = self.w.risk.engine.limits
        for token in self.w.prices:
            long, short = exposure(self.w, token)
            self.caps[token] = (max(limits.max_position_quantity, long), max(limits.max_position_quantity, short))
        self.open_cap = max(limits.max_open_orders, len(non_square_off_open(self.w)))
        self.square_offs.clear()

    def values_at_stake(self, order: trading_pb2.OrderRequest) -> Values | None:
        """Values (None for an order of an unknown token or without a price: refused before the value caps)."""
        engine = self.w.risk.engine
        inst = engine.instruments.get(order.token)
        if order.order_type != MARKET and not own_price(order):
            return None  # refused before the value caps
        price = max(own_price(order), self.known_price(order.token, False))  # as risk: the higher
        if inst is None or price <= 0 or order.side not in (BUY, SELL):
            return None
        net = engine.positions.net_quantity(order.token)
        buys, sells = working_sides(engine)
        own_side = buys if order.side == BUY else sells
        own_side[order.token] = own_side.get(order.token, 0) + order.quantity  # the order among its side's
        worst = net + own_side[order.token] if order.side == BUY else net - own_side[order.token]
        gross = 0
        for token in {p.token for p in engine.positions.positions.values()} | buys.keys() | sells.keys():
            t_net = engine.positions.net_quantity(token)
            size = max(abs(t_net + buys.get(token, 0)), abs(t_net - sells.get(token, 0)))
            t_inst = engine.instruments.get(token)
            factor = factor_of(t_inst.price_factor) if t_inst is not None else factor_of(market_pb2.PriceFactor())
            gross += value_paise(price if token == order.token else self.known_price(token, True), size, factor)
        limits = engine.limits
        return Values(abs(worst) > abs(net) or worst * net < 0,
                      value_paise(price, abs(worst), factor_of(inst.price_factor)), gross,
                      limits.max_position_value_paise, limits.max_gross_exposure_paise)

    def known_price(self, token: int, fallbacks: bool) -> int:
        """The last tick published, else risk's position marks (first fill price); with `fallbacks`, else the
        average price, else the highest price of the token's working orders."""
        rows = [p for p in self.w.risk.engine.positions.positions.values() if p.token == token]
        price = self.marks.get(token) or max((p.last_price_paise for p in rows), default=0)
        if price or not fallbacks:
            return price
        working = [self.decided[cid].order for cid, o in self.w.risk.engine.open_orders.items()
                   if o.token == token and cid in self.decided]
        return (max((p.average_price_paise for p in rows), default=0)
                or max((own_price(o) for o in working), default=0))

    async def check(self) -> None:
        if self.cancel_all:  # the broker answers at once: none is refused, none retried later
            assert non_square_off_open(self.w) == [], "the kill switch left orders working"
            self.cancel_all = False
        await check_broker_and_ledger(self)
        check_fills(self)
        check_risk_agrees(self)
        check_decisions(self)
        check_limits(self)


def risk_view(engine: RiskEngine, order: trading_pb2.OrderRequest) -> tuple[int, int]:
    product = product_of(order.product)
    pos = engine.positions.positions.get((order.token, product))
    pending = sum(
        o.remaining
        for o in engine.open_orders.values()
        if o.token == order.token and o.side == order.side and o.product == product
    )
    return (pos.net_quantity if pos is not None else 0), pending


def exposure(w: World, token: int) -> tuple[int, int]:
    """(long, short) the OMS's position in `token` reaches if every working order on that side fills."""
    net = w.oms.engine.positions.net_quantity(token)
    working = [u for u in w.oms.engine.open_orders() if u.request.token == token]
    buys = sum(u.request.quantity - u.filled_quantity for u in working if u.request.side == BUY)
    sells = sum(u.request.quantity - u.filled_quantity for u in working if u.request.side != BUY)
    return net + buys, sells - net


def own_price(order: trading_pb2.OrderRequest) -> int:
    """A limit or stop-limit order's limit price, a stop-market order's trigger; 0 for a market order."""
    if order.order_type in (trading_pb2.ORDER_TYPE_LIMIT, trading_pb2.ORDER_TYPE_STOP_LIMIT):
        return order.price_paise
    return order.trigger_price_paise if order.order_type == trading_pb2.ORDER_TYPE_STOP_MARKET else 0


def working_sides(engine: RiskEngine) -> tuple[dict[int, int], dict[int, int]]:
    """Risk's working quantity per token on the buy side and on the sell side."""
    buys: dict[int, int] = {}
    sells: dict[int, int] = {}
    for o in engine.open_orders.values():
        side = buys if o.side == BUY else sells
        side[o.token] = side.get(o.token, 0) + o.remaining
    return buys, sells


def non_square_off_open(w: World) -> list[str]:
    return [u.client_order_id for u in w.oms.engine.open_orders() if u.request.strategy_tag != SQUAREOFF_TAG]


async def check_broker_and_ledger(f: Watch) -> None:
    """Each accepted order reached the broker exactly once, is in the ledger exactly once, and the ledger row, the
    OMS book and the broker's order agree."""
    w = f.w
    twice = [cid for cid, n in Counter(o.client_order_id for o, _ in f.placed).items() if n > 1]
    assert not twice, f"client_order_id placed at the broker more than once: {twice}"
    at_broker = f.at_broker
    taken = {vo.id for vo in at_broker.values()}
    assert [vo.id for vo in w.broker.book.values() if vo.id not in taken] == [], "the broker holds orders never placed"
    accepted = [d.order.client_order_id for d in f.decisions if d.accepted]
    assert len(accepted) == len(set(accepted)), "risk accepted one client_order_id twice"
    rows = await w.ledger.list_orders(limit=1_000_000)
    # The paper broker's RMS refuses a delivery sell beyond the shares held (risk does not check holdings).
    refused = {r.client_order_id for r in rows if r.status == trading_pb2.ORDER_STATUS_REJECTED
               and r.reason.startswith("RMS:Rule: Check holdings") and not r.exchange_order_id}
    assert set(at_broker) == set(accepted) - refused, (
        f"accepted but not at the broker: {sorted(set(accepted) - refused - set(at_broker))}; "
        f"at the broker but never accepted: {sorted(set(at_broker) - set(accepted))}"
    )
    rows = [r for r in rows if r.client_order_id not in refused]
    in_ledger = Counter(r.client_order_id for r in rows)
    assert in_ledger == Counter(list(at_broker)), "ledger rows are not the broker's orders, once each"
    for row in rows:
        vo = at_broker[row.client_order_id]
        where = f"{row.client_order_id} ({vo.id})"
        assert row.exchange_order_id == vo.id, f"{where}: ledger has exchange id {row.exchange_order_id}"
        assert (row.status, row.filled_quantity) == (vo.status, vo.filled), (
            f"{where}: ledger {status_name(row.status)} filled {row.filled_quantity}, broker "
            f"{status_name(vo.status)} filled {vo.filled}"
        )
        assert w.oms.engine.lookup(row.client_order_id) == row, f"{where}: the OMS book differs from the ledger"


def check_fills(f: Watch) -> None:
    """No fill booked twice or lost: the ledger's fill events add up to each broker order, and the positions of
    the OMS and of risk are the sums of the broker's fills."""
    w = f.w
    filled: Counter[str] = Counter()
    for e in {(e.internal_id, e.sequence): e for e in w.ledger.events}.values():
        filled[e.client_order_id] += e.last_fill_quantity
    expected: Counter[tuple[int, int]] = Counter()
    for vo in f.at_broker.values():
        cid, req = vo.request.client_order_id, vo.request
        assert filled[cid] == vo.filled, f"{cid}: ledger fill events add up to {filled[cid]}, broker filled {vo.filled}"
        expected[(req.token, product_of(req.product))] += vo.filled if req.side == BUY else -vo.filled
    for name, book in (("OMS", w.oms.engine.positions), ("risk", w.risk.engine.positions)):
        held = {key: p.net_quantity for key, p in book.positions.items() if p.net_quantity}
        assert held == {k: v for k, v in expected.items() if v}, f"{name} positions {held} != broker fills {expected}"
    if not f.rolled:
        charges = sum(vo.charges_paise for vo in f.at_broker.values())
        assert w.oms.engine.positions.charges_paise() == charges, "OMS charges differ from the broker's"


def check_risk_agrees(f: Watch) -> None:
    """Once the bus is drained risk's open orders, fills and P&L are the OMS's, and its state follows the loss."""
    w = f.w
    oms = {u.client_order_id: u.request.quantity - u.filled_quantity for u in w.oms.engine.open_orders()}
    risk = {cid: o.remaining for cid, o in w.risk.engine.open_orders.items()}
    assert risk == oms, f"risk's open orders {risk} != the OMS's {oms}"
    assert w.risk.engine.snapshot().open_orders == len(oms)
    if f.rolled:
        return
    engine, book = w.risk.engine, w.oms.engine.positions
    assert (engine.positions.realised_pnl_paise(), engine.positions.charges_paise()) == (
        book.realised_pnl_paise(),
        book.charges_paise(),
    ), "risk's realised P&L or charges differ from the OMS's"
    # Marked at the last tick; a token never ticked at its first fill's price (PositionState.apply_fill).
    held = [(p, f.marks.get(p.token) or p.last_price_paise) for p in book.positions.values() if p.net_quantity]
    marked = sum(p.net_quantity * price - p.open_cost_paise for p, price in held if price)
    loss = book.charges_paise() - book.realised_pnl_paise() - marked
    assert -engine.daily_pnl_paise() == loss, "risk's daily loss differs from the OMS's book at the last ticks"
    lim = engine.limits
    due = HALTED if loss >= lim.daily_loss_halt_paise else REDUCING if loss >= lim.daily_loss_reducing_paise else 0
    if f.released_over_limit:
        due = min(due, REDUCING)
    assert engine.state >= due, f"daily loss {loss} is over a limit but risk is {state_name(engine.state)}"


def check_decisions(f: Watch) -> None:
    """Every signal decided once per delivery; every rejection says why; no order reached the broker that the
    trading state at its decision (or the kill switch when it arrived) forbids."""
    by_signal = Counter(d.signal_id for d in f.decisions if d.signal_id and d.strategy != SQUAREOFF_TAG)
    assert by_signal == f.published, "a signal was decided more or less than once per delivery"
    unexplained = [d for d in f.decisions if not d.accepted and not (d.reason_code and d.reason)]
    assert unexplained == [], f"rejections without a reason: {unexplained}"
    assert f.wrong_value_denials == [], f"denied for a value cap it was within: {f.wrong_value_denials}"
    for order, kill in f.placed:
        seen = f.decided[order.client_order_id]
        where = f"{order.client_order_id} decided in {state_name(seen.state)} (net {seen.net}, working {seen.pending})"
        square_off = order.strategy_tag == SQUAREOFF_TAG
        assert (square_off and seen.reduces) or seen.values is None or not seen.values.over(), (
            f"{where}: {seen.values.over() if seen.values else ''}")
        assert not kill or square_off, f"{where}: reached the broker while the kill switch was engaged"
        assert seen.state != HALTED or (seen.reduces and (square_off or not seen.kill)), (
            f"{where}: accepted while HALTED")
        assert seen.state != REDUCING or seen.reduces, f"{where}: accepted while REDUCING, but it does not reduce"
        assert not square_off or seen.reduces, f"{where}: a square-off order that does not only close"


def check_limits(f: Watch) -> None:
    """Position (with working orders, as check_position counts them) and open-order limits, end to end. A
    square-off order closes its product's position whatever it does to the token's net (another product's
    position may offset it): what it adds is allowed on top."""
    for token, caps in f.caps.items():
        long_cap, short_cap = caps[0] + f.square_offs[(token, BUY)], caps[1] + f.square_offs[(token, SELL)]
        long, short = exposure(f.w, token)
        assert long <= long_cap and short <= short_cap, (
            f"token {token}: exposure long {long} / short {short} past max_position_quantity "
            f"(allowed {long_cap} / {short_cap})"
        )
    # An exit that only shrank its position when accepted is not held back by the cap (it adds no exposure).
    working = [cid for cid in non_square_off_open(f.w) if not (cid in f.decided and f.decided[cid].reduces)]
    assert len(working) <= f.open_cap, f"{len(working)} open orders past max_open_orders {f.open_cap}"


def mis_left(w: World) -> list[str]:
    """MIS positions or working MIS orders anywhere: the OMS, risk, the broker."""
    left = [
        f"OMS position {k}: {p.net_quantity}"
        for k, p in w.oms.engine.positions.positions.items()
        if p.product == MIS and p.net_quantity
    ]
    left += [
        f"risk position {k}: {p.net_quantity}"
        for k, p in w.risk.engine.positions.positions.items()
        if p.product == MIS and p.net_quantity
    ]
    left += [
        f"working {vo.request.client_order_id}"
        for vo in w.broker.book.values()
        if product_of(vo.request.product) == MIS and vo.status not in TERMINAL
    ]
    return left
