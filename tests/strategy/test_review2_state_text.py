"""The strategy's saved state takes any text: jsonb refuses NUL and a lone surrogate, and a refused save lost the whole
state (a pause whose reason held one did not survive a restart: the restarted NeoPulse traded again).

Real parts: the strategy_state table of an embedded PostgreSQL (PgStrategyState), the engine's durable state."""

import pytest

from services.strategy.state import PgStrategyState
from tests.strategy.test_state import NOW, engine


@pytest.mark.parametrize("reason", ["halt\x00 news", "halt\ud800 news"], ids=["nul", "lone-surrogate"])
async def test_a_pause_whose_reason_jsonb_cannot_hold_survives_a_restart(db_pool, reason):
    before = engine()
    before.set_paused("mom", True, reason)
    await PgStrategyState(db_pool).save("mom", before.durable_state("mom"))

    after = engine()
    after.restore_state("mom", (await PgStrategyState(db_pool).load())["mom"], NOW)

    strategy = after.strategies["mom"]
    assert (strategy.paused, strategy.pause_reason) == (True, "halt\ufffd news")
