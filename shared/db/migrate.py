"""Versioned SQL migrations (shared/db/migrations/NNNN_name.sql), applied in order and recorded in schema_migrations.

Talks to PostgreSQL through one asyncpg connection; a session advisory lock serialises concurrent migrators.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from shared.db.partitions import lock_holders
from shared.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; two processes migrating the same database queue on it.
LOCK_KEY = 0x4E454F50554C5345  # "NEOPULSE"
# How long one try of a migration waits for a table lock. While it waits, its lock request is queued in front of
# every later statement on that table (the OMS's ledger writes): kept well below their own lock_timeout (5 s by
# default; prepare() halves a lower one) so none of them fails for it. A try that times out is rolled back and
# retried after a pause, for up to LOCK_WAIT_S in all: a long reader (pg_dump, a psql left in a transaction)
# holds the migration up, never the writers.
DDL_LOCK_TIMEOUT_MS = 1_000
LOCK_WAIT_S = 120.0
_RETRY_PAUSES_S = (0.5, 1.0, 2.0, 5.0)  # then 5 s each: the writers run freely in between
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_FAILED_NOTE = "in migration "
# What a migration must not say at top level: each ends or starts the transaction the runner wraps it in, and the
# rest of the file would then run outside it (half-applied on failure). PREPARE is checked for TRANSACTION only.
_TRANSACTION_CONTROL = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE"}
# One lexical token of SQL: what can hide a ';' or a keyword (comment, string, quoted identifier, dollar-quoted
# body), a word, or one other character. Nested /* */ comments are handled in _sql_tokens.
_TOKEN = re.compile(r"""
      --[^\n]*
    | /\*
    | [Ee]'(?:[^'\\]|\\.|'')*'?
    | '(?:[^']|'')*'?
    | "(?:[^"]|"")*"?
    | \$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$
    | [A-Za-z_][A-Za-z0-9_$]*
    | \s+
    | .""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None  # None = pending
    known: bool = True  # False: recorded in the database, but this code has no such file (a newer version's)


def discover(directory: Path | None = None) -> list[Migration]:
    """Every NNNN_name.sql in version order; a duplicate version is a packaging error."""
    directory = MIGRATIONS_DIR if directory is None else directory
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ConfigError(f"migration file {path.name} must be named NNNN_lower_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"two migrations share version {version:04d}: {found[version].name}, {match.group(2)}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, directory: Path | None = None, *,
                  lock_timeout_ms: int = DDL_LOCK_TIMEOUT_MS, lock_wait_s: float = LOCK_WAIT_S) -> list[int]:
    """Apply pending migrations, each in its own transaction; returns the versions applied now.

    A migration file with top-level transaction control (COMMIT, BEGIN...) is refused before anything runs. A
    database migrated by newer code (a version recorded that this code does not have) is refused before anything
    runs: applying older migrations on top of a newer schema could corrupt the order ledger. A migration that fails
    is rolled back whole and re-raised with a note naming its file (failed_migration() reads it). A migration's
    table locks are waited for `lock_timeout_ms` at a time, for up to `lock_wait_s` in all (_apply_when_unlocked).
    """
    migrations = discover(directory)
    for m in migrations:
        _refuse_transaction_control(m)
    await conn.execute("SET lock_timeout = 0")  # another migrator may take a while: wait for it (its lock only)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute("RESET lock_timeout")
        deadline = time.monotonic() + lock_wait_s
        await _ensure_table(conn)
        applied = await _applied(conn)
        _refuse_unknown(migrations, applied)
        done = []
        for m in migrations:
            if m.version in applied:
                _check_unchanged(m, applied[m.version][1])
                continue
            await _apply_when_unlocked(conn, m, lock_timeout_ms, lock_wait_s, deadline)
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def failed_migration(exc: BaseException) -> str | None:
    """The file name of the migration `exc` was raised by, when migrate() raised it from one."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(_FAILED_NOTE):
            return str(note[len(_FAILED_NOTE):].split(" ", 1)[0])
    return None


async def status(conn: asyncpg.Connection, directory: Path | None = None) -> list[MigrationStatus]:
    """Each known migration with its applied time (None while pending), and any applied one this code lacks."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations") if exists else []
    when = {r["version"]: r["applied_at"] for r in rows}
    known = [MigrationStatus(m.version, m.name, when.get(m.version)) for m in discover(directory)]
    versions = {m.version for m in known}
    unknown = [MigrationStatus(r["version"], r["name"], r["applied_at"], known=False)
               for r in rows if r["version"] not in versions]
    return sorted(known + unknown, key=lambda m: m.version)


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute("""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer     PRIMARY KEY,
            name        text        NOT NULL,
            checksum    text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )""")


