"""What a database holds, stamped by the first run that uses it: paper or live trading, a simulated or the real market.

A run of another kind is refused before it reads anything (ConfigError); talks to neopulse_meta (migration 0013).
"""

from __future__ import annotations

import logging

import asyncpg

from shared.errors import ConfigError

log = logging.getLogger(__name__)

TRADING, MARKET = "trading", "market"
_WORDS = {"paper": "paper trading", "live": "live trading", "simulated": "a simulated market (simulator or synthetic)",
          "real": "Kotak's real market"}
# Why a run must not share a database holding another kind's data, by (key, what it holds, what this run is).
_HARM = {
    (TRADING, "paper", "live"): "the live OMS would rebuild its positions from the paper fills, and risk would square "
                                "them off with real orders",
    (TRADING, "live", "paper"): "the paper OMS would rebuild its positions from the real orders, and write its paper "
                                "fills into the live ledger",
    (MARKET, "simulated", "real"): "its strategies would warm up from the simulated candles, stored under the real "
                                   "instruments' tokens",
    (MARKET, "real", "simulated"): "its made-up ticks would be stored under the real instruments' tokens, and warm up "
                                   "the next real-market run's strategies",
}
# Rows that a run leaves behind: a database with some and no stamp was used before stamps existed.
_USED = ("SELECT EXISTS (SELECT 1 FROM order_ledger) OR EXISTS (SELECT 1 FROM market_ticks) "
         "OR EXISTS (SELECT 1 FROM risk_state) OR EXISTS (SELECT 1 FROM strategy_state)")


async def claim(pool: asyncpg.Pool, trading: str | None, market: str | None,
                where: str = "this database") -> dict[str, str]:
    """Stamp a database on its first use with this run's `trading` ("paper" | "live") and `market` ("simulated" |
    "real"), else check them against the stamp: a ConfigError naming both and the way out when they differ, with
    nothing written. None claims nothing (a replay: it writes nothing, and reads any market's days). Concurrent
    first claims (split mode's processes) agree: one stamp wins, the others are checked against it. Returns the
    stamp as it stands.

    A stamp on a database that holds nothing (a first start that failed after opening it, at the Kotak login) is
    moved to this run's use. A database used before stamps existed is stamped as this run's only for paper
    trading on a simulated market, with a warning; for live trading or the real market its use must be confirmed
    (`neopulse db stamp`): its paper fills would be taken for live positions."""
    wanted = {key: value for key, value in ((TRADING, trading), (MARKET, market)) if value is not None}
    async with pool.acquire() as conn, conn.transaction():
        stamped = await conn.fetch(
            "INSERT INTO neopulse_meta (key, value) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT (key) DO NOTHING RETURNING key", list(wanted), list(wanted.values()))
        stamp_now = await held(conn, lock=True)
        differing = [key for key, value in wanted.items() if stamp_now[key] != value]
        if differing or stamped:
            used = await conn.fetchval(_USED)
            if differing and not used:
                log.info("this database holds no orders, ticks or state: its stamp moves to this run's use",
                         extra={"database_use": wanted, "was": stamp_now})
                await _write(conn, wanted)
                stamp_now |= wanted
            elif differing:  # raised inside the transaction: a partial stamp is rolled back
                raise ConfigError(_refusal(where, stamp_now, wanted, differing[0]))
            elif used and wanted != {TRADING: "paper", MARKET: "simulated"}:
                raise ConfigError(
                    f"{where} holds orders or ticks from before NeoPulse recorded what a database holds, and this run "
                    f"is {_describe(wanted)}: were they another kind's (paper fills, simulated ticks), it would take "
                    "them for its own. If it only ever held this kind's, confirm it with `neopulse db stamp "
                    f"{wanted.get(TRADING, 'live')} {wanted.get(MARKET, 'real')}`; else give this run a database of "
                    "its own: another data_dir (data_dir in the config file, or NEOPULSE_DATA_DIR) or DATABASE_URL; "
                    "nothing was changed")
            elif used:
                log.warning("this database holds orders or ticks from before NeoPulse recorded what a database "
                            "holds: it is now stamped as paper trading on a simulated market, this run's. If it held "
                            "live orders or Kotak's ticks, stop and give each kind its own data_dir or DATABASE_URL",
                            extra={"database_use": wanted})
    return stamp_now


async def stamp(conn: asyncpg.Connection, trading: str, market: str) -> dict[str, str]:
    """Set what the database holds, whatever it held (`neopulse db stamp`, an operator's word); returns what it
    held before."""
    async with conn.transaction():
        before = await held(conn)
        await _write(conn, {TRADING: trading, MARKET: market})
    return before


async def held(conn: asyncpg.Connection, lock: bool = False) -> dict[str, str]:
    """What the database is stamped with ({} before its first run); `lock`: its rows locked until the transaction
    ends (a claim's check and move of the stamp)."""
    return {r["key"]: r["value"] for r in await conn.fetch(
        "SELECT key, value FROM neopulse_meta WHERE key = ANY($1::text[])" + (" FOR UPDATE" if lock else ""),
        [TRADING, MARKET])}


def describe(use: dict[str, str]) -> str:
    """"paper trading on a simulated market (simulator or synthetic)", or "not stamped yet"."""
    return _describe(use) if use else "not stamped yet"


async def _write(conn: asyncpg.Connection, use: dict[str, str]) -> None:
    await conn.execute(
        "INSERT INTO neopulse_meta (key, value) SELECT * FROM unnest($1::text[], $2::text[]) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, set_at = now()", list(use), list(use.values()))


def _refusal(where: str, held: dict[str, str], wanted: dict[str, str], key: str) -> str:
    harm = _HARM.get((key, held[key], wanted[key]), "their orders and ticks would be taken for this run's")
    return (f"{where} holds {_describe(held)}; this run is {_describe(wanted)}: {harm}. Give this run a database of "
            "its own: another data_dir (data_dir in the config file, or NEOPULSE_DATA_DIR) or DATABASE_URL; nothing "
            "was changed")


def _describe(use: dict[str, str]) -> str:
    return " on ".join(_WORDS.get(use[key], repr(use[key])) for key in (TRADING, MARKET) if key in use)
