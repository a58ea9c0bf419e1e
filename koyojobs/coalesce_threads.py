"""Coalesced enqueue for threads: :func:`koyojobs.sync.enqueue` from many at once.

A threaded web server's requests that each enqueue one job would each take a
connection of koyojobs' own (more than the few kept idle are opened and
closed again), a round trip and a commit. Here, as in
:mod:`koyojobs.enqueuer` for tasks, the calls of one process share
statements: a thread that finds fewer than :data:`FLUSHERS` flushing becomes
one and sends everything waiting (its own call first, so a lone call goes at
once: there is no timer); the others wait for their ids. A flusher whose
own call is done hands the flushing to the first thread still waiting, so no
thread serves others longer than its own batch.

Each caller gets its own id or its own error, by the same rules as the async
path: a batch refused by the database (or before it was sent) is sent again
call by call; a batch whose connection broke fails every caller of it, as a
lone call would, since it may have committed. ``connection=`` calls never
coalesce.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .jobs import JobCall

__all__ = ["FLUSHERS", "ThreadCoalescer", "may_have_committed"]

FLUSHERS = 4
"""Threads that send batches at once (each on a connection of its own)."""


def may_have_committed(exc: BaseException) -> bool:
    """Whether a psycopg statement that raised ``exc`` may still have committed.

    Example:
        >>> may_have_committed(ConnectionResetError()), may_have_committed(ValueError())
        (True, False)
    """
    if isinstance(exc, OSError):  # a connection of our own could not be opened, or broke
        return True
    psycopg = _psycopg()
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return False  # raised before anything was sent (a payload that cannot be signed)
    state = exc.sqlstate or ""
    if state:
        return state.startswith(("08", "57P"))  # the server going away
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _psycopg() -> Any:
    import sys

    return sys.modules.get("psycopg")


class _Pending:
    __slots__ = ("call", "done", "error", "job_id", "lead", "woken")

    def __init__(self, call: JobCall[Any]) -> None:
        self.call = call
        self.woken = threading.Event()
        self.done = False
        self.lead = False
        self.job_id = 0
        self.error: BaseException | None = None


class ThreadCoalescer:
    """Single sync enqueues of a process, merged into batches while others are in flight.

    ``insert(calls)`` inserts a batch in one statement, on a connection of
    koyojobs' own, and returns the ids in order.

    Example:
        >>> coalescer = ThreadCoalescer(lambda calls: list(range(len(calls))))
        >>> from koyojobs import define_job
        >>> @define_job(name="doc.threads.ping")
        ... def ping() -> None: ...
        >>> call = ping()
        >>> call.consume()
        >>> coalescer.enqueue(call)
        0
    """

    def __init__(self, insert: Callable[[list[JobCall[Any]]], list[int]]) -> None:
        self._insert = insert
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._active = 0

    def enqueue(self, call: JobCall[Any]) -> int:
        """Insert ``call`` (already consumed); its id, or the error of its own row."""
        mine = _Pending(call)
        with self._lock:
            self._waiting.append(mine)
            if self._active < FLUSHERS:
                self._active += 1
                mine.lead = True
        if not mine.lead:
            mine.woken.wait()
        if mine.lead:
            self._flush_until(mine)
        if mine.error is not None:
            raise mine.error
        return mine.job_id

    def _flush_until(self, mine: _Pending) -> None:
        try:
            while True:
                with self._lock:
                    batch, self._waiting = self._waiting, []
                if batch:
                    self._send(batch)
                if mine.done:
                    break
        finally:
            with self._lock:
                if self._waiting:
                    # The flushing passes on: the first caller still waiting leads.
                    heir = self._waiting[0]
                    heir.lead = True
                    heir.woken.set()
                else:
                    self._active -= 1

    def _send(self, batch: list[_Pending]) -> None:
        try:
            ids = self._insert([p.call for p in batch])
        except Exception as exc:
            if len(batch) == 1 or may_have_committed(exc):
                for pending in batch:
                    self._finish(pending, error=exc)
                return
            for pending in batch:  # nothing was committed: each alone, its own outcome
                try:
                    (job_id,) = self._insert([pending.call])
                except Exception as alone:
                    self._finish(pending, error=alone)
                else:
                    self._finish(pending, job_id=job_id)
            return
        except BaseException as exc:
            for pending in batch:
                self._finish(pending, error=exc)
            raise
        for pending, job_id in zip(batch, ids, strict=True):
            self._finish(pending, job_id=job_id)

    @staticmethod
    def _finish(pending: _Pending, job_id: int = 0, error: BaseException | None = None) -> None:
        pending.job_id, pending.error, pending.done = job_id, error, True
        pending.woken.set()
