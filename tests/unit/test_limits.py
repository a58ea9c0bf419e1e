"""Unique keys from arguments: equal values key alike, however passed; others apart."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pendulum
import pytest

from koyojobs import define_job


@define_job(name="unit.keyed", unique=True)
async def keyed(value: Any, note: str = "") -> None: ...


def key(*args: Any, **kwargs: Any) -> str | None:
    call = keyed(*args, **kwargs)
    call.consume()
    return call.unique_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            pendulum.datetime(2026, 1, 1, 12, tz="Europe/Amsterdam"),
            dt.datetime(2026, 1, 1, 11, tzinfo=dt.UTC),
        ),
        (pendulum.date(2026, 1, 1), dt.date(2026, 1, 1)),
        (pendulum.duration(hours=25), dt.timedelta(days=1, hours=1)),
        (decimal.Decimal("1.0"), decimal.Decimal("1")),
        (-0.0, 0.0),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({1, 2, 3}, {3, 2, 1}),
    ],
)
def test_equal_values_key_alike(a: Any, b: Any) -> None:
    assert a == b
    assert key(a) == key(b)


def test_how_arguments_are_passed_does_not_matter() -> None:
    assert key(5) == key(value=5) == key(5, "") == key(5, note="")
    assert key(5) != key(5, "x")


@pytest.mark.parametrize(("a", "b"), [(1, 1.0), (1, True), (1, "1"), ((1,), [1]), (b"a", "a")])
def test_values_of_other_types_key_apart(a: Any, b: Any) -> None:
    assert key(a) != key(b)


def test_an_argument_that_contains_itself_is_a_one_line_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"job 'unit.keyed': unique=True cannot key arguments"):
        key(loop)
