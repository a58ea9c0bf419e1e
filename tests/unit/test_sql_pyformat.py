"""pyformat: one named query serves asyncpg ($n) and psycopg or Django (%s)."""

from __future__ import annotations

import pytest

from koyojobs.sql import QUERIES, pyformat


def test_parameters_become_placeholders_in_order_with_their_argument_index() -> None:
    assert pyformat("SELECT $1, $2::text[], $1") == ("SELECT %s, %s::text[], %s", (0, 1, 0))
    assert pyformat("SELECT $10, $2") == ("SELECT %s, %s", (9, 1))


@pytest.mark.parametrize(
    ("sql", "rendered"),
    [
        ("SELECT 'a $1 b'", "SELECT 'a $1 b'"),
        ("SELECT 'it''s $1'", "SELECT 'it''s $1'"),
        ('SELECT "$1"', 'SELECT "$1"'),
        ("SELECT 1 -- $1 here", "SELECT 1 -- $1 here"),
        ("SELECT $$ $1 $$", "SELECT $$ $1 $$"),
        ("SELECT $f$ $1 $f$", "SELECT $f$ $1 $f$"),
    ],
)
def test_dollars_that_are_no_parameters_stay(sql: str, rendered: str) -> None:
    assert pyformat(sql) == (rendered, ())


def test_every_percent_is_doubled_even_quoted() -> None:
    # psycopg reads % anywhere in the statement, quotes or not.
    assert pyformat("SELECT 7 % $1, '100%', $$%$$ -- 5%") == (
        "SELECT 7 %% %s, '100%%', $$%%$$ -- 5%%",
        (0,),
    )


@pytest.mark.parametrize(
    ("name", "parameters"), [("insert_job", 8), ("insert_jobs", 8), ("insert_jobs_unique", 9)]
)
def test_the_enqueue_statements_render(name: str, parameters: int) -> None:
    sql, order = pyformat(QUERIES[name])
    # Every parameter once ($8, the trace context, comes last in the unique insert's text).
    assert sorted(order) == list(range(parameters))
    assert "$" not in sql and sql.count("%s") == parameters
