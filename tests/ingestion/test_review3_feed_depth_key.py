"""Two pictures of one instrument with the same (ltt, last_update_time, volume) in one frame, a well-formed one
first and then a miscounted one (4 + 5 counts over 5 + 5 rows, its asks look ordered): _drop_untrusted_depth
matches by that key, so it strips the GOOD picture's depth and lets the miscounted one through with the 5th bid
dealt to the asks (a crossed touch)."""
import struct

from tests.ingestion.test_fuzz_feed import MP, Harness
from tests.ingestion.test_fuzz_feed import harness as harness
from tests.ingestion.test_review2_feed_depth import picture


def test_the_miscounted_picture_loses_its_depth_not_its_well_formed_neighbour(harness: Harness):
    good = picture()
    bad = picture(buy_n=4)  # 4 + 5 counts, 10 rows carried: miscounted
    # A depth-only change in the same second: the second picture's best bid quantity differs.
    struct.pack_into("<q", bad, MP["row0"], 999)

    got = harness.feed(bytes(good) + bytes(bad))

    assert len(got) == 2
    first, second = got
    assert len(first.bids) == 5, "the well-formed picture lost its depth"
    assert len(second.asks) == 0 and second.ask_paise == 0, (
        f"the miscounted picture kept its depth: bid {second.bid_paise} ask {second.ask_paise}")


def test_the_miscounted_neighbour_keeps_a_crossed_touch(harness: Harness):
    good = picture()
    bad = picture(buy_n=4)
    struct.pack_into("<q", bad, MP["row0"], 999)

    _, second = harness.feed(bytes(good) + bytes(bad))

    assert not (second.ask_paise and second.ask_paise <= second.bid_paise), (
        f"crossed touch delivered: bid {second.bid_paise} ask {second.ask_paise}")
