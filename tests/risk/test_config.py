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


@pytest.mark.parametrize(("table", "message"), [
    ({"square_off_time_ist": "15:45"}, "square_off_time_ist 15:45 is outside nse_cm's market hours 09:15-15:30"),
    ({"square_off_time_ist": "15:30"}, "square_off_time_ist 15:30 is outside nse_cm's"),
    ({"square_off_times_ist": {"mcx_fo": "23:45"}}, "square_off_times_ist.mcx_fo 23:45 is outside mcx_fo's"),
    ({"square_off_times_ist": {"mcx": "23:00"}}, "unknown exchange segment 'mcx'"),
])
def test_a_square_off_time_risk_could_never_act_on_is_a_config_error(table, message):
    """Risk refuses its own square-off order outside market hours: such a time would leave MIS positions open."""
    with pytest.raises(ConfigError, match=message):
        load(RiskSettings, {"risk": table})


def test_square_off_times_by_segment_go_over_the_built_in_ones():
    """Setting only currency's time keeps MCX's own 23:00 (not the cash market's 15:15)."""
    settings = load(RiskSettings, {"risk": {"square_off_times_ist": {"cde_fo": "16:30"}}})

    assert settings.square_off_hhmm_by_segment() == {"mcx_fo": (23, 0), "cde_fo": (16, 30)}


def test_a_longer_session_allows_a_later_square_off():
    settings = load(RiskSettings, {"risk": {"sessions": {"mcx_fo": "09:00-23:55"},
                                            "square_off_times_ist": {"mcx_fo": "23:45"}}})

    assert settings.square_off_hhmm_by_segment()["mcx_fo"] == (23, 45)


def test_a_segment_named_in_capitals_is_the_feeds_own_segment():
    """sessions = { MCX_FO = "09:00-17:00" } shortens MCX's hours; it used to be a segment of its own, ignored."""
    settings = load(RiskSettings, {"risk": {"sessions": {"MCX_FO": "09:00-17:00"},
                                            "square_off_times_ist": {"MCX_FO": "16:45"}}})

    assert (settings.market_sessions()["mcx_fo"], settings.square_off_hhmm_by_segment()["mcx_fo"]) == (
        ((9, 0), (17, 0)), (16, 45))


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