async def _applied(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of every migration recorded."""
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


async def _apply_when_unlocked(conn: asyncpg.Connection, m: Migration, lock_timeout_ms: int, lock_wait_s: float,
                               deadline: float) -> None:
    """_apply, tried again while a lock it needs is held by another session (each try rolled back, and logged with
    who holds its tables) until `deadline`: then a ConfigError naming them."""
    pauses = iter(_RETRY_PAUSES_S)
    while True:
        try:
            return await _apply(conn, m, lock_timeout_ms)
        except asyncpg.LockNotAvailableError:
            holders = await lock_holders(conn, _words(m))
        pause = next(pauses, _RETRY_PAUSES_S[-1])
        if time.monotonic() + pause > deadline:
            raise ConfigError(f"migration {m.filename} could not lock its tables within {lock_wait_s:g} s: "
                              f"{_describe(holders)}; end that session (or wait for it to finish) and start again. "
                              "Nothing of the migration was applied") from None
        log.warning("migration waits for a table lock another session holds; retrying", extra={
            "migration": m.filename, "holders": holders, "retry_in_s": pause,
            "gives_up_in_s": round(deadline - time.monotonic(), 1)})
        await asyncio.sleep(pause)


async def _apply(conn: asyncpg.Connection, m: Migration, lock_timeout_ms: int) -> None:
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                               m.version, m.name, m.checksum)
    except asyncpg.LockNotAvailableError:
        raise  # not the migration's fault: _apply_when_unlocked tries it again
    except asyncpg.PostgresError as exc:
        exc.add_note(f"{_FAILED_NOTE}{m.filename} (rolled back: nothing of it was applied)")
        raise


def _words(m: Migration) -> list[str]:
    """Every word of the migration: among them, the names of the tables it locks (lock_holders keeps those)."""
    return sorted({w.lower() for _, words, _ in _statements(m.sql) for w in words})


def _describe(holders: list[dict[str, object]]) -> str:
    """Who held the tables, for the one-line error: pid, user, application, state and since when."""
    if not holders:
        return "another session held a lock it needs throughout (it has ended since)"
    said = [f"pid {h['pid']} (user {h['usename']}, application {h['application_name'] or '-'}, {h['state']}, "
            f"in a transaction since {h['since']})" for h in holders[:3]]
    more = f" and {len(holders) - 3} more" if len(holders) > 3 else ""
    return "held by " + ", ".join(said) + more


def _refuse_unknown(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    """Migrations recorded that this code does not have: with none of ours pending, an older release running on a
    newer schema (a rollback; migrations only add, with defaults), allowed with a warning; with ours pending, two
    lines of schema history that diverged, refused before anything runs."""
    known = {m.version for m in migrations}
    unknown = [f"{v:04d}_{applied[v][0]}.sql" for v in sorted(applied) if v not in known]
    if not unknown:
        return
    pending = [m.filename for m in migrations if m.version not in applied]
    if not pending:
        log.warning("the database was migrated by a newer NeoPulse; running on it", extra={"unknown": unknown})
        return
    raise ConfigError(f"the database has migration(s) {', '.join(unknown)} that this code does not have, and this "
                      f"code's {', '.join(pending)} is not applied: it was migrated by a newer or another NeoPulse; "
                      "upgrade this one (or restore a backup taken before); nothing was changed")


def _check_unchanged(m: Migration, checksum: str) -> None:
    if checksum != m.checksum:
        raise ConfigError(f"migration {m.filename} changed after it was applied; "
                          "add a new migration instead of editing an applied one")


def transaction_control(sql: str) -> tuple[int, str] | None:
    """(line, statement) of the first top-level statement in `sql` that begins, ends or prepares a transaction."""
    for line, words, text in _statements(sql):
        first, second = (w.upper() for w in [*words[:2], "", ""][:2])
        if first in _TRANSACTION_CONTROL and (first != "PREPARE" or second == "TRANSACTION"):
            return line, " ".join(text.split())[:60]
    return None


def _refuse_transaction_control(m: Migration) -> None:
    found = transaction_control(m.sql)
    if found is not None:
        line, statement = found
        raise ConfigError(f"migration {m.filename} line {line}: {statement} would end the transaction the migration "
                          "runs in (each migration already runs in its own); remove it. Nothing was applied")


def _statements(sql: str) -> list[tuple[int, list[str], str]]:
    """Top-level statements as (line, words, text): split at ';' outside comments, strings, quoted identifiers,
    dollar-quoted bodies and the BEGIN ATOMIC ... END body of a SQL-standard function (psql splits the same way)."""
    out: list[tuple[int, list[str], str]] = []
    start, words, depth = -1, list[str](), 0  # depth: BEGIN ATOMIC / CASE blocks open inside a CREATE statement
    for pos, kind, tok in _sql_tokens(sql):
        if kind == "word":
            upper = tok.upper()
            if start < 0:
                start = pos
            if words and words[0].upper() == "CREATE":
                if (upper == "ATOMIC" and words[-1].upper() == "BEGIN") or (upper == "CASE" and depth):
                    depth += 1
                elif upper == "END" and depth:
                    depth -= 1
            words.append(tok)
        elif tok == ";" and not depth:
            if start >= 0:
                out.append((sql.count("\n", 0, start) + 1, words, sql[start:pos]))
            start, words = -1, []
        elif kind == "other" and start < 0:
            start = pos
    if start >= 0:
        out.append((sql.count("\n", 0, start) + 1, words, sql[start:]))
    return out


def _sql_tokens(sql: str) -> list[tuple[int, str, str]]:
    """(offset, kind, text) of each token that matters for splitting: kind is 'word' or 'other' (anything else
    outside comments; strings and quoted identifiers are 'other' too, so they start a statement but say nothing)."""
    out: list[tuple[int, str, str]] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match is not None  # the last alternative matches any character
        tok, end = match.group(), match.end()
        if tok == "/*":
            end = _comment_end(sql, end)
        elif match.group("tag") is not None or tok == "$$":
            close = sql.find(tok, end)
            end = len(sql) if close < 0 else close + len(tok)
            out.append((pos, "other", tok))
        elif tok[0].isalpha() or tok[0] == "_":
            out.append((pos, "word", tok))
        elif not tok.isspace() and not tok.startswith("--"):
            out.append((pos, "other", tok))
        pos = end
    return out


def _comment_end(sql: str, pos: int) -> int:
    """Offset just past the /* */ comment whose opening ends at `pos` (they nest in PostgreSQL)."""
    depth = 1
    while depth and pos < len(sql):
        if sql.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif sql.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
        else:
            pos += 1
    return pos
