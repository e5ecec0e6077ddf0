"""A strategy module restarted mid-session starts warm: the candles of the ticks already in market_ticks (embedded
PostgreSQL, written by ingestion's TickWriter) go into its indicators before it takes a live tick.

Real parts: the TickWriter, the SQL candles, a real Bus, the OMS's ListOrders servicer over a MemoryLedger.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import date

import asyncpg
import pytest

from services.ingestion.tick_writer import TickWriter
from services.oms.service import OrderService
from services.strategy.candles import MINUTE_NS
from services.strategy.config import StrategySettings
from services.strategy.engine import StrategyEngine, build_strategies
from services.strategy.module import StrategyModule
from services.strategy.warmup import StoredCandles
from shared import config as cfg
from shared import rpc
from shared.bus import Bus, Topic
from shared.clock import NS, ManualClock, ist_ns
from shared.contracts import ingestion_pb2, market_pb2, trading_pb2
from shared.db.config import DatabaseSettings
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments
from tests.helpers import eventually
from tests.strategy.test_restore import Oms

FRIDAY, MONDAY = date(2026, 1, 16), date(2026, 1, 19)  # the warm-up skips the weekend between them
M0915 = ist_ns(MONDAY, 9, 15)
SBIN, TCS = 3045, 11536
FALLING_THEN_JUMP = [100_00, 99_00, 98_00, 97_00, 96_00, 100_00]  # RSI(3) crosses 60 at the last close, above EMA(3)


def settings(params: dict, symbols: tuple[str, ...] = ("SBIN-EQ",), **more) -> StrategySettings:
    return cfg.load(StrategySettings, {"strategy": {"close_check_ms": 10, "close_grace_ms": 0, **more, "strategies": [
        {"name": "mom", "kind": "MOMENTUM_RSI", "symbols": list(symbols), "params": params}]}})


SMALL = {"rsi_period": 3, "ema_period": 3}


def minute_ticks(closes: list[int], start_ns: int = M0915, token: int = SBIN) -> list[market_pb2.Tick]:
    """One tick a minute at :05 with the given prices."""
    return [market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=start_ns + i * MINUTE_NS + 5 * NS,
                            ltp_paise=p, ltq=10) for i, p in enumerate(closes)]


def random_walk(seed: int, token: int, start_ns: int, minutes: int) -> list[market_pb2.Tick]:
    """A few ticks a minute, some minutes without any, with a growing day volume."""
    rng, price, volume, out = random.Random(seed), rng_price(seed), 0, []
    for m in range(minutes):
        if rng.random() < 0.1:
            continue  # a quiet minute: no candle
        for second in sorted(rng.sample(range(60), rng.randint(1, 5))):
            price = max(100, price + rng.randint(-40, 40) * 5)
            traded = rng.randint(1, 500)
            volume += traded
            out.append(market_pb2.Tick(token=token, exchange_segment="nse_cm", ltp_paise=price, ltq=traded,
                                       volume=volume, ts_ns=start_ns + m * MINUTE_NS + second * NS))
    return out


def rng_price(seed: int) -> int:
    return random.Random(-seed).randint(50_000, 400_000)


async def store(pool: asyncpg.Pool, ticks: list[market_pb2.Tick]) -> None:
    writer = TickWriter(pool, DatabaseSettings(max_tick_past_s=10**9), clock=ManualClock(M0915))
    writer.offer(market_pb2.TickBatch(ticks=ticks))
    assert await writer.flush() == len(ticks)


class Restarted:
    """A strategy module starting at `now_ns` on the stored ticks (history), with the OMS's orders behind it."""

    def __init__(self, strategy_settings: StrategySettings, now_ns: int, history, oms: Oms | None = None) -> None:
        self.bus = Bus()
        self.clock = ManualClock(now_ns)
        self.module = StrategyModule(self.bus, strategy_settings, self.clock, history)
        self.signals: list[trading_pb2.Signal] = []
        self.candles: list[market_pb2.Candle] = []

        async def list_instruments(request):
            return ingestion_pb2.ListInstrumentsResponse(instruments=nse_instruments())

        async def on_signal(signal):
            self.signals.append(signal)

        async def on_candles(batch):
            self.candles.extend(batch.candles)

        self.bus.handle(rpc.LIST_INSTRUMENTS, list_instruments)
        if oms is not None:
            self.bus.handle(rpc.LIST_ORDERS, OrderService(self.bus, None, _Holder(oms.ledger)).list_orders)
        self.bus.subscribe(Topic.SIGNALS, "test", on_signal)
        self.bus.subscribe(Topic.CANDLES, "test", on_candles)

    @property
    def strategy(self):
        return self.module.engine.strategies["mom"]

    async def feed(self, ticks: list[market_pb2.Tick]) -> None:
        self.bus.publish_nowait(Topic.TICKS, market_pb2.TickBatch(ticks=ticks))
        await eventually(lambda: self.bus.drain(within_s=0.0))


