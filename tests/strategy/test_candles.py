"""Candles from ticks: IST minute boundaries, OHLCV, gaps, the close timer and out-of-order ticks."""

from datetime import date

from services.strategy.candles import CandleBuilder
from shared.clock import NS, ist_ns
from shared.contracts import market_pb2

DAY = date(2026, 1, 20)
T0915 = ist_ns(DAY, 9, 15)
MS = 1_000_000
SBIN = 3045


def tick(ts_ns, ltp, ltq=1, token=SBIN, recv_ns=0):
    return market_pb2.Tick(token=token, exchange_segment="nse_cm", ts_ns=ts_ns, ltp_paise=ltp, ltq=ltq,
                           recv_ns=recv_ns)


def ohlcv(c):
    return (c.start_ns, c.open_paise, c.high_paise, c.low_paise, c.close_paise, c.volume, c.tick_count)


def test_a_tick_at_091559_999_stays_in_the_0915_candle_and_091600_closes_it():
    builder = CandleBuilder({SBIN: "SBIN-EQ"})
    assert builder.on_ticks([tick(T0915, 81000), tick(T0915 + 59_999 * MS, 81005)]) == []
    closed = builder.on_ticks([tick(T0915 + 60 * NS, 81010, recv_ns=777)])
    assert [(ohlcv(c), recv) for c, recv in closed] == [((T0915, 81000, 81005, 81000, 81005, 2, 2), 777)]
    assert closed[0][0].symbol == "SBIN-EQ" and closed[0][0].exchange_segment == "nse_cm"
    assert builder.open_candle(SBIN).start_ns == T0915 + 60 * NS


def test_candle_has_open_high_low_close_and_volume_summed_from_ltq():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 1 * NS, 100, 5), tick(T0915 + 2 * NS, 120, 10), tick(T0915 + 3 * NS, 90, 1),
                      tick(T0915 + 4 * NS, 110, 25)])
    (candle, _), = builder.on_ticks([tick(T0915 + 61 * NS, 111)])
    assert ohlcv(candle) == (T0915, 100, 120, 90, 110, 41, 4)


def test_minutes_without_ticks_produce_no_candle():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915, 100)])
    closed = builder.on_ticks([tick(T0915 + 3 * 60 * NS, 105)])  # 09:16 and 09:17 had no ticks
    assert [c.start_ns for c, _ in closed] == [T0915]
    (later, _), = builder.on_ticks([tick(T0915 + 4 * 60 * NS, 106)])
    assert later.start_ns == T0915 + 3 * 60 * NS


def test_each_token_has_its_own_candle():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915, 100, token=1), tick(T0915, 200, token=2)])
    closed = builder.on_ticks([tick(T0915 + 60 * NS, 101, token=1)])
    assert [(c.token, c.close_paise) for c, _ in closed] == [(1, 100)]
    assert builder.open_candle(2).close_paise == 200


def test_the_timer_closes_a_quiet_instruments_candle_once_its_minute_has_ended():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 10 * NS, 100)])
    assert builder.close_due(T0915 + 59 * NS) == []
    closed = builder.close_due(T0915 + 60 * NS)
    assert [(c.start_ns, c.close_paise, recv) for c, recv in closed] == [(T0915, 100, 0)]
    assert builder.close_due(T0915 + 120 * NS) == []
    assert builder.open_candle(SBIN) is None


def test_a_tick_of_the_next_minute_after_a_timer_close_opens_a_new_candle_without_closing_again():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915, 100)])
    builder.close_due(T0915 + 61 * NS)
    assert builder.on_ticks([tick(T0915 + 62 * NS, 105)]) == []
    assert builder.open_candle(SBIN).open_paise == 105


def test_ticks_older_than_the_open_minute_are_counted_and_ignored():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915 + 65 * NS, 100)])
    closed = builder.on_ticks([tick(T0915 + 30 * NS, 999), tick(T0915 + 70 * NS, 101)])
    assert closed == []
    assert builder.late_ticks == 1
    assert (builder.open_candle(SBIN).high_paise, builder.open_candle(SBIN).tick_count) == (101, 2)


