"""How the dashboard writes times, ages, payloads and labels: the templates' filters."""

from __future__ import annotations

import reprlib
from datetime import UTC, datetime
from typing import Any

from ..registry import lookup

__all__ = ["age", "label_of", "payload_repr", "when"]

_REPR = reprlib.Repr()
_REPR.maxstring = 2000
_REPR.maxother = 2000
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 50
_REPR.maxlevel = 4


def label_of(name: str | None) -> str | None:
    """The ``label=`` of the job defined under ``name`` in this process, if any.

    Example:
        >>> label_of("no.such.job") is None
        True
    """
    definition = None if name is None else lookup(name)
    return None if definition is None else definition.label


def when(moment: datetime | None) -> str:
    """A time in UTC, to the second; ``-`` for none.

    Example:
        >>> when(datetime(2026, 5, 1, 12, 0, 7, 123, tzinfo=UTC))
        '2026-05-01 12:00:07 UTC'
    """
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """A duration as an operator reads it at a glance; ``-`` for none.

    Example:
        >>> age(3725), age(42.5), age(None)
        ('1h 2min', '42s', '-')
    """
    if seconds is None:
        return "-"
    whole = int(max(seconds, 0))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{whole // size}{unit} {rest}{sub}" if rest else f"{whole // size}{unit}"
    if whole >= 60:
        return f"{whole // 60}min {whole % 60}s" if whole % 60 else f"{whole // 60}min"
    return f"{whole}s"


def payload_repr(value: Any) -> str:
    """A bounded ``repr`` of a loaded payload: a page never holds megabytes of it.

    Example:
        >>> payload_repr(((1, "a"), {"to": "x@example.com"}))
        "((1, 'a'), {'to': 'x@example.com'})"
    """
    return _REPR.repr(value)
