"""How the monolith picks its parts: market source and broker by mode, persistence, the gRPC server.

The one place that knows which concrete source, broker and ledger run.
"""

from __future__ import annotations

import logging
from typing import Any

from services.app.config import AppSettings
from shared import config as cfg
from shared.clock import Clock

log = logging.getLogger(__name__)


async def market_and_broker(settings: AppSettings, toml: dict[str, Any], clock: Clock, res: Any,
                            info: dict[str, str], database: Any = None) -> tuple[Any, Any]:
    """(MarketSource, Broker) for the configured mode and source."""
    from services.ingestion.config import IngestionSettings
    from services.oms.charges import ChargeModel
    from services.oms.config import OmsSettings
    from services.oms.virtual_broker import VirtualBroker

    ingestion = cfg.load(IngestionSettings, toml)
    oms = cfg.load(OmsSettings, toml)
    if settings.source == "synthetic":
        from services.ingestion.synthetic import SyntheticSource

        source = SyntheticSource(ingestion, clock, settings.symbols, seed=settings.seed, indices=settings.indices)
        return source, VirtualBroker(None, ChargeModel.from_settings(oms), clock, stall_s=ingestion.stall_seconds)
    if settings.source == "replay":
        return await _replay(settings, clock, database, info), VirtualBroker(
            None, ChargeModel.from_settings(oms), clock, stall_s=ingestion.stall_seconds)
    inner, source = await _kotak(settings, toml, clock, res, info, oms.max_decision_age_s, database)
    if settings.mode == "live":
        return source, inner
    # The paper account's stalled-feed rule (fill_rules.py) goes by the ingestion watchdog's stall.
    return source, VirtualBroker(inner, ChargeModel.from_settings(oms), clock, stall_s=ingestion.stall_seconds)


async def _kotak(settings: AppSettings, toml: dict[str, Any], clock: Clock, res: Any,
                 info: dict[str, str], max_order_age_s: float, database: Any = None) -> tuple[Any, Any]:
    """KotakBroker + SFeed source through the real SDK, on one session: against Kotak, or the in-process simulator.
    Against Kotak (or a stand-in such as `neopulse sim`), the logins it refused are counted in the database, so a
    restart does not send a wrong MPIN again past [kotak] login_max_refusals (without one: in this process only)."""
    from services.ingestion.kotak_source import KotakFeedSource
    from shared.kotak.broker import KotakBroker
    from shared.kotak.config import KotakSettings
    from shared.kotak.refusals import store_for
    from shared.kotak.session import KotakSession

    kotak = cfg.load(KotakSettings, toml)
    if settings.source == "kotak":
        from services.app.monolith import check_kotak_source

        check_kotak_source(settings, kotak.missing_credentials())
    else:
        from services.simulator.server import Simulator

        # A market step every 50 ms: at 60x that is a tick per instrument every 3 simulated seconds.
        sim = Simulator(host="127.0.0.1", port=0, seed=settings.seed, clock=clock, tick_interval=0.05)
        port = await sim.start()
        res.on_close(sim.stop)
        kotak = kotak.for_simulator(f"http://127.0.0.1:{port}")
        info["simulator"] = f"http://127.0.0.1:{port} (feed ws://127.0.0.1:{port}/feed)"
    refusals = store_for(database.pool, kotak) if database is not None and settings.source == "kotak" else None
    broker = KotakBroker(kotak, KotakSession(kotak, refusals), max_order_age_s=max_order_age_s)
    await broker.start()
    res.on_close(broker.stop)
    stored = None
    if database is not None:  # a scrip master Kotak will not give at start: today's rows stored by an earlier start
        from services.ingestion.instrument_store import load_instruments

        def stored(day: Any) -> Any:
            return load_instruments(database.pool, stored_on=day)
    source = KotakFeedSource(kotak, settings.symbols, session=broker.session, indices=settings.indices, clock=clock,
                             stored=stored)
    return broker, source


async def _replay(settings: AppSettings, clock: Any, database: Any, info: dict[str, str]) -> Any:
    """Stored ticks of one IST day, paced at `speed` (paper orders only: replays never reach a broker)."""
    from services.ingestion.replay import ReplaySource
    from shared.clock import ist_ns
    from shared.db.queries import latest_tick_day
    from shared.errors import ConfigError

    if database is None:
        raise ConfigError("source=replay reads market_ticks: it needs the database (drop --no-db)")
    day = settings.replay_day or await latest_tick_day(database.pool)
    if day is None:
        raise ConfigError("source=replay: market_ticks is empty; run once on the simulator or Kotak first")
    info["replay"] = f"{day} at {settings.speed:g}x" if settings.speed else f"{day} as fast as it goes"
    # The day's midnight until its first tick: the strategies warm up from the stored days before it, as a live
    # start that morning would, and never from the day itself.
    clock.set(ist_ns(day, 0, 0))
    return ReplaySource(database.pool, settings.symbols, ist_ns(day, 0, 0), ist_ns(day, 23, 59, 59), clock,
                        settings.speed, indices=settings.indices)