class _Holder:
    def __init__(self, ledger) -> None:
        self.ledger = ledger


@pytest.fixture
async def restarted():
    """restarted(settings, now_ns, history, oms) -> a started Restarted; stopped after the test."""
    running: list[tuple[Restarted, list[asyncio.Task]]] = []

    async def start(strategy_settings, now_ns, history, oms=None) -> Restarted:
        r = Restarted(strategy_settings, now_ns, history, oms)
        bus_task = asyncio.create_task(r.bus.run())
        running.append((r, [bus_task]))
        await r.module.start()
        running[-1][1].append(asyncio.create_task(r.module.run()))
        assert await r.bus.drain()
        return r

    yield start
    for _, tasks in running:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def live_twin(strategy_settings: StrategySettings, ticks: list[market_pb2.Tick], now_ns: int):
    """The same strategy in an engine that saw every tick live and closed the candles due at now_ns."""
    instruments = InstrumentBook(nse_instruments())
    engine = StrategyEngine(build_strategies(strategy_settings, instruments), instruments, ManualClock(now_ns))
    for i in range(0, len(ticks), 7):  # in batches, as the feed delivers them
        engine.on_ticks(ticks[i:i + 7])
    engine.close_due(now_ns)
    return engine.strategies["mom"], engine.candles


def indicators(strategy, token: int) -> tuple:
    state = strategy._state[token]
    return (list(strategy._closes[token]), state.rsi.value, state.prev_rsi, state.ema.value, state.close)


async def test_after_a_restart_the_indicators_are_those_of_a_strategy_that_saw_the_candles_live(db_pool, restarted):
    """RSI(14) and EMA(20) need 20 closes; Monday's twelve minutes hold fewer, so Friday's afternoon is read too
    (the weekend has none). The 09:27 candle is still open at 09:27:30: neither of the two has it as closed."""
    params = {"rsi_period": 14, "ema_period": 20}
    ticks = []
    for seed, token in ((1, SBIN), (2, TCS)):
        ticks += random_walk(seed, token, ist_ns(FRIDAY, 14, 50), 40)
    for seed, token in ((3, SBIN), (4, TCS)):
        ticks += random_walk(seed, token, M0915, 13)
    ticks.sort(key=lambda t: t.ts_ns)
    now = M0915 + 12 * MINUTE_NS + 30 * NS
    live_ticks = [t for t in ticks if t.ts_ns <= now]
    await store(db_pool, live_ticks)
    both = settings(params, ("SBIN-EQ", "TCS-EQ"))

    r = await restarted(both, now, StoredCandles(db_pool))

    twin, twin_candles = live_twin(both, live_ticks, now)
    for token in (SBIN, TCS):
        assert indicators(r.strategy, token) == indicators(twin, token)
        assert indicators(r.strategy, token)[1] is not None  # warm: RSI(14) has a value
        assert r.module.engine.candles.open_candle(token) == twin_candles.open_candle(token) is not None  # 09:27
    assert r.signals == []