def test_a_late_tick_for_a_minute_the_timer_already_closed_is_counted_and_ignored():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915, 100)])
    builder.close_due(T0915 + 61 * NS)
    assert builder.on_ticks([tick(T0915 + 59 * NS, 120)]) == []
    assert builder.late_ticks == 1
    assert builder.open_candle(SBIN) is None


def test_closed_candles_are_gathered_in_one_batch_that_take_batch_hands_over_and_renews():
    builder = CandleBuilder()
    builder.on_ticks([tick(T0915, 100, token=1), tick(T0915, 200, token=2)])
    closed = builder.on_ticks([tick(T0915 + 60 * NS, 101, token=1), tick(T0915 + 60 * NS, 201, token=2)])
    builder.open_candle(1)  # inspecting an open candle adds nothing to the batch

    batch = builder.take_batch()

    assert [ohlcv(c) for c in batch.candles] == [ohlcv(c) for c, _ in closed]
    assert [c.token for c in batch.candles] == [1, 2]
    assert len(builder.take_batch().candles) == 0


def vtick(second, day_volume, ltq=100):
    return market_pb2.Tick(token=SBIN, exchange_segment="nse_cm", ts_ns=T0915 + second * NS, ltp_paise=500_00,
                           ltq=ltq, volume=day_volume)


def test_a_newer_tick_with_a_lower_day_volume_rebases_so_later_candles_count_their_trades():
    """Ingestion takes the feed's lower volume after a corrupt high one (its stale-volume reset)."""
    builder = CandleBuilder()
    builder.on_ticks([vtick(0, 1_000), vtick(10, 1_100), vtick(20, 990_000)])  # 09:15: a corrupt day volume
    builder.on_ticks([vtick(70, 1_200), vtick(80, 1_300), vtick(90, 1_400)])  # 09:16: the corrected volume

    closed = builder.on_ticks([vtick(130, 1_600)]) + builder.on_ticks([vtick(190, 1_800)])

    assert [c.volume for c, _ in closed] == [100 + 100 + 100, 200]  # 09:16: the first one's ltq, then growth


def test_a_late_tick_with_a_lower_day_volume_adds_nothing_and_keeps_the_base():
    builder = CandleBuilder()
    builder.on_ticks([vtick(5, 1_000), vtick(6, 1_200), vtick(4, 1_100)])  # the 4 s tick arrives last

    (candle, _), = builder.on_ticks([vtick(61, 1_300)])

    assert candle.volume == 100 + 200


def test_a_lower_day_volume_of_the_same_second_as_a_newer_tick_repeating_the_held_one_is_late_not_a_correction():
    """Ingestion's rule: a lower day volume not newer than the last tick it passed on (a quote update repeating the
    held volume included) is stale; the builder held the time of the tick that first carried it and re-based."""
    builder = CandleBuilder()
    builder.on_ticks([vtick(1, 1_000), vtick(5, 1_000, ltq=0), vtick(5, 40, ltq=10), vtick(10, 1_050)])

    (candle, _), = builder.on_ticks([vtick(61, 1_060)])

    assert candle.volume == 100 + 50  # the first tick's ltq, then the growth to 1,050; the 40 adds nothing


def test_a_day_volume_held_from_the_stored_ticks_never_replaces_one_the_live_ticks_gave():
    """A warm start holds the day volume its stored ticks reached (hold_day_volume): not once a live tick of the day
    gave the token's bar one, which is newer."""
    builder = CandleBuilder()
    builder.on_ticks([vtick(0, 1_000)])  # live first: its ltq, and the day volume held from it
    builder.hold_day_volume(SBIN, 900, T0915 - NS)
    builder.on_ticks([vtick(10, 1_100)])

    assert builder.open_candle(SBIN).volume == 100 + 100
