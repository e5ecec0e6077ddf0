"""A market picture whose counts are shifted by one level but still add up to the rows carried (4 + 6 over 5 + 5
rows) passes both new checks: the SDK deals the 5th bid to the asks, so the tick's best ask is BELOW its best bid
(a crossed touch). A paper MARKET BUY fills at the touch: 1,289.75 while the market asks 1,290.05."""
import struct

from tests.ingestion.test_fuzz_feed import MP, Harness
from tests.ingestion.test_fuzz_feed import harness as harness
from tests.ingestion.test_review2_feed_depth import picture, seen


def test_counts_shifted_by_a_level_give_a_crossed_touch(harness: Harness):
    pkt = picture(buy_n=4)
    struct.pack_into("<I", pkt, MP["sell_n"], 6)  # 4 + 6 = 10 = the rows carried: not "miscounted"

    [got] = harness.feed(bytes(pkt))

    # Either the depth is dropped, or at least the touch is not crossed (bid < ask).
    assert seen(got) == (129_000, 0, 0, 0, 0) or got.bid_paise < got.ask_paise, (
        f"crossed touch kept: bid {got.bid_paise} ask {got.ask_paise}, asks {[a.price_paise for a in got.asks]}")
