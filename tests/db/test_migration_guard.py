"""Migrations that would end the transaction they run in (top-level BEGIN, COMMIT, ROLLBACK, END...) are refused
before anything runs; the same words in comments, strings, identifiers and function bodies are fine."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import migrate
from shared.errors import ConfigError

_HARMLESS = """-- COMMIT the change; END of comment
/* ROLLBACK; /* a nested END; */ still the comment; COMMIT; */
CREATE TABLE "commit" ("end" text DEFAULT 'BEGIN; COMMIT;', note text DEFAULT E'it\\'s; END', begin_at int);
CREATE FUNCTION plain() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;
CREATE FUNCTION atomic() RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT 1;
    SELECT CASE WHEN true THEN 2 END;
END;
DO $$ BEGIN PERFORM 1; END $$;
SELECT 1 AS "rollback; commit";
"""


async def _migrate(dsn: str, directory) -> tuple[list[int] | BaseException, bool]:
    """(versions applied or the exception raised, whether schema_migrations exists afterwards)."""
    conn = await asyncpg.connect(dsn)
    try:
        try:
            result: list[int] | BaseException = await migrate.migrate(conn, directory)
        except ConfigError as exc:
            result = exc
        touched = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    finally:
        await conn.close()
    return result, touched


@pytest.mark.parametrize(
    "statement",
    ["COMMIT", "commit work", "BEGIN", "END", "ROLLBACK", "abort", "START TRANSACTION", "PREPARE TRANSACTION 'x'"],
)
async def test_a_migration_with_top_level_transaction_control_is_refused_before_anything_runs(
    empty_db, home, statement
):
    (home / "0001_fine.sql").write_text("CREATE TABLE fine (x int);")
    (home / "0002_escapes.sql").write_text(f"CREATE TABLE a (x int);\n\n  {statement};\nCREATE TABLE b (x int);\n")

    result, touched = await _migrate(empty_db, home)

    assert isinstance(result, ConfigError), result
    assert f"0002_escapes.sql line 3: {statement}" in str(result)
    assert touched is False


async def test_a_trailing_commit_without_a_semicolon_is_refused(empty_db, home):
    (home / "0001_tail.sql").write_text("CREATE TABLE a (x int);\n-- done\nCOMMIT\n")

    result, _ = await _migrate(empty_db, home)

    assert isinstance(result, ConfigError) and "0001_tail.sql line 3: COMMIT" in str(result)


async def test_transaction_words_in_comments_strings_identifiers_and_function_bodies_are_applied(empty_db, home):
    (home / "0001_words.sql").write_text(_HARMLESS)

    result, _ = await _migrate(empty_db, home)

    assert result == [1]


def test_the_shipped_migrations_have_no_transaction_control():
    assert [m.filename for m in migrate.discover()][:1] == ["0001_initial.sql"]
    for m in migrate.discover():
        assert migrate.transaction_control(m.sql) is None, m.filename
