"""The seam :mod:`koyojobs.otel` plugs into: nothing here imports OpenTelemetry.

While :data:`observer` is ``None`` (no ``instrument()``), enqueues and
attempts take their plain paths: one attribute read each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from asyncpg import Record

    from .jobs import JobCall
    from .outcomes import Decision

__all__ = ["Chained", "Observer", "add", "observer"]


class Observer(Protocol):
    """What an instrumentation provides (see :mod:`koyojobs.otel`)."""

    def enqueue(
        self, calls: Sequence[JobCall[Any]]
    ) -> AbstractContextManager[tuple[str | None, Callable[[Sequence[int]], None]]]:
        """Around an insert: yields the trace context to store and a setter for the new ids."""
        ...

    def attempt(self, row: Record) -> AbstractContextManager[Callable[[Decision], None]]:
        """Around one attempt of the claimed ``row``: yields what records its decision."""
        ...


observer: Observer | None = None
"""The instrumentation in effect, if any."""


class Chained:
    """Two or more observers in one (OpenTelemetry's and Prometheus', say).

    The trace context stored with an enqueue is the first observer's that
    gives one; every observer records every attempt.
    """

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    @contextmanager
    def enqueue(
        self, calls: Sequence[JobCall[Any]]
    ) -> Iterator[tuple[str | None, Callable[[Sequence[int]], None]]]:
        with ExitStack() as stack:
            entered = [stack.enter_context(o.enqueue(calls)) for o in self.observers]
            context = next((c for c, _ in entered if c is not None), None)

            def inserted(ids: Sequence[int]) -> None:
                for _, setter in entered:
                    setter(ids)

            yield context, inserted

    @contextmanager
    def attempt(self, row: Record) -> Iterator[Callable[[Decision], None]]:
        with ExitStack() as stack:
            recorders = [stack.enter_context(o.attempt(row)) for o in self.observers]

            def finished(decision: Decision) -> None:
                for record in recorders:
                    record(decision)

            yield finished


def add(another: Observer) -> None:
    """Put ``another`` in effect beside the observer already in effect, if any."""
    global observer
    observer = another if observer is None else Chained(observer, another)
