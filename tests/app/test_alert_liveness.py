"""deploy/prometheus: a NeoPulse process that is gone, crash-looping or hung alerts, and alerts reach an Alertmanager.

A dead process takes its own series with it, so only rules on Prometheus's `up` (and the restarts it saw) can tell;
a hung event loop still answers /metrics from its thread, so only the loop's heartbeat can. The rules' behaviour is
checked with promtool's rule unit tests when promtool is installed (Debian's `prometheus` package has it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grpc.test_deploy import COMPOSE, ROOT, run

DEPLOY = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
MONOLITH = 'up{job="neopulse", instance="127.0.0.1:9460", module="monolith"}'
INGESTION = 'up{job="neopulse", instance="127.0.0.1:9461", module="ingestion"}'
STRATEGY = 'up{job="neopulse", instance="127.0.0.1:9462", module="strategy"}'


def prometheus() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text())


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def promtool_finds(tmp_path: Path, series: dict[str, str], alert: str, at: str, firing: list[dict[str, str]],
                   interval: str = "5s") -> subprocess.CompletedProcess[str]:
    """`promtool test rules`: with these input series (promtool's expanding notation), `alert` fires at `at` with
    exactly the labels of `firing` (each plus its severity). The rules are alerts.yml's, annotations left out."""
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for rule in (r for g in groups["groups"] for r in g["rules"]):
        rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(groups))
    test = {"rule_files": ["alerts.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": interval,
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels}
                                                                                 for labels in firing]}]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_every_scrape_job_has_critical_rules_for_all_its_processes_gone_and_for_one_of_them_down():
    critical = [r["expr"] for r in rules() if r["labels"]["severity"] == "critical"]
    jobs = [job["job_name"] for job in prometheus()["scrape_configs"]]

    gone = [job for job in jobs if not any(f'absent(up{{job="{job}"' in e for e in critical)]
    down = [job for job in jobs if not any(re.search(rf'\bup{{job="{job}"[^}}]*}} == 0', e) for e in critical)]
    assert (gone, down) == ([], [])


def test_prometheus_sends_its_alerts_to_the_alertmanager_compose_runs_beside_it():
    """Prometheus runs on the host network: it reaches the Alertmanager where that listens on the host; on the
    compose network it would be the service's name."""
    services = json.loads(run(str(COMPOSE), "-f", "docker-compose.yml", "config", "--format", "json",
                              env={"COMPOSE_PROFILES": "monolith,observability"}).stdout)["services"]
    listen = next((arg.partition("=")[2] for arg in services["alertmanager"].get("command", [])
                   if arg.startswith("--web.listen-address=")), ":9093")
    on_host = services["prometheus"].get("network_mode") == "host"

    targets = [t for am in prometheus()["alerting"]["alertmanagers"] for c in am["static_configs"]
               for t in c["targets"]]
    assert targets == [listen if on_host else f"alertmanager:{listen.rpartition(':')[2]}"]


@needs_promtool
def test_a_monolith_that_stopped_answering_30_s_ago_raises_neopulse_down(tmp_path):
    series = {MONOLITH: "1x12 0x24", INGESTION: "0x36", STRATEGY: "0x36"}  # 5 s apart: gone at 65 s

    result = promtool_finds(tmp_path, series, "NeoPulseDown", "2m", [{"severity": "critical"}])

    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_split_targets_down_while_the_monolith_runs_raise_nothing(tmp_path):
    """The one scrape job has both stacks' targets, and only one stack runs: the other's are down all day."""
    series = {MONOLITH: "1x36", INGESTION: "0x36", STRATEGY: "0x36"}

    results = [promtool_finds(tmp_path, series, alert, "2m", []) for alert in ("NeoPulseDown",
                                                                              "NeoPulseSplitModuleDown")]

    assert [r.returncode for r in results] == [0, 0], "".join(r.stdout for r in results)


@needs_promtool
def test_one_split_module_down_while_the_others_run_raises_an_alert_naming_it(tmp_path):
    series = {MONOLITH: "0x36", INGESTION: "1x36", STRATEGY: "1x6 0x30"}
    strategy = {"job": "neopulse", "instance": "127.0.0.1:9462", "module": "strategy", "severity": "critical"}

    result = promtool_finds(tmp_path, series, "NeoPulseSplitModuleDown", "2m", [strategy])

    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_heartbeat_over_10_s_old_raises_event_loop_stuck_and_one_at_0_does_not(tmp_path):
    """0: the process is starting or stopping (runtime.heartbeat); its loop is not taken for hung."""
    beat = "neopulse_loop_heartbeat_timestamp_seconds"
    series = {f'{beat}{{job="neopulse", instance="127.0.0.1:9460", module="monolith"}}': "0+5x6 30x10",  # stuck at 30 s
              f'{beat}{{job="neopulse", instance="127.0.0.1:9461", module="ingestion"}}': "0x16"}
    monolith = {"job": "neopulse", "instance": "127.0.0.1:9460", "module": "monolith", "severity": "critical"}

    result = promtool_finds(tmp_path, series, "NeoPulseEventLoopStuck", "45s", [monolith])

    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_process_started_three_times_in_15_minutes_raises_neopulse_restarting(tmp_path):
    """A crash loop whose process lives long enough to be scraped each time: `up` keeps coming back to 1."""
    started = 'process_start_time_seconds{job="neopulse", instance="127.0.0.1:9460", module="monolith"}'
    monolith = {"job": "neopulse", "instance": "127.0.0.1:9460", "module": "monolith", "severity": "critical"}

    result = promtool_finds(tmp_path, {started: "100 100 200 300 400"}, "NeoPulseRestarting", "4m", [monolith],
                            interval="1m")

    assert result.returncode == 0, result.stdout + result.stderr
