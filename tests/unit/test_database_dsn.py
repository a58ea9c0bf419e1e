"""Database's DSN: statement_cache_size in the query, conflicts, passwords kept out of messages."""

from __future__ import annotations

import pytest

from koyojobs import Database
from koyojobs.database import _redacted


@pytest.mark.parametrize(
    ("dsn", "left", "size"),
    [
        ("postgresql://h/app", "postgresql://h/app", 100),
        ("postgresql://h/app?statement_cache_size=0", "postgresql://h/app", 0),
        (
            "postgresql://h/app?sslmode=disable&statement_cache_size=0&application_name=a%20b",
            "postgresql://h/app?sslmode=disable&application_name=a%20b",
            0,
        ),
        ("postgresql://h/app?statement_cache_size=250#x", "postgresql://h/app#x", 250),
    ],
)
def test_statement_cache_size_is_taken_out_of_the_dsn(dsn: str, left: str, size: int) -> None:
    db = Database(dsn)
    assert (db.dsn, db.connect_options["statement_cache_size"]) == (left, size)
    assert db.pooler is (size == 0)


def test_the_keyword_and_the_dsn_must_agree() -> None:
    dsn = "postgresql://u:pw@h/app?statement_cache_size=0"
    assert Database(dsn, statement_cache_size=0).connect_options["statement_cache_size"] == 0
    with pytest.raises(ValueError, match="conflicts") as raised:
        Database(dsn, statement_cache_size=100)
    assert str(raised.value) == (
        "statement_cache_size=100 conflicts with statement_cache_size=0 in the DSN "
        "postgresql://u:***@h/app: give one"
    )


@pytest.mark.parametrize("value", ["-1", "x", "", "1.5", "%2B1"])
def test_a_bad_statement_cache_size_in_the_dsn_says_so(value: str) -> None:
    with pytest.raises(ValueError, match=r"statement_cache_size in the DSN .* must be an integer"):
        Database(f"postgresql://h/app?statement_cache_size={value}")


@pytest.mark.parametrize("value", [-1, 1.0, True, "0"])
def test_a_bad_statement_cache_size_keyword_says_so(value: object) -> None:
    with pytest.raises(ValueError, match=r"statement_cache_size must be an int >= 0"):
        Database("postgresql://h/app", statement_cache_size=value)  # type: ignore[arg-type]


def test_passwords_are_redacted_in_the_user_part_and_the_query() -> None:
    assert _redacted("postgresql://u:s3cret@h:5432/app?password=s3cret&sslmode=require") == (
        "postgresql://u:***@h:5432/app?password=***&sslmode=require"
    )
    assert _redacted("postgresql://u@h/app") == "postgresql://u@h/app"
    assert _redacted("not-a-url") == "not-a-url"
