"""The example config loads into every module's settings; bad config is one clear line and exit 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.app.config import AppSettings
from services.app.config import settings_classes as all_settings_classes
from shared import config as cfg
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example.toml"


@pytest.mark.parametrize("cls", all_settings_classes(), ids=lambda c: c.__name__)
def test_the_example_config_loads_into_every_settings_model(cls):
    settings = cfg.load(cls, cfg.read_toml(EXAMPLE))
    assert isinstance(settings, cls)


def test_the_example_config_values_reach_the_models():
    toml = cfg.read_toml(EXAMPLE)
    assert cfg.load(AppSettings, toml).symbols[:2] == ["RELIANCE-EQ", "TCS-EQ"]


def test_database_url_is_taken_from_plain_DATABASE_URL(monkeypatch):
    monkeypatch.delenv("NEOPULSE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/x")
    assert cfg.load(AppSettings, {}).database_url.get_secret_value() == "postgresql://u:p@db:5432/x"


def test_an_invalid_setting_is_a_config_error_naming_field_and_env_var():
    with pytest.raises(ConfigError, match=r"speed \(env NEOPULSE_SPEED\)"):
        cfg.load(AppSettings, {"speed": -1})


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "services.app.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "NEO_LOG_FILE_ENABLED": "false", **(env or {})}, timeout=60)


def test_only_misspelt_neopulse_variables_are_unknown():
    environ = {"NEOPULSE_RISK_MAX_ORDER_VALUE": "1", "NEOPULSE_RISK_MAX_ORDER_VALU": "1", "DATABASE_URL": "x",
               "NEOPULSE_DATABASE_URL": "x", "NEOPULSE_CONFIG": "x", "NEOPULSE_SPLIT_OMS_ADDR": "x", "HOME": "/"}

    assert cfg.unknown_env(all_settings_classes(), environ) == ["NEOPULSE_RISK_MAX_ORDER_VALU"]


def test_neopulse_run_warns_about_a_misspelt_variable_it_would_otherwise_ignore(tmp_path):
    """NEOPULSE_RISK_DAILY_LOSS_HALTT would leave the halt limit at its default without a word."""
    result = run_cli("run", "--no-db", "--source", "synthetic", "--duration", "1", "--grpc-port", "0",
                     "--metrics-port", "0", env={"NEOPULSE_RISK_DAILY_LOSS_HALTT": "100"})

    assert result.returncode == 0, result.stderr
    assert "NEOPULSE_RISK_DAILY_LOSS_HALTT is not a NeoPulse setting" in result.stderr


def test_neopulse_run_with_a_bad_value_exits_2_with_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[risk]\nmax_order_quantity = 0\n')
    result = run_cli("run", "--config", str(bad), "--no-db", "--duration", "1", "--grpc-port", "0")
    assert result.returncode == 2
    assert "[risk].max_order_quantity" in result.stderr and "Traceback" not in result.stderr


def test_live_mode_without_the_live_flag_refuses_to_start():
    result = run_cli("run", "--no-db", "--duration", "1", "--grpc-port", "0", env={"NEOPULSE_MODE": "live"})
    assert result.returncode == 2 and "--live" in result.stderr


def test_live_mode_with_the_flag_and_credentials_still_refuses_any_source_but_kotak():
    """Otherwise it would 'trade live' against the bundled simulator, and square-offs would never reach Kotak."""
    from services.app.monolith import check_live_mode

    for source in ("simulator", "synthetic", "replay"):
        with pytest.raises(ConfigError, match="NEOPULSE_SOURCE=kotak"):
            check_live_mode(cfg.load(AppSettings, {"mode": "live", "source": source}), True, True)
    check_live_mode(cfg.load(AppSettings, {"mode": "live", "source": "kotak"}), True, True)


def test_live_mode_refuses_a_kotak_base_url_on_another_host_and_allows_a_local_stand_in():
    """A NEOPULSE_KOTAK_BASE_URL left from a simulator run would send live orders, the MPIN and the TOTP there."""
    from services.app.monolith import check_live_target

    live = cfg.load(AppSettings, {"mode": "live", "source": "kotak"})
    with pytest.raises(ConfigError, match=r"would go to 'sim\.example\.net', not Kotak's servers"):
        check_live_target(live, ["http://sim.example.net:8080"])
    with pytest.raises(ConfigError, match=r"would go to 'sim\.example\.net'"):  # a feed logs in with the session
        check_live_target(live, ["ws://127.0.0.1:8765/orders", "ws://sim.example.net/feed"])
    check_live_target(live, ["http://127.0.0.1:8765", "ws://127.0.0.1:8765/feed"])  # a rehearsal: `neopulse sim`
    check_live_target(live, [])  # Kotak's own servers


@pytest.mark.parametrize(("kotak", "market"), [({}, "real"), ({"base_url": "http://127.0.0.1:8765"}, "simulated"),
                                                ({"feed_url": "ws://127.0.0.1:8765/feed"}, "simulated"),
                                                ({"environment": "uat"}, "simulated")])
def test_a_kotak_run_stamps_its_database_real_only_at_kotaks_own_servers(kotak, market):
    """A paper run against `neopulse sim` stamped its database "real": a later real run took its fills for positions."""
    from services.app.wiring import database_use

    settings = cfg.load(AppSettings, {"source": "kotak"})

    assert database_use(settings, {"kotak": kotak}) == ("paper", market)


def test_neopulse_run_serves_metrics_on_the_grpc_tables_port_unless_told_otherwise():
    """`[grpc] metrics_port` (where `neopulse serve` reads it) was ignored by `neopulse run`: Prometheus, and the alerts
    built on it, silently off for a monolith configured so."""
    from services.app.cmd_run import metrics_port
    from shared.grpc.config import GrpcSettings

    grpc = cfg.load(GrpcSettings, {"grpc": {"metrics_port": 9101}})

    assert metrics_port(cfg.load(AppSettings, {}), grpc, from_cli=False) == 9101
    assert metrics_port(cfg.load(AppSettings, {"metrics_port": 9100}), grpc, from_cli=False) == 9100
    assert metrics_port(cfg.load(AppSettings, {}, metrics_port=0), grpc, from_cli=True) == 0  # --metrics-port 0: off


def test_live_mode_without_the_database_refuses_to_start():
    """Real orders on an in-memory ledger: a restart would forget them at Kotak and release the kill switch."""
    from services.app.monolith import check_live_mode

    with pytest.raises(ConfigError, match="mode=live needs the database"):
        check_live_mode(cfg.load(AppSettings, {"mode": "live", "source": "kotak"}, use_database=False), True, True)


def test_the_live_flag_with_paper_mode_refuses_to_start():
    """`--live` alone used to paper-trade on Kotak's real prices: fills the trader would take for real ones."""
    result = run_cli("run", "--live", "--no-db", "--duration", "1", "--grpc-port", "0", env={"NEOPULSE_MODE": "paper"})

    assert result.returncode == 2 and "--live needs mode=live" in result.stderr


