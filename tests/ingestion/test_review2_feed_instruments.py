"""A symbol ingestion lists on two segments (RELIANCE-EQ on nse_cm and bse_cm, two contracts with two tokens): the
instrument book reads a name as [app] symbols does, a bare name being nse_cm's and "segment:SYMBOL" that segment's,
whatever order ingestion listed them in."""

from __future__ import annotations

import pytest

from services.strategy.config import StrategyConfig, StrategySettings
from services.strategy.engine import build_strategies
from shared.contracts import market_pb2
from shared.errors import ConfigError
from shared.instruments import InstrumentBook


def reliance(segment: str, token: int) -> market_pb2.Instrument:
    return market_pb2.Instrument(token=token, symbol="RELIANCE-EQ", exchange_segment=segment, tick_size_paise=5,
                                 lot_size=1)


NSE, BSE, NSE_FO = reliance("nse_cm", 2885), reliance("bse_cm", 500325), reliance("nse_fo", 35001)


def test_a_bare_symbol_listed_on_nse_cm_and_bse_cm_is_the_nse_cm_contract():
    book = InstrumentBook([NSE, BSE])  # bse_cm listed last

    assert book.by_symbol("reliance-eq") == NSE


def test_a_segment_and_symbol_name_that_segment_s_contract():
    book = InstrumentBook([NSE, BSE])

    assert book.by_symbol("BSE_CM:RELIANCE-EQ") == BSE


def test_a_bare_symbol_listed_on_one_segment_only_is_that_contract():
    book = InstrumentBook([BSE])

    assert book.by_symbol("RELIANCE-EQ") == BSE


def test_a_bare_symbol_listed_on_two_segments_none_of_them_nse_cm_is_refused_naming_them():
    book = InstrumentBook([BSE, NSE_FO])

    with pytest.raises(ConfigError, match=r"'RELIANCE-EQ' is listed on bse_cm, nse_fo: name the segment"):
        book.by_symbol("RELIANCE-EQ")


def test_a_strategy_on_the_bare_symbol_trades_the_nse_cm_contract():
    settings = StrategySettings(strategies=[StrategyConfig(name="m", kind="MOMENTUM_RSI", symbols=["RELIANCE-EQ"])])

    [strategy] = build_strategies(settings, InstrumentBook([NSE, BSE]))

    assert strategy.tokens == frozenset({NSE.token})


def test_a_strategy_may_name_the_bse_cm_contract():
    settings = StrategySettings(strategies=[
        StrategyConfig(name="m", kind="MOMENTUM_RSI", symbols=["bse_cm:RELIANCE-EQ"])])

    [strategy] = build_strategies(settings, InstrumentBook([NSE, BSE]))

    assert strategy.tokens == frozenset({BSE.token})
