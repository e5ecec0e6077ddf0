"""deploy/prometheus/alerts.yml: every rule is complete, and every metric it names is one NeoPulse exports."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Every module that defines metrics (importing it registers them).
MODULES = ("shared.bus", "shared.runtime", "shared.grpc.metrics", "shared.grpc.bridge", "services.ingestion.module",
           "services.ingestion.tick_writer", "services.strategy.module", "services.strategy.engine",
           "services.risk.module", "services.oms.engine", "services.oms.module", "services.notifier.module",
           "services.notifier.sender", "shared.kotak.session")
METRIC = re.compile(r"\bneopulse_[a-z_]+")


def rules() -> list[dict[str, str]]:
    """Each `- alert:` block as {key: value} of its lines (the file is kept flat enough to read this way)."""
    out: list[dict[str, str]] = []
    for line in RULES.read_text().splitlines():
        key, _, value = line.strip().removeprefix("- ").partition(":")
        if key == "alert":
            out.append({})
        if out and key in ("alert", "expr", "for", "severity", "summary"):
            out[-1][key] = value.strip()
    return out


def exported() -> set[str]:
    for name in MODULES:
        importlib.import_module(name)
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_rule_has_an_expression_a_severity_and_a_summary():
    found = rules()

    assert len(found) >= 15
    assert [r["alert"] for r in found if not (r.get("expr") and r.get("summary"))] == []
    assert {r.get("severity") for r in found} == {"critical", "warning"}
    assert len({r["alert"] for r in found}) == len(found)


def test_every_metric_the_rules_name_is_exported():
    named = {m for r in rules() for m in METRIC.findall(r["expr"])}

    assert named - exported() == set()


def test_a_rule_setting_a_histograms_count_against_its_buckets_matches_them_ignoring_le():
    """A _count series has no `le` label: subtracting a bucket from it without ignoring(le) pairs nothing, and the
    alert (NeoPulseLongGcPauses) could never fire."""
    mixed = [r["alert"] for r in rules() if "_count" in r["expr"] and "_bucket" in r["expr"]
             and "ignoring(le)" not in r["expr"] and "on(" not in r["expr"]]

    assert mixed == []
