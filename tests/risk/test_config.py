"""RiskSettings from TOML and env (rupees) and Limits from the RiskLimits contract (paise), all or nothing."""

from __future__ import annotations

import pytest

from services.risk.config import Limits, RiskSettings
from shared.config import load
from shared.errors import ConfigError, InvalidInput
from tests.risk.factories import limits


def test_default_settings_give_limits_in_paise():
    got = load(RiskSettings, {}).limits()

    assert (got.max_order_value_paise, got.daily_loss_reducing_paise, got.daily_loss_halt_paise) == (
        100_000_000, 2_500_000, 5_000_000)


def test_rupee_settings_from_the_toml_section_convert_to_paise():
    settings = load(RiskSettings, {"risk": {"max_order_value": "2500.50"}})

    assert settings.limits().max_order_value_paise == 250_050


def test_an_env_variable_overrides_the_toml_section(monkeypatch):
    monkeypatch.setenv("NEOPULSE_RISK_MAX_ORDER_QUANTITY", "7")

    assert load(RiskSettings, {"risk": {"max_order_quantity": 9}}).max_order_quantity == 7


def test_a_halt_threshold_below_the_reducing_threshold_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"\[risk\]\.daily_loss_halt \(env NEOPULSE_RISK_DAILY_LOSS_HALT\)"):
        load(RiskSettings, {"risk": {"daily_loss_reducing": 100, "daily_loss_halt": 50}})


def test_a_bad_square_off_time_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"\[risk\]\.square_off_time_ist .*expected HH:MM"):
        load(RiskSettings, {"risk": {"square_off_time_ist": "3pm"}})


def test_limits_survive_a_round_trip_through_the_contract():
    original = limits(max_open_orders=3, price_band_bps=0)

    assert Limits.from_proto(original.to_proto()) == original


def test_a_zero_limit_in_the_contract_is_invalid_input_naming_the_field():
    proto = limits().to_proto()
    proto.max_order_quantity = 0

    with pytest.raises(InvalidInput) as err:
        Limits.from_proto(proto)

    assert err.value.field == "limits.max_order_quantity"


def test_a_halt_below_reducing_in_the_contract_is_invalid_input_naming_the_halt_field():
    proto = limits().to_proto()
    proto.daily_loss_halt_paise = proto.daily_loss_reducing_paise - 1

    with pytest.raises(InvalidInput) as err:
        Limits.from_proto(proto)

    assert err.value.field == "limits.daily_loss_halt_paise"


def test_the_value_caps_are_off_by_default():
    got = load(RiskSettings, {}).limits()

    assert (got.max_position_value_paise, got.max_gross_exposure_paise) == (0, 0)


def test_value_caps_in_rupees_from_the_toml_section_convert_to_paise():
    got = load(RiskSettings, {"risk": {"max_position_value": "250000.50", "max_gross_exposure": 1000000}}).limits()

    assert (got.max_position_value_paise, got.max_gross_exposure_paise) == (25_000_050, 100_000_000)


@pytest.mark.parametrize("field", ["max_position_value", "max_gross_exposure"])
def test_a_negative_value_cap_is_a_config_error_naming_the_field(field):
    env = f"NEOPULSE_RISK_{field.upper()}"
    with pytest.raises(ConfigError, match=rf"\[risk\]\.{field} \(env {env}\).*greater than or equal to 0"):
        load(RiskSettings, {"risk": {field: -1}})


@pytest.mark.parametrize("field", ["max_position_value_paise", "max_gross_exposure_paise"])
def test_a_negative_value_cap_in_the_contract_is_invalid_input_naming_the_field(field):
    proto = limits().to_proto()
    setattr(proto, field, -1)

    with pytest.raises(InvalidInput) as err:
        Limits.from_proto(proto)

    assert err.value.field == f"limits.{field}"


def test_value_caps_survive_a_round_trip_through_the_contract():
    original = limits(max_position_value_paise=5_00_000_00, max_gross_exposure_paise=20_00_000_00)

    assert Limits.from_proto(original.to_proto()) == original
