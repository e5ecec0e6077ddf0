"""The start-up heap is frozen out of the collector's way, and every collector pause is timed."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from shared import heap


def _pauses(generation: int) -> float:
    return REGISTRY.get_sample_value("neopulse_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_settle_after_start_freezes_what_start_up_built_and_times_later_pauses():
    built_at_start = [{"order": i} for i in range(1000)]  # containers the collector tracks
    try:
        frozen = heap.settle_after_start()
        before = _pauses(2)

        gc.collect()

        assert frozen == gc.get_freeze_count() >= len(built_at_start)
        assert _pauses(2) == before + 1
    finally:
        gc.unfreeze()
