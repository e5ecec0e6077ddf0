"""Fixtures for the risk tests: a tiny engine on a ManualClock inside a Wednesday NSE session."""

from __future__ import annotations

import pytest

from services.risk.engine import RiskEngine
from shared.clock import ManualClock, ist_ns
from tests.risk.factories import DAY, RELIANCE, instruments, limits


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(ist_ns(DAY, 10, 0))


@pytest.fixture
def engine(clock: ManualClock) -> RiskEngine:
    eng = RiskEngine(limits(), clock, instruments())
    eng.last_prices[RELIANCE] = 1290_00
    return eng