def test_holidays_come_from_the_config_as_dates_and_a_bad_one_names_the_field(tmp_path):
    from datetime import date

    from services.app.config import AppSettings
    from shared import config as cfg
    from shared.errors import ConfigError

    assert cfg.load(AppSettings, {"holidays": ["2026-01-26", "2026-03-03"]}).holidays == [date(2026, 1, 26),
                                                                                            date(2026, 3, 3)]
    with pytest.raises(ConfigError, match="holidays"):
        cfg.load(AppSettings, {"holidays": ["26/01/2026"]})


def test_a_busy_grpc_port_is_one_line_not_a_traceback():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("run", "--no-db", "--duration", "2", "--grpc-port", str(busy.getsockname()[1]))

    assert result.returncode == 1 and "port is in use" in result.stderr and "Traceback" not in result.stderr


def health_at(addr: str) -> str:
    from tests.grpc.procs import grpcurl

    result = grpcurl("-max-time", "5", addr, "grpc.health.v1.Health/Check")
    return result.stdout if result.returncode == 0 else "unreachable"


@pytest.mark.parametrize("command", [["run", "--source", "synthetic"], ["serve", "ingestion"]], ids=["run", "serve"])
def test_the_grpc_server_listens_on_the_host_under_grpc_in_the_config_file(command, tmp_path, procs):
    """[grpc] host = "0.0.0.0" (config/example.toml documents it) still served on 127.0.0.1: a top-level grpc_host
    of its default always won. 127.0.0.2 is loopback too, and tells the two apart."""
    config = tmp_path / "grpc.toml"
    config.write_text('use_database = false\n[grpc]\nhost = "127.0.0.2"\n')
    proc = procs.neopulse([*command, "--config", str(config), "--grpc-port", "0"], tmp_path / "out.log")

    port = proc.wait_for_line("gRPC listening on ").split()[3].rsplit(":", 1)[1]

    assert "SERVING" in health_at(f"127.0.0.2:{port}")
    assert health_at(f"127.0.0.1:{port}") == "unreachable"