async def test_a_restored_long_whose_exit_holds_at_the_last_close_is_exited_right_after_start(db_pool, restarted):
    """At 09:22:30 the last closed candle (09:21, 95) is below EMA(3): the long bought at 09:20 goes out at once,
    not after three more candles."""
    await store(db_pool, minute_ticks([*FALLING_THEN_JUMP, 95_00]))
    oms = Oms()
    await oms.order("entry", "mom", trading_pb2.SIDE_BUY, 1, M0915 + 5 * MINUTE_NS + 10 * NS)
    now = M0915 + 7 * MINUTE_NS + 30 * NS

    r = await restarted(settings(SMALL), now, StoredCandles(db_pool), oms)

    (sell,) = r.signals
    assert (sell.side, sell.quantity, sell.limit_price_paise, sell.product) == (
        trading_pb2.SIDE_SELL, 1, 95_00, trading_pb2.PRODUCT_MIS)
    assert sell.reason.startswith("exit long") and sell.signal_id == f"mom-{SBIN}-{now}-SELL"


async def test_a_restored_long_trails_from_the_best_stored_tick_since_its_entry(db_pool, restarted):
    """A long entered at 100.00 at 09:20:10 with a 1% trailing stop; the stored ticks rose to 104.00 at 09:21:05
    (and 105.00 at 09:20:01, before the entry: not its best). Before, a restart trailed from the entry again (a stop
    at 99.00, four rupees looser than before it); now from 104.00: 102.96. A live tick at 102.90 exits."""
    ticks = minute_ticks(FALLING_THEN_JUMP)
    ticks.insert(-1, market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=M0915 + 5 * MINUTE_NS + NS,
                                     ltp_paise=105_00, ltq=1))
    ticks += [market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=M0915 + 6 * MINUTE_NS + second * NS,
                              ltp_paise=price, ltq=1) for second, price in ((5, 104_00), (30, 103_50))]
    await store(db_pool, ticks)
    oms = Oms()
    await oms.order("entry", "mom", trading_pb2.SIDE_BUY, 1, M0915 + 5 * MINUTE_NS + 10 * NS)
    filled = await oms.ledger.get("entry")
    filled.average_price_paise, filled.sequence = 100_00, oms.next()
    await oms.ledger.record(filled, {})

    r = await restarted(settings({**SMALL, "trailing_stop_pct": 1}), M0915 + 7 * MINUTE_NS + 30 * NS,
                        StoredCandles(db_pool), oms)
    assert r.signals == []
    await r.feed([market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=M0915 + 7 * MINUTE_NS + 40 * NS,
                                  ltp_paise=102_90, ltq=1)])

    assert [(s.side, s.reason) for s in r.signals] == [(trading_pb2.SIDE_SELL, (
        "trailing stop 1%: tick ₹102.90, 1.06% under the best ₹104.00 since the entry ₹100.00"))]


async def test_the_warm_up_sends_no_entry_and_leaves_the_token_free_to_enter_live(db_pool, restarted):
    """The stored closes cross RSI 60 above the EMA at their last candle: that is history, not an entry now. The
    next live cross enters (warm at once, and the warm-up marked nothing pending)."""
    await store(db_pool, minute_ticks(FALLING_THEN_JUMP))
    r = await restarted(settings(SMALL), M0915 + 6 * MINUTE_NS + 1 * NS, StoredCandles(db_pool))
    assert r.signals == [] and r.strategy.position(SBIN) == 0

    r.clock.set(M0915 + 8 * MINUTE_NS)
    await r.feed(minute_ticks([99_00, 103_00, 103_00], start_ns=M0915 + 6 * MINUTE_NS))

    assert [(s.side, s.limit_price_paise) for s in r.signals] == [(trading_pb2.SIDE_BUY, 103_05)]


async def test_a_tick_of_a_minute_the_warm_up_fed_is_late_not_a_second_candle(db_pool, restarted):
    await store(db_pool, minute_ticks(FALLING_THEN_JUMP))
    r = await restarted(settings(SMALL), M0915 + 6 * MINUTE_NS + 1 * NS, StoredCandles(db_pool))

    # The 09:20 tick the writer had not stored yet, then the 09:21 minute and a tick closing it.
    await r.feed([*minute_ticks([101_00], start_ns=M0915 + 5 * MINUTE_NS),
                  *minute_ticks([97_00, 97_00], start_ns=M0915 + 6 * MINUTE_NS)])

    assert [(c.start_ns, c.close_paise) for c in r.candles] == [(M0915 + 6 * MINUTE_NS, 97_00)]
    assert r.module.engine.candles.late_ticks == 1
    assert list(r.strategy._closes[SBIN]) == [*FALLING_THEN_JUMP, 97_00]


