"""Review of money parsing, config loading and secrets in logs: limits parse exactly or not at all, secrets stay out."""

import io
import json
import logging
import os
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from telegram import Bot

from services.app.config import AppSettings, settings_classes
from services.ingestion.config import IngestionSettings
from services.notifier.config import NotifierSettings
from services.risk.config import RiskSettings
from shared import config as cfg
from shared import logs, money
from shared.config import ModuleSettings, load
from shared.errors import ConfigError
from shared.grpc.config import GrpcSettings
from shared.kotak.config import KotakSettings
from shared.money import fmt_inr, to_paise
from tests.notifier.fake_bot_api import TOKEN, FakeBotApi

MPIN = "482917"
DB_PASSWORD = "hunter2-db-pw"


def log_lines(emit, level: str = "INFO") -> str:
    out = io.StringIO()
    logs.setup(level, json_lines=True, stream=out)
    emit(logging.getLogger("neopulse.test"))
    logs.flush()
    return out.getvalue()


# -- money ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rupees", "paise"), [
    ("1290.055", 129_006), ("1290.045", 129_004), (1290.055, 129_006), (Decimal("-1290.055"), -129_006),
    ("1e3", 100_000), (" 12.5 ", 1_250), (-0.005, 0)])
def test_rupees_round_half_even_to_paise(rupees, paise):
    assert to_paise(rupees) == paise


@pytest.mark.parametrize("text", ["1,290.05", "", "NaN", "inf", "-Infinity", float("nan"), "₹12", None, True])
def test_what_is_not_a_finite_plain_number_is_refused(text):
    with pytest.raises(ValueError):
        to_paise(text)


def test_a_price_with_more_digits_than_the_decimal_context_still_rounds_exactly():
    # 28 significant digits would first round this to exactly half a paisa, then half-even to 0.
    assert to_paise("0.00500000000000000000000000000001") == 1


@pytest.mark.parametrize("huge", ["1e999999", "92233720368547758.08", 10**30])
def test_a_price_beyond_the_contracts_int64_paise_is_a_value_error(huge):
    with pytest.raises(ValueError, match="out of range"):
        to_paise(huge)


def test_the_largest_int64_paise_still_converts():
    assert to_paise("92233720368547758.07") == money.MAX_PAISE == 2**63 - 1


@pytest.mark.parametrize(("paise", "text"), [(0, "₹0.00"), (-1, "-₹0.01"), (-123_456, "-₹1,234.56")])
def test_fmt_inr_puts_the_sign_before_the_rupee_sign(paise, text):
    assert fmt_inr(paise) == text


# -- config: rupee limits -------------------------------------------------------------------------------------------
def test_a_rupee_limit_from_a_toml_float_converts_to_paise_without_drift():
    limits = load(RiskSettings, {"risk": {"daily_loss_reducing": 1000.10, "daily_loss_halt": 1000.20}}).limits()
    assert (limits.daily_loss_reducing_paise, limits.daily_loss_halt_paise) == (100_010, 100_020)


@pytest.mark.parametrize("value", ["0.001", 1000.105])
def test_a_rupee_limit_finer_than_a_paisa_is_refused_at_load_naming_the_field(value):
    with pytest.raises(ConfigError, match=r"\[risk\]\.max_order_value \(env NEOPULSE_RISK_MAX_ORDER_VALUE\)"):
        load(RiskSettings, {"risk": {"max_order_value": value}})


def test_a_rupee_limit_too_large_for_the_contract_is_refused_at_load_naming_the_field():
    with pytest.raises(ConfigError, match=r"\[risk\]\.daily_loss_halt "):
        load(RiskSettings, {"risk": {"daily_loss_halt": "1e20"}})


@pytest.mark.parametrize(("cls", "section", "field"), [
    (RiskSettings, "risk", "timer_interval_ms"), (RiskSettings, "risk", "loss_check_interval_ms"),
    (KotakSettings, "kotak", "orders_per_second"), (IngestionSettings, "ingestion", "stall_seconds")])
def test_an_infinite_interval_or_rate_is_refused_not_a_check_switched_off(cls, section, field):
    # TOML spells it `inf`; an infinite timer interval would stop the loss check and square-off for good.
    with pytest.raises(ConfigError, match=rf"\[{section}\]\.{field} "):
        load(cls, {section: {field: float("inf")}})


def test_a_misspelt_table_is_refused_not_silently_ignored(tmp_path):
    (tmp_path / "neopulse.toml").write_text('mode = "paper"\n[rsik]\nmax_order_value = 5000\n')
    toml = cfg.read_toml(tmp_path / "neopulse.toml")

    with pytest.raises(ConfigError, match=r"unknown table \[rsik\]"):
        load(AppSettings, toml)


def test_every_settings_section_is_a_known_table():
    classes = settings_classes()  # the product's list (the unknown-variable warning reads it too)
    in_code = {cls for cls in ModuleSettings.__subclasses__() if not cls.__module__.startswith("tests.")}
    assert in_code == set(classes)
    assert {cls.section for cls in classes} - {""} == set(cfg.SECTIONS)


