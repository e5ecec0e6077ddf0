"""DATABASE_URL in start-up errors: only host:port/db parsed from a postgresql:// URL is ever shown; text of any
other form (where the password may sit anywhere) is refused before connecting, without being echoed."""

from __future__ import annotations

import pytest

from shared.db.database import UNPARSED_URL, connect_pool, open_database, where_of
from shared.errors import ConfigError

SECRET = "hunter2"
NOT_A_URL = [
    f"host=127.0.0.1 port=1 user=neo password={SECRET} dbname=neopulse",  # libpq's keyword/value form
    f"neo:{SECRET}@127.0.0.1:1/neopulse",  # the scheme left out
    f"postgresql:/neo:{SECRET}@127.0.0.1:1/neopulse",  # a slash lost
    f"mysql://neo:{SECRET}@127.0.0.1:1/neopulse",  # another scheme
]
URL_WITH_SECRET_ELSEWHERE = [
    f"postgresql://neo@127.0.0.1:1/neopulse?password=hun@{SECRET}",  # an "@" in the query's password
    f"postgresql://neo:pa?{SECRET}@127.0.0.1:1/neopulse",  # an unencoded "?" in the password
    f"postgresql://neo:pa/{SECRET}@127.0.0.1:1/neopulse",  # an unencoded "/" in the password
]


@pytest.mark.parametrize("url", NOT_A_URL + URL_WITH_SECRET_ELSEWHERE)
def test_where_of_never_shows_the_password(url):
    assert SECRET not in where_of(url)


@pytest.mark.parametrize("url", NOT_A_URL)
def test_where_of_shows_nothing_of_text_that_is_not_a_postgresql_url(url):
    assert where_of(url) == UNPARSED_URL


@pytest.mark.parametrize("url", ["postgresql://neo:pw@db.example:5433/ledger", "postgres://neo@db.example:5433/ledger",
                                 "POSTGRESQL://neo:p@ss@db.example:5433/ledger?sslmode=require"])
def test_where_of_names_host_port_and_database_of_a_postgresql_url(url):
    assert where_of(url) == "db.example:5433/ledger"


@pytest.mark.parametrize("url", NOT_A_URL)
async def test_a_database_url_not_of_the_postgresql_form_is_refused_without_echoing_it(url):
    with pytest.raises(ConfigError) as err:
        await connect_pool(url)

    assert "DATABASE_URL" in str(err.value) and SECRET not in str(err.value)


async def test_open_database_refuses_a_keyword_string_before_connecting(home):
    with pytest.raises(ConfigError) as err:
        await open_database(f"host=db.example user=neo password={SECRET} dbname=neopulse", home)

    assert "is not a postgresql://" in str(err.value)
