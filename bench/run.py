"""Run every benchmark, print one table, write JSON under bench/results/.

Sections: monolith pipeline, the order path's burst cost, tick persistence, SFeed decode, split mode (when present).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _pipeline_load(seconds: float) -> Any:
    """The trading pipeline at 20k ticks/s, as background load for the persistence benchmark.

    Batches are built here, before the measurement starts, so building them does not stall it.
    """
    from bench import pipeline

    batches, start = pipeline.make_batches(int(20_000 * (seconds + 2)))
    return pipeline._pipeline(batches, start, 20_000)


async def run_all(quick: bool) -> dict[str, Any]:
    from bench import burst, persistence, pipeline, sfeed

    out: dict[str, Any] = {}
    scale = 0.4 if quick else 1.0
    # 24 s of latency: ~700 orders, so a p99 is the 7th-worst order, not the 4th (half as jumpy between runs).
    out["pipeline"] = await pipeline.run(throughput_ticks=int(600_000 * scale), latency_seconds=24 * scale)
    out["ledger"] = await pipeline.ledger_latency(seconds=12 * scale)
    out["burst"] = await burst.run(bursts=int(400 * scale))
    seconds = 3.0 * scale
    out["persistence"] = await persistence.run(seconds, background=_pipeline_load(seconds * 2 + 1))
    out["sfeed"] = await asyncio.to_thread(sfeed.run, 2.0 * scale)
    try:
        split = importlib.import_module("bench.split")
    except ModuleNotFoundError:
        split = None
    if split is not None:
        out["split"] = await asyncio.to_thread(split.run, 4.0 * scale)
    return out


def table(results: dict[str, Any]) -> str:
    p, lat = results["pipeline"]["throughput"], results["pipeline"]["latency"]
    rows = [
        ("monolith pipeline ticks/s", f"{p['pipeline_ticks_per_s']:,.0f}", f"bare bus {p['bare_bus_ticks_per_s']:,.0f}",
         f"{p['ratio']:.3f}", f">= {p['target_ticks_per_s']:,}"),
        ("tick-to-order p50 µs @20k/s", f"{lat['pipeline_p50_us']:,.0f}", f"bare bus {lat['bare_bus_p50_us']:,.0f}",
         f"{lat['pipeline_p50_us'] / lat['bare_bus_p50_us']:.1f}x", ""),
        ("tick-to-order p99 µs @20k/s", f"{lat['pipeline_p99_us']:,.0f}", f"bare bus {lat['bare_bus_p99_us']:,.0f}",
         f"{lat['pipeline_p99_us'] / lat['bare_bus_p99_us']:.1f}x", f"< {lat['target_p99_us']:,}"),
        ("  same, busy_poll = true: p50 µs", f"{lat['busy_poll_p50_us']:,.0f}",
         f"bare bus {lat['bare_bus_p50_us']:,.0f}", f"{lat['busy_poll_p50_us'] / lat['bare_bus_p50_us']:.1f}x", ""),
        ("  same, busy_poll = true: p99 µs", f"{lat['busy_poll_p99_us']:,.0f}",
         f"bare bus {lat['bare_bus_p99_us']:,.0f}", f"{lat['busy_poll_p99_us'] / lat['bare_bus_p99_us']:.1f}x",
         f"< {lat['target_p99_us']:,}"),
    ]
    led = results["ledger"]
    for q in ("p50", "p99"):
        rows.append((f"  same, PostgreSQL ledger: {q} µs", f"{led[f'pg_{q}_us']:,.0f}",
                     f"memory ledger {led[f'memory_{q}_us']:,.0f}", f"{led[f'pg_{q}_us'] / led[f'memory_{q}_us']:.1f}x",
                     ""))
    bu = results["burst"]
    path, bare = bu["order_path_p50_us"], bu["bare_bus_p50_us"]
    rows.append((f"order path: {bu['size']} signals -> orders placed, p50 µs", f"{path:,.0f}", f"bare bus {bare:,.0f}",
                 f"{path / bare:.1f}x", ""))
    db = results["persistence"]
    rows.append(("tick persistence rows/s", f"{db['writer_rows_per_s']:,}", f"raw COPY {db['raw_rows_per_s']:,}",
                 f"{db['ratio']:.3f}", ">= 0.70 of raw"))
    sf = results["sfeed"]
    rows.append(("SFeed decode ticks/s (SDK)", f"{sf['sdk_ticks_per_s']:,}", f"struct {sf['baseline_ticks_per_s']:,}",
                 f"{sf['sdk_ticks_per_s'] / sf['baseline_ticks_per_s']:.3f}", ""))
    for name, row in results.get("split", {}).get("table", []):
        rows.append((name, *row))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    head = ("measure", "value", "baseline (same run)", "ratio", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 2) else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def quiet_production_logs() -> None:
    """Log as `neopulse run` does (INFO, JSON lines, the writer thread), into /dev/null instead of stderr:
    the cost of logging is part of what is measured, the lines are not part of the output."""
    from shared import logs

    logs.setup("INFO", json_lines=True, stream=open(os.devnull, "w"))  # open for the process


def main() -> int:
    parser = argparse.ArgumentParser(description="NeoPulse benchmarks")
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    args = parser.parse_args()
    os.environ.setdefault("NEO_LOG_FILE_ENABLED", "false")
    quiet_production_logs()
    started = time.time()
    results = asyncio.run(run_all(args.quick))
    print(table(results))
    for sample in ("latencies_ns",):
        results["pipeline"].pop(sample, None)
    meta = {"when": datetime.now(UTC).isoformat(), "host": platform.node(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "seconds": round(time.time() - started, 1)}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    print(f"\nwritten {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