def test_a_whole_settings_error_is_one_line_without_an_empty_env_name():
    with pytest.raises(ConfigError) as err:
        load(GrpcSettings, {"grpc": {"tls_cert_file": "/etc/cert.pem"}})
    assert str(err.value) == ("invalid configuration: [grpc]: set both tls_cert_file and tls_key_file, "
                              "or neither")


# -- config: secrets ------------------------------------------------------------------------------------------------
def test_secret_files_lose_their_trailing_newline_and_never_show(tmp_path, monkeypatch):
    (tmp_path / "NEOPULSE_NOTIFIER_TELEGRAM_BOT_TOKEN").write_text("123456:file-token\n")
    (tmp_path / "DATABASE_URL").write_text(f"postgresql://neo:{DB_PASSWORD}@db:5432/neo\r\n")
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", str(tmp_path))

    notifier, app = load(NotifierSettings, {}), load(AppSettings, {})

    assert notifier.telegram_bot_token.get_secret_value() == "123456:file-token"
    assert app.database_url.get_secret_value() == f"postgresql://neo:{DB_PASSWORD}@db:5432/neo"
    for shown in (repr(notifier), str(notifier), notifier.model_dump(), notifier.model_dump_json()):
        assert "file-token" not in str(shown)
    for shown in (repr(app), str(app), app.model_dump(), app.model_dump_json()):
        assert DB_PASSWORD not in str(shown)


def test_a_secret_of_the_wrong_type_is_not_echoed_in_the_error(monkeypatch):
    with pytest.raises(ConfigError) as err:
        load(KotakSettings, {"kotak": {"mpin": int(MPIN), "totp_secret": ["JBSWY3DPEHPK3PXP"]}})
    assert MPIN not in str(err.value) and "JBSWY3DP" not in str(err.value)
    assert "[kotak].mpin (env NEOPULSE_KOTAK_MPIN)" in str(err.value)


# -- logs -----------------------------------------------------------------------------------------------------------
def test_a_configured_secret_never_reaches_a_log_line_in_text_context_or_traceback(monkeypatch):
    monkeypatch.setenv("NEOPULSE_KOTAK_MPIN", MPIN)
    load(KotakSettings, {})

    def emit(log):
        log.warning(f"login refused for mpin {MPIN}", extra={"reply": {"request": {"pin": MPIN}}, "raw": MPIN})
        try:
            raise RuntimeError(f"bad mpin {MPIN}")
        except RuntimeError:
            log.exception("login failed")

    text = log_lines(emit)
    assert MPIN not in text
    assert [json.loads(line)["msg"] for line in text.splitlines()] == ["login refused for mpin ***", "login failed"]


def test_a_database_password_in_an_exception_is_not_logged(monkeypatch):
    monkeypatch.setenv("NEOPULSE_DATABASE_URL", f"postgresql://neo:{DB_PASSWORD}@db:5432/neo")
    load(AppSettings, {})

    def emit(log):
        try:
            raise OSError(f"cannot reach {DB_PASSWORD}@db:5432")
        except OSError:
            log.exception("database unreachable")

    assert DB_PASSWORD not in log_lines(emit)


@pytest.mark.parametrize("leak", [
    "postgresql://trader:s3cr3t-pw@10.0.0.5:5432/neopulse",
    "POST https://api.telegram.org/bot7012345678:AAHk2hQ8XoZs3cr3tTokenValue-abcdefgh/getUpdates",
    "headers={'Authorization': 'Bearer s3cr3t-pw.grpc-token'}",
])
def test_credentials_in_urls_and_headers_are_masked_even_when_not_configured(leak):
    text = log_lines(lambda log: log.error("request failed", extra={"error": leak}))
    assert "s3cr3t" not in text
    assert json.loads(text)["msg"] == "request failed"


def test_a_text_line_masks_secrets_too():
    out = io.StringIO()
    logs.setup("INFO", json_lines=False, stream=out)
    logging.getLogger("neopulse.test").info("connect postgresql://neo:s3cr3t-pw@db/neo")
    logs.flush()
    assert "s3cr3t" not in out.getvalue() and "postgresql://neo:***@db/neo" in out.getvalue()


async def test_the_bot_token_in_request_urls_is_not_logged_even_at_debug():
    api = FakeBotApi()
    await api.start()
    out = io.StringIO()
    logs.setup("DEBUG", json_lines=True, stream=out)
    try:
        async with Bot(TOKEN, base_url=f"{api.url}/bot") as bot:  # a real python-telegram-bot over real httpx
            await bot.get_me()
    finally:
        await api.stop()
    logs.flush()

    assert "getMe" in [method for method, _, _ in api.calls]  # the request (and its URL) did happen
    client_lines = [line for line in out.getvalue().splitlines()
                    if not json.loads(line)["logger"].startswith("aiohttp.")]  # not the fake server's access log
    assert not [line for line in client_lines if TOKEN in line]


def test_a_secretstr_in_the_context_stays_masked():
    text = log_lines(lambda log: log.info("login", extra={"mpin": SecretStr(MPIN)}))
    assert MPIN not in text and json.loads(text)["mpin"] == "**********"


