"""Strategy settings: the default strategy, and start-up errors for unknown kinds and bad params."""

import pytest

from services.strategy.config import StrategySettings
from services.strategy.engine import build_strategies
from shared import config as cfg
from shared.errors import ConfigError
from shared.instruments import InstrumentBook
from shared.marketdata import nse_instruments


def test_default_is_one_momentum_rsi_strategy_on_every_instrument():
    settings = cfg.load(StrategySettings, {})
    assert [(s.name, s.kind, s.symbols, s.params) for s in settings.strategies] == [
        ("momentum_rsi", "MOMENTUM_RSI", [], {})]


def test_strategies_and_params_come_from_the_toml_table():
    toml = {"strategy": {"strategies": [{"name": "fast", "kind": "MOMENTUM_RSI", "symbols": ["SBIN-EQ"],
                                         "params": {"rsi_period": 5, "order_type": "MARKET"}}]}}
    (strategy,) = build_strategies(cfg.load(StrategySettings, toml), InstrumentBook(nse_instruments()))
    assert (strategy.name, strategy.tokens, strategy.params.rsi_period, strategy.params.order_type) == (
        "fast", frozenset({3045}), 5, "MARKET")


def test_strategies_can_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("NEOPULSE_STRATEGY_STRATEGIES", '[{"name": "env", "params": {"quantity": 4}}]')
    settings = cfg.load(StrategySettings, {})
    assert [(s.name, s.params) for s in settings.strategies] == [("env", {"quantity": 4})]


def test_an_unknown_kind_is_a_config_error_listing_the_known_kinds():
    toml = {"strategy": {"strategies": [{"name": "x", "kind": "MEAN_REVERT"}]}}
    with pytest.raises(ConfigError, match=r"unknown strategy kind 'MEAN_REVERT'; known kinds: MOMENTUM_RSI"):
        cfg.load(StrategySettings, toml)


def test_a_bad_param_is_a_config_error_naming_the_field():
    toml = {"strategy": {"strategies": [{"name": "x", "params": {"rsi_period": "fourteen"}}]}}
    with pytest.raises(ConfigError, match=r"params\.rsi_period"):
        cfg.load(StrategySettings, toml)


def test_an_unknown_param_is_a_config_error_naming_it():
    toml = {"strategy": {"strategies": [{"name": "x", "params": {"rsi_periods": 5}}]}}
    with pytest.raises(ConfigError, match=r"params\.rsi_periods: Extra inputs are not permitted"):
        cfg.load(StrategySettings, toml)


def test_repeated_strategy_names_are_a_config_error():
    toml = {"strategy": {"strategies": [{"name": "a"}, {"name": "a"}]}}
    with pytest.raises(ConfigError, match="repeated: a"):
        cfg.load(StrategySettings, toml)


def test_an_unknown_symbol_is_a_config_error_when_strategies_are_built():
    settings = cfg.load(StrategySettings, {"strategy": {"strategies": [{"name": "a", "symbols": ["NOPE-EQ"]}]}})
    with pytest.raises(ConfigError, match="unknown symbol 'NOPE-EQ'"):
        build_strategies(settings, InstrumentBook(nse_instruments()))


@pytest.mark.parametrize(("kind", "param"), [("MOMENTUM_RSI", "quantity"), ("MOMENTUM_RSI", "stop_loss_pct"),
                                             ("MOMENTUM_RSI", "trailing_stop_pct"), ("ORB", "target_r")])
def test_true_or_false_for_a_numeric_param_is_refused_not_read_as_one_or_zero(kind, param):
    """`stop_loss_pct = false` was a 0% stop and `quantity = true` one share: pydantic reads booleans as numbers."""
    toml = {"strategy": {"strategies": [{"name": "x", "kind": kind, "params": {param: True}}]}}
    with pytest.raises(ConfigError, match=rf"params\.{param}: .*must be a number, not true/false"):
        cfg.load(StrategySettings, toml)
