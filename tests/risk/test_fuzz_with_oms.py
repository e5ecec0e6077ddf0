"""Seeded fuzz: the RiskModule deciding signals for the real OmsModule, VirtualBroker and MemoryLedger on one Bus.

Random signals (any side, size, type, product; some past the limits, some off the tick grid, some replayed),
ticks and candles that fill them, cancels, the kill switch, replaced limits (small daily loss limits bring
REDUCING and HALTED) and the clock past the square-off time; after every step, the bus drained, the broker, the
ledger, the OMS and risk's own view are checked against each other (tests/risk/oms_rig.py). The day then ends:
MIS positions squared off, and at the next day's first candle every order is over. A failure prints its seed and
steps; `pytest tests/risk/test_fuzz_with_oms.py -k 'seed-17'` replays one.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from services.oms.ledger import TERMINAL
from services.risk.config import Limits
from services.risk.engine import ACTIVE, REDUCING, RiskEngine
from shared import rpc
from shared.bus import Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import market_pb2, oms_pb2, risk_pb2, trading_pb2
from shared.errors import NeoPulseError
from shared.marketdata import nse_instruments
from tests.risk.factories import DAY, RELIANCE, fill, instruments, limits
from tests.risk.oms_rig import Watch, mis_left
from tests.risk.test_fuzz_square_off import SYMBOLS, World
from tests.risk.test_fuzz_square_off import world as world  # the fixture: risk + OMS + VirtualBroker on one Bus

BUY, SELL = trading_pb2.SIDE_BUY, trading_pb2.SIDE_SELL
MIS, NRML, CNC = trading_pb2.PRODUCT_MIS, trading_pb2.PRODUCT_NRML, trading_pb2.PRODUCT_CNC
MARKET, LIMIT = trading_pb2.ORDER_TYPE_MARKET, trading_pb2.ORDER_TYPE_LIMIT
STOP_LIMIT, STOP_MARKET = trading_pb2.ORDER_TYPE_STOP_LIMIT, trading_pb2.ORDER_TYPE_STOP_MARKET
PRICED, TRIGGERED = (LIMIT, STOP_LIMIT), (STOP_LIMIT, STOP_MARKET)
SYMBOL_OF = {i.token: i.symbol for i in nse_instruments(list(SYMBOLS))}
SEEDS = range(500)  # ~25 s; seeds 270 and 298 found the square-off bug below
STEPS = 100


def random_limits(rng: random.Random) -> Limits:
    reducing = rng.choice([100_00, 1_000_00, 5_000_00, 10**9])  # Rs 100 is a few fills' charges
    return limits(
        max_order_quantity=rng.choice([10, 50, 500]),
        max_order_value_paise=rng.choice([50_000_00, 10**11]),
        max_position_quantity=rng.choice([20, 60, 200, 5000]),
        max_open_orders=rng.choice([2, 5, 50]),
        max_orders_per_second=rng.choice([1.0, 10_000.0]),
        daily_loss_reducing_paise=reducing,
        daily_loss_halt_paise=reducing * rng.choice([1, 3, 10, 10]),
        price_band_bps=rng.choice([0, 200, 500]),
        square_off_time_ist=rng.choice(["15:15", "15:15", "14:45"]),
        enforce_market_hours=rng.random() < 0.7,
        max_position_value_paise=rng.choice([0, 0, 25_000_00, 1_00_000_00, 10**11]),
        max_gross_exposure_paise=rng.choice([0, 0, 1_00_000_00, 5_00_000_00, 10**12]),
    )


def product_name(product: int) -> str:
    return trading_pb2.Product.Name(product).removeprefix("PRODUCT_")  # type: ignore[arg-type]


def describe(s: trading_pb2.Signal) -> str:
    prices = f" @{s.limit_price_paise}" if s.order_type in PRICED else ""
    prices += f" trigger {s.trigger_price_paise}" if s.order_type in TRIGGERED else ""
    return (
        f"{s.signal_id} {trading_pb2.Side.Name(s.side)[5:]} {s.quantity} {s.symbol} "
        f"{trading_pb2.OrderType.Name(s.order_type)[11:]}{prices} {product_name(s.product)}"
    )


class Fuzz:
    """One seed's random day; each step returns what it did, for the step list a failure prints."""

    def __init__(self, w: World, seed: int) -> None:
        self.w, self.seed, self.rng = w, seed, random.Random(seed)
        self.watch = Watch(w)
        self.steps: list[str] = []
        self.signals: list[trading_pb2.Signal] = []

    async def run(self, steps: int) -> None:
        self.watch.hook()
        await self.set_limits()
        for token in self.w.prices:
            await self.w.tick(token)
        ops = [
            (self.signal, 30),
            (self.manual, 4),
            (self.replay, 2),
            (self.tick, 14),
            (self.candle, 14),
            (self.cancel, 8),
            (self.kill_switch, 4),
            (self.set_limits, 6),
            (self.timer, 8),
            (self.clock, 6),
            (self.square_off, 2),
        ]
        funcs, weights = zip(*ops, strict=True)
        for _ in range(steps):
            await self.step(self.rng.choices(funcs, weights)[0])

    async def step(self, op: Callable[[], Awaitable[str]]) -> None:
        seen = len(self.watch.decisions)
        note = await op()
        await self.w.settle()
        decided = [d.reason_code or "accepted" for d in self.watch.decisions[seen:]]
        self.steps.append(f"{len(self.steps)}: {op.__name__} {note}" + (f" -> {', '.join(decided)}" if decided else ""))
        await self.watch.check()

    # -- the steps ----------------------------------------------------------------------------------------------
    async def signal(self) -> str:
        notes = []
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):  # a burst is decided before the first one's fills return
            signal = self.new_signal()
            notes.append(describe(signal))
            await self.publish(signal)
        return "; ".join(notes)

    def new_signal(self) -> trading_pb2.Signal:
        rng, w = self.rng, self.w
        token, product = rng.choice(list(w.prices)), rng.choices([MIS, NRML, CNC], [6, 1, 1])[0]
        held = w.oms.engine.positions.positions.get((token, product))
        net, lim = (held.net_quantity if held else 0), w.risk.engine.limits
        closing = 0.4 if w.risk.engine.state == ACTIVE else 0.8  # REDUCING and HALTED pass little else
        if net and rng.random() < closing:  # a closing order, sometimes a little more or less than the position
            side, quantity = (SELL if net > 0 else BUY), abs(net) + rng.choice([0, 0, -1, 1])
        else:
            side = rng.choice([BUY, SELL])
            quantity = rng.choice(
                [
                    1,
                    5,
                    20,
                    60,
                    lim.max_order_quantity,
                    lim.max_order_quantity + 1,
                    lim.max_position_quantity,
                    rng.randint(1, 300),
                ]
            )
        order_type = rng.choice([MARKET, MARKET, LIMIT, LIMIT, STOP_LIMIT, STOP_MARKET])
        px = w.prices[token]
        price, trigger = (max(5, px + rng.randint(-30, 30) * 5) for _ in range(2))
        if rng.random() < 0.08:
            price += rng.randint(1, 4)  # off the 5-paise tick grid
        if rng.random() < 0.08:
            price, trigger = (px * rng.choice([95, 105]) // 100 // 5 * 5 for _ in range(2))  # outside a price band
        self.signals.append(
            trading_pb2.Signal(
                signal_id=f"fz{self.seed}-{len(self.signals)}",
                strategy="FUZZ",
                token=token,
                exchange_segment="nse_cm",
                symbol=SYMBOL_OF[token],
                side=side,
                quantity=max(quantity, rng.choice([0, 1])),
                order_type=order_type,
                limit_price_paise=price if order_type in PRICED else 0,
                product=product,
                trigger_price_paise=trigger if order_type in TRIGGERED else 0,
                ts_ns=w.clock.now_ns(),
            )
        )
        return self.signals[-1]

    async def publish(self, signal: trading_pb2.Signal) -> None:
        self.watch.published[signal.signal_id] += 1
        await self.w.bus.publish(Topic.SIGNALS, signal)

    async def manual(self) -> str:
        """A manual market order (SubmitOrder); tagged SQUAREOFF, it may only close, and passes the caps."""
        rng, w = self.rng, self.w
        token, product = rng.choice(list(w.prices)), rng.choice([MIS, MIS, NRML])
        held = w.oms.engine.positions.positions.get((token, product))
        net = held.net_quantity if held else 0
        side = (SELL if net > 0 else BUY) if net and rng.random() < 0.7 else rng.choice([BUY, SELL])
        quantity = max(1, abs(net) + rng.choice([0, 0, -1, 1, 5]) if net else rng.randint(1, 60))
        tag = rng.choice(["SQUAREOFF", "MANUAL"])
        order = trading_pb2.OrderRequest(
            token=token, side=side, quantity=quantity, order_type=MARKET, product=product, strategy_tag=tag
        )
        what = f"{tag} {trading_pb2.Side.Name(side)[5:]} {quantity} {SYMBOL_OF[token]} {product_name(product)}"
        try:
            await w.bus.call(rpc.SUBMIT_ORDER, risk_pb2.SubmitOrderRequest(order=order))
        except NeoPulseError as exc:
            return f"{what} refused: {type(exc).__name__}"
        return what

    async def replay(self) -> str:
        """A signal delivered again (a resumed stream): a duplicate, never a second order."""
        if not self.signals:
            return "nothing to replay"
        signal = self.rng.choice(self.signals)
        await self.publish(signal)
        return describe(signal)

    async def tick(self) -> str:
        token = self.rng.choice(list(self.w.prices))
        px = self.w.prices[token]
        move = self.rng.choice([0, 5, 50, px // 100 // 5 * 5, px // 30 // 5 * 5])
        self.w.prices[token] = max(100_00, px + self.rng.choice([-1, 1]) * move)
        await self.w.tick(token)  # no tick for the candles-only token
        return f"{SYMBOL_OF[token]} {self.w.prices[token]}"

    async def candle(self) -> str:
        token = self.rng.choice(list(self.w.prices))
        self.w.clock.advance(self.rng.randint(2, 60))
        await self.w.candle(token, self.rng)
        return f"{SYMBOL_OF[token]} closes {self.w.prices[token]}"

    async def cancel(self) -> str:
        """A working order mostly; sometimes one already over (refused) or an id no one knows."""
        orders = self.w.oms.engine.orders.values()
        working = sorted(u.client_order_id for u in orders if u.status not in TERMINAL)
        if not working or self.rng.random() < 0.2:
            working = [*sorted(u.client_order_id for u in orders), "no-such-order"]
        cid = self.rng.choice(working)
        try:
            await self.w.bus.call(rpc.CANCEL_ORDER, oms_pb2.CancelOrderRequest(order_id=cid))
        except NeoPulseError as exc:
            return f"{cid} refused: {exc}"
        return cid

    async def kill_switch(self) -> str:
        engaged = self.rng.random() < (0.2 if self.watch.kill else 0.4)
        cancel = self.rng.random() < 0.6
        self.watch.kill = self.watch.kill or engaged  # engaged from the call on; released once it returns
        await self.w.bus.call(
            rpc.SET_KILL_SWITCH,
            risk_pb2.SetKillSwitchRequest(engaged=engaged, reason="fuzz", cancel_open_orders=engaged and cancel),
        )
        self.watch.kill, self.watch.cancel_all = engaged, engaged and cancel
        self.watch.released_over_limit |= self.w.risk.engine.state == REDUCING
        return f"{'engaged' if engaged else 'released'}{' + cancel' if engaged and cancel else ''}"

    async def set_limits(self) -> str:
        """New limits; sometimes a daily loss limit just under today's loss, so that REDUCING starts at once."""
        new, loss = random_limits(self.rng), -self.w.risk.engine.daily_pnl_paise()
        if loss > 0 and self.rng.random() < 0.3:
            new = new.model_copy(update={"daily_loss_reducing_paise": loss, "daily_loss_halt_paise": loss * 10})
        await self.w.bus.call(rpc.SET_RISK_LIMITS, risk_pb2.SetRiskLimitsRequest(limits=new.to_proto()))
        self.watch.limits_replaced()
        return str(new.model_dump())

    async def timer(self) -> str:
        await self.w.risk.tick_timer()
        return ""

    async def clock(self) -> str:
        self.w.clock.advance(self.rng.choice([0.2, 1, 5, 30]))
        return ""

    async def square_off(self) -> str:
        """The clock to just before or after 15:15 (never past 15:17: the market closes at 15:30)."""
        target = ist_ns(DAY, 15, 14, 30) + self.rng.randint(0, 150) * NS
        self.w.clock.set(max(self.w.clock.now_ns() + NS, target))
        return "to 15:14:30 + up to 150 s"

    # -- the end of the day -------------------------------------------------------------------------------------
    async def close_day(self) -> None:
        """Past square-off with candles and the timer: no MIS left. The next day's first candles expire every DAY
        order at the broker: nothing is left working anywhere."""
        self.w.clock.set(max(self.w.clock.now_ns() + NS, ist_ns(DAY, 15, 15, 30)))
        for _ in range(30):
            self.w.clock.advance(self.rng.choice([1, 2, 5, 10]))
            for token in self.w.prices:
                if self.rng.random() < 0.6:
                    await self.w.candle(token, self.rng)
                await self.w.tick(token)
            await self.step(self.timer)
        assert mis_left(self.w) == [], "MIS left after square-off"
        self.w.clock.set(ist_ns(DAY + timedelta(days=1), 9, 20))
        self.watch.rolled = True
        for token in self.w.prices:
            await self.w.candle(token, self.rng)
        await self.step(self.timer)
        working = [u.client_order_id for u in self.w.oms.engine.open_orders()]
        working += [vo.id for vo in self.w.broker.book.values() if vo.status not in TERMINAL]
        assert working == [] and self.w.risk.engine.open_orders == {}, f"still working the next day: {working}"


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
async def test_risk_and_the_oms_agree_on_every_order_and_fill(world: World, seed: int) -> None:
    fuzz = Fuzz(world, seed)
    try:
        await fuzz.run(STEPS)
        await fuzz.close_day()
    except AssertionError as exc:
        steps = "\n".join(fuzz.steps)
        raise AssertionError(f"seed {seed}: {exc}\nsteps:\n{steps}") from exc


# -- shrunk cases -------------------------------------------------------------------------------------------------
def test_the_square_off_of_an_mis_short_is_not_refused_for_a_long_in_another_product(clock: ManualClock) -> None:
    """Seeds 270 and 298: an MIS position and an opposite one in another product (NRML) in one token, the net
    at max_position_quantity. The square-off closing the MIS short takes the token's net over the limit, so
    check_position refused it (MAX_POSITION_QUANTITY) at square-off time and at every retry: the MIS short stayed
    open for the broker's own square-off. Closing is exempt from the position limit as it is from the quantity,
    value and open-order caps (fix proposed in /tmp/h1/fix-1.patch)."""
    engine = RiskEngine(limits(max_position_quantity=20), clock, instruments())
    engine.on_order_update(fill(BUY, 25, 1290_00, product=NRML))
    engine.on_order_update(fill(SELL, 5, 1290_00))  # MIS: the net is 20
    engine.on_ticks([market_pb2.Tick(token=RELIANCE, ltp_paise=1290_00)])
    clock.set(ist_ns(DAY, 15, 15))

    [square_off] = engine.square_off_due()
    decision = engine.decide(square_off)

    assert (decision.accepted, decision.reason_code, square_off.side) == (True, "", BUY)