async def persistence(app: Any, settings: AppSettings, toml: dict[str, Any], res: Any,
                      info: dict[str, str]) -> tuple[Any, Any, Any]:
    """(Ledger, tick sink, instrument sink): PostgreSQL (embedded unless DATABASE_URL) or in memory."""
    from services.oms.ledger import MemoryLedger

    if not settings.use_database:
        info["database"] = "off (in-memory ledger; ticks not stored)"
        return MemoryLedger(), None, None
    from services.ingestion.instrument_store import upsert_instruments
    from services.ingestion.tick_writer import TickWriter
    from services.oms.ledger_pg import PgLedger
    from shared.db.config import DatabaseSettings
    from shared.db.database import open_database
    from shared.db.stamp import claim

    url = settings.database_url.get_secret_value() if settings.database_url else None
    db_settings = cfg.load(DatabaseSettings, toml)
    # A replay's clock is still at 0 (it follows the ticks, once their day is known): partitions for 1970 would be
    # made in the trader's database (its DDL locking the live writer out). A replay writes no ticks: the real day's.
    db = await open_database(url, settings.data_dir, db_settings,
                             clock=None if settings.source == "replay" else app.clock)
    res.on_close(db.close)
    # Before anything reads it: a live run must not take a paper run's fills for its positions, nor a real-market
    # run a simulated market's candles for its warm-up.
    await claim(db.pool, *database_use(settings, toml), where=f"the database ({db.describe()})")
    app.database = db
    writer = TickWriter(db.pool, db_settings, clock=app.clock)  # run and closed by the ingestion module
    info["database"] = db.describe()
    if db.embedded is not None:
        info["psql"] = (f"make psql  (or: neopulse db psql --data-dir {settings.data_dir}); it starts the embedded "
                        "server when no run is using it")

    async def instruments(items):
        await upsert_instruments(db.pool, items)

    if settings.source == "replay":  # reads the stored ticks; its paper orders must not touch the real ledger
        info["ledger"] = "in memory (a replay never reads or writes the order ledger)"
        return MemoryLedger(), writer, instruments
    return PgLedger(db.pool, db_settings.ledger_durable_updates), writer, instruments


def database_use(settings: AppSettings, toml: dict[str, Any]) -> tuple[str | None, str | None]:
    """(trading, market) a run stamps its database with (shared/db/stamp.py). A replay claims neither: it writes no
    order, tick or state, and a trader's real-market days are what it replays. Kotak's market is real only at Kotak's
    own servers: [kotak] base_url (`neopulse sim`, a stand-in) or its UAT environment are simulated."""
    if settings.source == "replay":
        return None, None
    return settings.mode, "real" if settings.source == "kotak" and not kotak_stand_ins(toml) else "simulated"


def kotak_stand_ins(toml: dict[str, Any]) -> list[str]:
    """Where the Kotak source talks to that is not Kotak's production servers: its base_url, feed_url and
    order_feed_url when set (the feeds log in with the session's tokens), and "uat" for Kotak's test environment."""
    from shared.kotak.config import KotakSettings

    kotak = cfg.load(KotakSettings, toml)
    return [url for url in (kotak.base_url, kotak.feed_url, kotak.order_feed_url) if url] + (
        ["uat"] if kotak.environment == "uat" else [])


async def start_grpc(bus: Any, toml: dict[str, Any], port: int, ledger: Any = None) -> tuple[Any, int]:
    """One gRPC server exposing all five services over the bus (reflection + health), on [grpc] host, NOT_SERVING
    until the caller marks it ready; started before the modules so stream replay rings see every message.

    Its order-update stream knows where this process's sequences start and, from the OMS's durable `ledger`, how far
    the earlier processes got, as split mode's OMS does: a client resuming from before a restart is told DATA_LOSS
    when it missed what they published, never left with a silent gap."""
    from shared import rpc
    from shared.bus import Sequencer
    from shared.grpc.server import GrpcServer, GrpcSettings
    from shared.rpc import SERVICES

    server = GrpcServer(bus, list(SERVICES), cfg.load(GrpcSettings, toml), port=port)
    # Taken before the OMS starts: it numbers from its start time or above its ledger's highest (Book.start_sequence).
    # Only this stream: the other modules' sequencers may start before this (built before the server).
    updates = server.hubs[rpc.method("OrderService", "StreamOrderUpdates")]
    recorded = await ledger.max_sequence() if ledger is not None and ledger.durable else None
    updates.previous = {"all": recorded} if recorded is not None else None
    updates.started_at = max(Sequencer().value, recorded or 0)
    return server, await server.start()
