"""The persistence benchmark runs end to end and reports both rates and their ratio."""

from __future__ import annotations

from bench import persistence


async def test_persistence_bench_reports_writer_and_raw_rates_and_their_ratio():
    result = await persistence.run(seconds=2.0)  # a window with several 20k-row commits, even on a loaded machine

    assert result["writer_rows_per_s"] > 0 and result["raw_rows_per_s"] > 0
    assert abs(result["ratio"] - result["writer_rows_per_s"] / result["raw_rows_per_s"]) < 0.01