@pytest.mark.parametrize("traded", [True, False], ids=["a strategy", "no strategy"])
async def test_the_candle_of_the_minute_in_progress_goes_on_from_its_stored_ticks(db_pool, restarted, traded):
    """Restarted at 09:21:30, the 09:21 candle was built from the live ticks alone: its open, high, low and volume
    those of the last half minute (the OMS's paper fills look at the high and low). It goes on from the stored ticks
    of the minute, for every instrument, traded or not, and with no strategy configured (manual paper trading)."""
    in_progress = [market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=M0915 + 6 * MINUTE_NS + s * NS,
                                   ltp_paise=p, ltq=10) for token in (SBIN, TCS) for s, p in
                   ((5, 100_00), (10, 104_00), (20, 97_00))]
    await store(db_pool, [*minute_ticks(FALLING_THEN_JUMP), *in_progress])
    no_strategy = cfg.load(StrategySettings, {"strategy": {"close_check_ms": 10, "close_grace_ms": 0,
                                                           "strategies": []}})
    r = await restarted(settings(SMALL) if traded else no_strategy, M0915 + 6 * MINUTE_NS + 30 * NS,
                        StoredCandles(db_pool))

    live = [market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=M0915 + 6 * MINUTE_NS + 40 * NS,
                            ltp_paise=99_00, ltq=10) for token in (SBIN, TCS)]
    await r.feed([*live, *minute_ticks([99_50], start_ns=M0915 + 7 * MINUTE_NS),
                  *minute_ticks([99_50], start_ns=M0915 + 7 * MINUTE_NS, token=TCS)])

    assert sorted((c.token, c.start_ns, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume,
                   c.tick_count) for c in r.candles) == [
        (token, M0915 + 6 * MINUTE_NS, 100_00, 104_00, 97_00, 99_00, 40, 4) for token in sorted((SBIN, TCS))]
    if traded:
        assert list(r.strategy._closes[SBIN]) == [*FALLING_THEN_JUMP, 99_00]


def vtick(minute: int, second: int, day_volume: int, ltq: int, token: int = SBIN) -> market_pb2.Tick:
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=M0915 + minute * MINUTE_NS + second * NS,
                           ltp_paise=100_00, ltq=ltq, volume=day_volume)


@pytest.mark.parametrize("minute", [6, 7], ids=["its minute's ticks stored", "none of its minute stored"])
async def test_after_a_restart_a_candle_counts_what_traded_since_the_last_stored_tick(db_pool, restarted, minute):
    """The first live tick counted its own `ltq`, as a day's first tick does: what traded between the last stored tick
    and it was missing from the candle's volume (the paper broker fills at most a candle's volume). Its volume is
    the day volume's growth over the minute, as without a restart."""
    await store(db_pool, [vtick(5, 5, 1_000, 10), vtick(6, 5, 1_050, 10), vtick(6, 10, 1_100, 10)])
    r = await restarted(settings(SMALL), M0915 + minute * MINUTE_NS + 30 * NS, StoredCandles(db_pool))

    await r.feed([vtick(minute, 40, 1_500, 20), vtick(minute + 1, 5, 1_600, 5)])

    (candle,) = r.candles
    assert (candle.start_ns, candle.volume) == (M0915 + minute * MINUTE_NS, 500 if minute == 6 else 400)


async def test_so_does_the_candle_of_an_instrument_no_strategy_trades(db_pool, restarted):
    """The paper broker fills from every instrument's candles; one no strategy trades, with no tick stored in the
    minute in progress, has no candle the warm start resumes: its first live tick's candle takes the day volume."""
    await store(db_pool, [vtick(5, 5, 1_000, 10, TCS), vtick(6, 10, 1_100, 10, TCS)])
    r = await restarted(settings(SMALL), M0915 + 7 * MINUTE_NS + 30 * NS, StoredCandles(db_pool))

    await r.feed([vtick(7, 40, 1_500, 20, TCS), vtick(8, 5, 1_600, 5, TCS)])

    (candle,) = r.candles
    assert (candle.token, candle.start_ns, candle.volume) == (TCS, M0915 + 7 * MINUTE_NS, 400)


