"""``report_progress()``: how far a running job got, written with its lease renewals.

A run's progress lives in a :class:`Progress` cell that the worker puts in the
run's context (a plain ``def`` job's thread gets the same cell through the
copied context). ``report_progress`` only sets it: no ``await``, no round
trip. The worker's next lease renewal writes what changed (the same
statement, see ``renew_leases_progress``), and the attempt's outcome writes
the last value.
"""

from __future__ import annotations

import contextvars
import math
import threading

from .context import current_job

__all__ = ["Progress", "report_progress"]

_MAX_MESSAGE = 1000
"""Characters of a message kept: a progress line, not a log."""

_cell: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "koyojobs_progress", default=None
)


class Progress:
    """One run's latest ``report_progress()``, and whether a renewal has written it."""

    __slots__ = ("_lock", "dirty", "fraction", "message")

    def __init__(self) -> None:
        self.fraction: float | None = None
        self.message: str | None = None
        self.dirty = False
        """Reported since the last renewal that wrote it."""
        self._lock = threading.Lock()

    def set(self, fraction: float, message: str | None) -> None:
        with self._lock:  # a def job's thread writes while the event loop reads
            self.fraction, self.message, self.dirty = fraction, message, True

    def take(self) -> tuple[float | None, str | None]:
        """What to write now (``None``: nothing new); marks it written."""
        with self._lock:
            if not self.dirty:
                return None, None
            self.dirty = False
            return self.fraction, self.message

    def unwritten(self) -> None:
        """The write failed: the next renewal writes it again."""
        with self._lock:
            if self.fraction is not None:
                self.dirty = True


def bind(cell: Progress) -> contextvars.Token[Progress | None]:
    """Make ``cell`` the progress of the run in this context (the worker's)."""
    return _cell.set(cell)


def unbind(token: contextvars.Token[Progress | None]) -> None:
    """Undo :func:`bind`."""
    _cell.reset(token)


def report_progress(fraction: float, message: str | None = None) -> None:
    """Record how far the running job got: ``fraction`` from 0 to 1, and a short message.

    Works from ``async def`` and ``def`` jobs alike, with no ``await``: the
    worker writes it with its next lease renewal (every third of the lease)
    and when the attempt ends, never with a round trip of its own.
    :meth:`koyojobs.Broker.get_job` reads it as ``Job.progress`` and
    ``Job.progress_message``; ``koyojobs jobs`` and the dashboard show it.
    Outside a running job it raises ``RuntimeError``; in the synchronous mode
    it is checked and dropped.

    Example:
        >>> from koyojobs import define_job, report_progress
        >>> @define_job(name="doc.progress.import_rows")
        ... def import_rows(rows: list[str]) -> int:
        ...     for done, row in enumerate(rows, 1):
        ...         report_progress(done / len(rows), f"row {done} of {len(rows)}")
        ...     return len(rows)
        >>> report_progress(0.5)
        Traceback (most recent call last):
        ...
        RuntimeError: report_progress() was called outside a running job
    """
    if current_job() is None:
        raise RuntimeError("report_progress() was called outside a running job")
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not math.isfinite(fraction)
        or not 0 <= fraction <= 1
    ):
        raise ValueError(f"report_progress() needs a fraction from 0 to 1, got {fraction!r}")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"report_progress() message must be a str, got {message!r}")
        # PostgreSQL text holds no NUL, and a lone surrogate would fail the write.
        message = message[:_MAX_MESSAGE].replace("\x00", "\\x00")
        message = message.encode("utf-8", "backslashreplace").decode()
    cell = _cell.get()
    if cell is not None:
        cell.set(float(fraction), message)