def test_a_grpc_host_left_at_the_top_level_of_the_config_file_is_one_line_naming_where_it_goes(tmp_path):
    config = tmp_path / "old.toml"
    config.write_text('grpc_host = "0.0.0.0"\n')

    result = run_cli("run", "--no-db", "--config", str(config), "--duration", "1", "--grpc-port", "0")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "grpc_host" in result.stderr and "[grpc]" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["run", "serve"])
def test_a_symbol_the_feed_does_not_know_is_one_line_after_the_grpc_server_started(mode):
    """Found once the feed's scrip master is read, after the gRPC server is up: that server is stopped too, not left
    to the interpreter's exit (a traceback of 'Event loop is closed' under the one line)."""
    args = ["run", "--no-db"] if mode == "run" else ["serve", "ingestion"]
    result = run_cli(*args, "--duration", "2", "--grpc-port", "0", env={"NEOPULSE_SYMBOLS": '["FOO-EQ"]',
                                                                         "NEOPULSE_USE_DATABASE": "false"})

    assert result.returncode == 2, result.stderr
    assert "FOO-EQ" in result.stderr and "Traceback" not in result.stderr and "never awaited" not in result.stderr


def test_a_list_setting_given_as_plain_text_is_one_line_saying_json():
    result = run_cli("run", "--no-db", "--duration", "1", "--grpc-port", "0",
                     env={"NEOPULSE_SYMBOLS": "RELIANCE-EQ,TCS-EQ"})

    assert result.returncode == 2 and "symbols" in result.stderr and "JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_split_mode_refuses_live_mode_instead_of_paper_trading_under_that_name():
    result = run_cli("serve", "oms", "--no-db", "--duration", "1", "--grpc-port", "0", env={"NEOPULSE_MODE": "live"})

    assert result.returncode == 2 and "monolith only" in result.stderr


def test_paper_trading_on_kotak_with_a_credential_missing_refuses_instead_of_running_on_the_simulator(tmp_path):
    """source=kotak asks for Kotak's real market: with the MPIN missing it ran the bundled simulator's made-up
    prices instead (a WARNING in the log, nothing else), paper-filling against them and storing them as ticks."""
    env = {"NEOPULSE_SECRETS_DIR": str(tmp_path), "NEOPULSE_KOTAK_CONSUMER_KEY": "ck-Zq81xLm2",
           "NEOPULSE_KOTAK_UCC": "AB123", "NEOPULSE_KOTAK_MOBILE": "+919800000000",
           "NEOPULSE_KOTAK_TOTP_SECRET": "JBSWY3DPEHPK3PXP"}
    result = run_cli("run", "--no-db", "--source", "kotak", "--duration", "1", "--grpc-port", "0", env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "NEOPULSE_KOTAK_MPIN" in result.stderr and "Traceback" not in result.stderr
    assert "ck-Zq81xLm2" not in result.stderr + result.stdout and "simulator:" not in result.stdout


@pytest.mark.parametrize("source", ["kotak", "replay"])
def test_split_mode_refuses_a_source_it_would_replace_by_a_synthetic_market(source):
    """Split-mode ingestion only generates ticks: Kotak's feed or a replay asked for got made-up prices instead,
    stored in the shared market_ticks as if they were the day's market."""
    result = run_cli("serve", "ingestion", "--no-db", "--duration", "1", "--grpc-port", "0",
                     env={"NEOPULSE_SOURCE": source})

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"source={source}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "flag"), [(["serve", "oms", "--no-db", "--grpc-port", "70000"], "--grpc-port"),
                                            (["sim", "--port", "99999"], "--port")])
