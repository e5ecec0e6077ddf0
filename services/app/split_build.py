"""What one split-mode process builds: its module, with the parts only it needs (the market source and tick store,
the paper broker and ledger, the state stores), each opening its own database pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.app.config import AppSettings
from shared import config as cfg
from shared.bus import Bus
from shared.clock import Clock

log = logging.getLogger(__name__)


async def build_module(module: str, bus: Bus, app: AppSettings, toml: dict[str, Any], clock: Clock,
                       closers: list[Callable[[], Awaitable[Any]]]) -> Any:
    """The one Component of this process, with the parts only it needs (source; broker and ledger)."""
    if module == "ingestion":
        from services.ingestion.config import IngestionSettings
        from services.ingestion.module import IngestionModule
        from services.ingestion.synthetic import SyntheticSource

        settings = cfg.load(IngestionSettings, toml)
        source = SyntheticSource(settings, clock, app.symbols, seed=app.seed, indices=app.indices)
        writer, instrument_sink = await _tick_store(app, toml, clock, closers)
        return IngestionModule(bus, settings, source, clock, tick_sink=writer, instrument_sink=instrument_sink)
    if module == "oms":
        return await _build_oms(bus, app, toml, clock, closers)
    if module == "strategy":
        from services.strategy.config import StrategySettings
        from services.strategy.module import StrategyModule
        from services.strategy.state import PgStrategyState
        from services.strategy.warmup import StoredCandles

        # Its own pool, as risk's and the OMS's: the warm start reads the stored ticks (ingestion serves no candles),
        # and the strategies' pauses and run-time params are kept in strategy_state.
        if not app.use_database:
            return StrategyModule(bus, cfg.load(StrategySettings, toml), clock)
        pool = (await _open_database(app, toml, clock, closers)).pool
        return StrategyModule(bus, cfg.load(StrategySettings, toml), clock, StoredCandles(pool), PgStrategyState(pool))
    if module == "risk":
        from services.risk.config import RiskSettings
        from services.risk.module import RiskModule
        from services.risk.state import PgRiskState

        state = PgRiskState((await _open_database(app, toml, clock, closers)).pool) if app.use_database else None
        return RiskModule(bus, cfg.load(RiskSettings, toml), clock, state)
    from services.notifier.config import NotifierSettings
    from services.notifier.module import NotifierModule

    return NotifierModule(bus, cfg.load(NotifierSettings, toml, mode=app.mode), clock)


async def _open_database(app: AppSettings, toml: dict[str, Any], clock: Clock,
                         closers: list[Callable[[], Awaitable[Any]]]) -> Any:
    from shared.db.config import DatabaseSettings
    from shared.db.database import open_database
    from shared.db.stamp import claim

    url = app.database_url.get_secret_value() if app.database_url else None
    db = await open_database(url, app.data_dir, cfg.load(DatabaseSettings, toml), clock=clock)
    closers.append(db.close)
    # What every split process does, whatever the settings say (`neopulse serve` refuses live, kotak and replay):
    # paper trading on a generated market. The five race on a fresh database; the claim settles it.
    await claim(db.pool, "paper", "simulated", where=f"the database ({db.describe()})")
    return db


async def _tick_store(app: AppSettings, toml: dict[str, Any], clock: Clock,
                      closers: list[Callable[[], Awaitable[Any]]]) -> tuple[Any, Any]:
    """Split-mode ingestion persists ticks and the instrument master too, unless --no-db."""
    if not app.use_database:
        return None, None
    from services.ingestion.instrument_store import upsert_instruments
    from services.ingestion.tick_writer import TickWriter
    from shared.db.config import DatabaseSettings

    db = await _open_database(app, toml, clock, closers)

    async def instruments(items: list[Any]) -> None:
        await upsert_instruments(db.pool, items)

    return TickWriter(db.pool, cfg.load(DatabaseSettings, toml), clock=clock), instruments


async def _build_oms(bus: Bus, app: AppSettings, toml: dict[str, Any], clock: Clock,
                     closers: list[Callable[[], Awaitable[Any]]]) -> Any:
    """Paper OMS: VirtualBroker with no inner broker; PgLedger when a database is on, else in memory."""
    from services.ingestion.config import IngestionSettings
    from services.oms.charges import ChargeModel
    from services.oms.config import OmsSettings
    from services.oms.ledger import MemoryLedger
    from services.oms.module import OmsModule
    from services.oms.virtual_broker import VirtualBroker

    settings = cfg.load(OmsSettings, toml)
    ledger: Any = MemoryLedger()
    if app.use_database:
        from services.oms.ledger_pg import PgLedger
        from shared.db.config import DatabaseSettings

        db = await _open_database(app, toml, clock, closers)
        ledger = PgLedger(db.pool, cfg.load(DatabaseSettings, toml).ledger_durable_updates)
        log.info("oms ledger in PostgreSQL", extra={"database": db.describe()})
    stall_s = cfg.load(IngestionSettings, toml).stall_seconds  # the paper account's stalled feed is the watchdog's
    return OmsModule(bus, settings, VirtualBroker(None, ChargeModel.from_settings(settings), clock, stall_s=stall_s),
                     ledger, clock)
