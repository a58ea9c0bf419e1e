"""Small checks of option values, written once: whole counts and spans of seconds.

``bool`` is an ``int`` to Python but never a count or a duration to a user,
and NaN or infinity are never a duration; each check says so the same way.
"""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["INT_LIMIT", "is_count", "is_seconds"]

INT_LIMIT = 2**31
"""One past the largest value of PostgreSQL's ``integer``."""


def is_count(value: object, least: int = 1, below: int | None = None) -> TypeGuard[int]:
    """Whether ``value`` is a whole number (not a bool) from ``least``, under ``below``.

    Example:
        >>> is_count(3), is_count(0), is_count(True), is_count(0, least=0)
        (True, False, False, True)
        >>> is_count(2**31, below=2**31)
        False
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        return False
    return below is None or value < below


def is_seconds(value: object, *, zero: bool = False, most: float | None = None) -> TypeGuard[float]:
    """Whether ``value`` is a finite number of seconds (not a bool), above 0 (or 0 with ``zero``).

    Example:
        >>> is_seconds(1.5), is_seconds(0), is_seconds(0, zero=True), is_seconds(float("inf"))
        (True, False, True, False)
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if value < 0 or (value == 0 and not zero):
        return False
    return most is None or value <= most