async def test_the_minutes_that_close_while_the_candles_are_read_are_read_too(db_pool, restarted):
    await store(db_pool, minute_ticks(FALLING_THEN_JUMP))
    stored = StoredCandles(db_pool)
    clock_of: list[ManualClock] = []

    class MinuteTurns:
        """The stored candles, read as the clock passes 09:21 (a slow first read)."""

        async def candles(self, token, start_ns, end_ns):
            clock_of[0].set(M0915 + 6 * MINUTE_NS + 5 * NS)
            return await stored.candles(token, start_ns, end_ns)

        async def day_volume(self, token, start_ns, end_ns):
            return await stored.day_volume(token, start_ns, end_ns)

    r = Restarted(settings(SMALL), M0915 + 5 * MINUTE_NS + 30 * NS, MinuteTurns())
    clock_of.append(r.clock)
    await r.module.start()

    assert list(r.strategy._closes[SBIN]) == FALLING_THEN_JUMP  # 09:20 closed during the read: fed as well


async def test_without_a_database_the_strategies_start_cold_and_say_so_once(restarted, caplog):
    caplog.set_level(logging.INFO, logger="services.strategy.module")

    r = await restarted(settings(SMALL), M0915 + 6 * MINUTE_NS, None)

    cold = [rec for rec in caplog.records if rec.getMessage().startswith("strategies start cold")]
    assert [(rec.levelname, rec.reason) for rec in cold] == [
        ("INFO", "no stored ticks to read (no database)")]
    assert r.strategy._state == {}


async def test_a_failing_read_starts_the_strategies_cold_with_a_warning(database, restarted, caplog):
    pool = await asyncpg.create_pool(database, min_size=0, max_size=1)
    await pool.close()  # every read fails: the pool is closed

    r = await restarted(settings(SMALL), M0915 + 6 * MINUTE_NS, StoredCandles(pool))

    (warning,) = [rec for rec in caplog.records if rec.levelname == "WARNING"]
    assert warning.getMessage() == "strategies start cold: the stored candles could not be read"
    assert warning.error.startswith("InterfaceError")
    assert r.strategy._state == {} and r.module.ready.is_set()


async def test_a_read_slower_than_the_timeout_starts_the_strategies_cold_with_a_warning(db_pool, restarted, caplog):
    await store(db_pool, minute_ticks(FALLING_THEN_JUMP))
    async with db_pool.acquire() as locker, locker.transaction():
        await locker.execute("LOCK TABLE market_ticks IN ACCESS EXCLUSIVE MODE")  # the read waits behind it

        r = await restarted(settings(SMALL, warm_up_timeout_s=0.3), M0915 + 6 * MINUTE_NS + 1 * NS,
                            StoredCandles(db_pool))

    (warning,) = [rec for rec in caplog.records if rec.levelname == "WARNING"]
    assert warning.getMessage() == ("strategies start cold: reading the stored candles took longer than "
                                    "warm_up_timeout_s")
    assert r.strategy._state == {} and r.module.ready.is_set()


async def test_a_failing_read_of_the_best_prices_leaves_the_trailing_stop_at_the_entry_with_a_warning(
        database, restarted, caplog):
    pool = await asyncpg.create_pool(database, min_size=0, max_size=1)
    await pool.close()  # every read fails (the warm-up's too: it starts cold and says so)
    oms = Oms()
    await oms.order("entry", "mom", trading_pb2.SIDE_BUY, 1, M0915 + 5 * MINUTE_NS + 10 * NS)

    r = await restarted(settings({**SMALL, "trailing_stop_pct": 1}), M0915 + 6 * MINUTE_NS, StoredCandles(pool), oms)

    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert warnings[-1] == ("the best prices since the restored entries could not be read: trailing stops trail "
                            "from the entry prices")
    assert r.strategy.position(SBIN) == 1 and r.module.ready.is_set()