async def test_a_refused_mpin_is_not_printed_by_the_kotak_sdk(monkeypatch):
    from services.simulator.server import Simulator
    from shared.kotak.session import KotakSession

    monkeypatch.delenv("NEO_LOG_LEVEL", raising=False)
    # The SDK is imported and set up with its own defaults; what its handlers (stdout, its file) write,
    # bypassing shared.logs, lands here.
    printed = io.StringIO()
    streams = [(h, h.setStream(printed)) for h in logging.getLogger("neo_api_client").handlers
               if isinstance(h, logging.StreamHandler)]
    sim = Simulator(tick_interval=None)
    await sim.start()
    c = sim.creds
    settings = load(KotakSettings, {}, consumer_key=SecretStr(c.consumer_key), mobile=SecretStr(c.mobile),
                    ucc=c.ucc, mpin=SecretStr(MPIN), totp_secret=SecretStr(c.totp_secret), base_url=sim.base_url)
    logs.setup("INFO", json_lines=True, stream=io.StringIO())
    try:
        with pytest.raises(ConfigError, match="MPIN validate refused"):
            await KotakSession(settings).login()
    finally:
        await sim.stop()
        for handler, stream in streams:
            handler.setStream(stream)

    assert f"{MPIN[:2]}***{MPIN[-2:]}" not in printed.getvalue()  # the SDK masks "482917" as "48***17"


def test_the_kotak_sdk_imported_after_setup_has_no_output_of_its_own(tmp_path):
    code = ("import logging; from shared import logs; logs.setup('INFO', json_lines=True)\n"
            "import neo_api_client.logger\n"
            "print(logging.getLogger('neo_api_client').handlers)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEO_LOG_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env, check=True)

    assert done.stdout.strip() == "[]" and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(("paise", "text"), [
    (0, "₹0.00"), (123_45, "₹123.45"), (1_234_50, "₹1,234.50"), (12_345_00, "₹12,345.00"),
    (1_23_456_00, "₹1,23,456.00"), (12_34_56_789_00, "₹12,34,56,789.00"), (-1_00_000_00, "-₹1,00,000.00")])
def test_rupees_are_shown_with_indian_digit_grouping_lakhs_and_crores(paise, text):
    assert fmt_inr(paise) == text


@pytest.mark.parametrize("setting", ["max_order_quantity = true", "price_band_bps = false"])
def test_true_or_false_for_a_number_is_refused_not_read_as_one_or_zero(setting):
    """TOML booleans are not numbers: `price_band_bps = false` would otherwise switch the price band off."""
    name = setting.split(" ")[0]
    with pytest.raises(ConfigError, match=f"risk].{name}.*a number, not true/false"):
        load(RiskSettings, {"risk": tomllib.loads(setting)})


def test_an_empty_secret_in_the_config_file_does_not_hide_the_secret_file(tmp_path, monkeypatch):
    """A placeholder `telegram_bot_token = ""` left in the TOML took precedence over the token in the secrets
    folder, and the bot silently stayed off."""
    (tmp_path / "neopulse_notifier_telegram_bot_token").write_text("123456:from-the-file\n")
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("NEOPULSE_NOTIFIER_TELEGRAM_BOT_TOKEN", raising=False)

    settings = load(NotifierSettings, {"notifier": {"telegram_bot_token": ""}})

    assert settings.telegram_bot_token.get_secret_value() == "123456:from-the-file"


@pytest.mark.parametrize(("env", "file", "field"), [
    ("NEOPULSE_GRPC_AUTH_TOKEN", "NEOPULSE_GRPC_AUTH_TOKEN", "auth_token"),
    ("NEOPULSE_NOTIFIER_TELEGRAM_BOT_TOKEN", "NEOPULSE_NOTIFIER_TELEGRAM_BOT_TOKEN", "telegram_bot_token"),
    ("DATABASE_URL", "NEOPULSE_DATABASE_URL", "database_url"),
])
def test_an_empty_secret_in_the_environment_does_not_hide_the_secret_file(tmp_path, monkeypatch, env, file, field):
    """docker-compose.yml passes `${NEOPULSE_GRPC_AUTH_TOKEN:-}`, "" when unset: the server ran without its token
    (the bot off, the embedded database instead of DATABASE_URL) although the secret file held one."""
    (tmp_path / file).write_text("secret-from-the-file\n")
    monkeypatch.setenv("NEOPULSE_SECRETS_DIR", str(tmp_path))
    for name in ("NEOPULSE_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(env, "")
    cls = {"auth_token": GrpcSettings, "telegram_bot_token": NotifierSettings, "database_url": AppSettings}[field]

    value = getattr(load(cls, {}), field)

    assert value is not None and value.get_secret_value() == "secret-from-the-file"


def test_a_config_error_carries_no_trace_of_the_input_values():
    """pydantic's error holds the input values; chained to the ConfigError (even with `from None`, as its
    __context__) an error reporter that follows chains would send a mistyped secret along."""
    with pytest.raises(ConfigError) as info:
        load(RiskSettings, {"risk": {"max_order_quantity": "s3cret-value"}})

    assert info.value.__context__ is None and info.value.__cause__ is None
