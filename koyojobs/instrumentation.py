"""The seam :mod:`koyojobs.otel` plugs into: nothing here imports OpenTelemetry.

While :data:`observer` is ``None`` (no ``instrument()``), enqueues and
attempts take their plain paths: one attribute read each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from asyncpg import Record

    from .jobs import JobCall
    from .outcomes import Decision

__all__ = ["Observer", "observer"]


class Observer(Protocol):
    """What an instrumentation provides (see :mod:`koyojobs.otel`)."""

    def enqueue(
        self, calls: Sequence[JobCall[Any]]
    ) -> AbstractContextManager[tuple[str, Callable[[Sequence[int]], None]]]:
        """Around an insert: yields the trace context to store and a setter for the new ids."""
        ...

    def attempt(self, row: Record) -> AbstractContextManager[Callable[[Decision], None]]:
        """Around one attempt of the claimed ``row``: yields what records its decision."""
        ...


observer: Observer | None = None
"""The instrumentation in effect, if any."""