def test_a_port_flag_out_of_range_is_one_line_naming_it_not_another_port(args, flag):
    """`serve --grpc-port 70000` listened on 4464 (70000 - 65536) without a word; `sim --port 99999` crashed."""
    result = run_cli(*args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert flag in result.stderr and "Traceback" not in result.stderr and "gRPC serving" not in result.stderr


@pytest.mark.parametrize("command", [["run"], ["serve", "oms"]], ids=["run", "serve"])
@pytest.mark.parametrize("duration", ["-1", "nan", "0", "inf", "ten"])
def test_a_duration_that_is_not_seconds_above_zero_is_a_usage_error_naming_the_flag(command, duration):
    """`run --duration -1` (or nan) ran nothing and exited 0 at once, as if a run had been made."""
    result = run_cli(*command, "--no-db", "--grpc-port", "0", "--duration", duration)

    assert result.returncode == 2, result.stdout + result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert "--duration" in error and repr(duration) in error
    assert "Traceback" not in result.stderr and "gRPC" not in result.stdout + result.stderr


@pytest.mark.parametrize("addr", ["oms", "127.0.0.1:70000", "127.0.0.1:"])
def test_a_split_address_without_a_valid_port_is_one_line_naming_it(addr):
    result = run_cli("serve", "oms", "--no-db", "--duration", "1", env={"NEOPULSE_SPLIT_OMS_ADDR": addr})

    assert result.returncode == 2, result.stdout + result.stderr
    assert "[split].oms_addr (env NEOPULSE_SPLIT_OMS_ADDR)" in result.stderr and "Traceback" not in result.stderr


def test_a_database_url_with_a_port_out_of_range_is_one_line_without_the_password():
    result = run_cli("db", "status", env={"NEOPULSE_DATABASE_URL": "postgresql://np:Pw-7731x@127.0.0.1:99999/np"})

    assert result.returncode == 2, result.stderr
    assert "NEOPULSE_DATABASE_URL" in result.stderr and "port" in result.stderr
    assert "Traceback" not in result.stderr and "Pw-7731x" not in result.stderr


@pytest.mark.parametrize("addr", ["localhost", "127.0.0.1:0", "127.0.0.1:65536", ":18064", "127.0.0.1:²"])
def test_a_split_address_without_a_host_and_a_port_is_refused_naming_it(addr):
    from services.app.split import SplitSettings

    with pytest.raises(ConfigError, match="oms_addr"):
        cfg.load(SplitSettings, {"split": {"oms_addr": addr}})


def test_a_typo_in_a_modules_table_is_reported_before_anything_starts(tmp_path):
    """It used to come after the database started, the simulator ran and Kotak logged in."""
    config = tmp_path / "bad.toml"
    config.write_text("[risk]\nmax_order_quantty = 5\n")

    result = run_cli("run", "--config", str(config), "--duration", "1", "--grpc-port", "0",
                     env={"NEOPULSE_DATA_DIR": str(tmp_path / "data")})

    assert result.returncode == 2 and "[risk].max_order_quantty" in result.stderr
    assert not (tmp_path / "data").exists()  # no embedded database was set up
