"""FeedDelay's "DELAY_WINDOWS windows in a row" skips windows without a trade sample, so three stale samples
minutes apart (each reconnect's resent snapshot of a thinly traded watch list, whose trades are seconds old) make
one "Feed delayed" episode although no two consecutive measured seconds were late."""
from services.ingestion.module import FeedDelay

NS = 10**9


def test_stale_samples_minutes_apart_are_not_a_delay():
    d = FeedDelay(3.0)
    flips = []
    for _ in range(3):  # a stale sample (20 s old trade in a resent snapshot) ...
        d.saw(20 * NS)
        flips.append(d.end_window())
        for _ in range(120):  # ... then two minutes of quiet (no trades on an illiquid list)
            flips.append(d.end_window())
    assert not d.delayed, f"'Feed delayed' told after samples minutes apart: {[f for f in flips if f]}"
