"""Enqueue from synchronous code: Django and Flask views, scripts, management commands.

:func:`enqueue` and :func:`enqueue_many` need no event loop. Given a psycopg
(3) connection or a Django connection to PostgreSQL, they insert on it, inside
whatever transaction it is in: rolled back, the job never existed; committed,
the workers wake by the same NOTIFY as for the async path (the insert's
statement trigger sends it). Given none, they use connections of their own to
``KOYOJOBS_DSN`` (or the DSN given to :func:`configure`), kept between calls
and safe to share between threads; single calls from many threads at once
share statements (see :mod:`koyojobs.coalesce_threads`). The payloads are the async path's bytes,
signed the same way (``KOYOJOBS_SECRET``, or the secret given to
:func:`configure`), and the statements are the same named queries.

psycopg is an optional dependency: ``pip install 'koyojobs[sync]'``. It is
imported on the first enqueue of a connection of koyojobs' own, never by
``import koyojobs``.

Example:
    >>> from koyojobs.sync import enqueue
    >>> job_id = enqueue(say_hello("Bogdan"))  # doctest: +SKIP
    >>> with transaction.atomic():  # doctest: +SKIP
    ...     order = Order.objects.create(total=12)
    ...     enqueue(send_receipt(order.id), connection=django.db.connection)
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from . import instrumentation, synchronous
from .coalesce_threads import ThreadCoalescer
from .context import current_broker, current_job, job_loop
from .database import _redacted, _take_statement_cache_size
from .inserts import ids_from, insert_for
from .jobs import JobCall
from .models import Job
from .serializer import Secret, Serializer
from .sql import QUERIES, pyformat
from .workflow_inline import run_inline_workflow_blocking
from .workflow_unique import enqueue_blocking
from .workflows import (
    Workflow,
    WorkflowRun,
    inline_upstream,
    insert_parameters,
    traced,
    upstream_of,
)

__all__ = ["configure", "enqueue", "enqueue_many", "upstream"]

_STATEMENTS = {
    name: pyformat(QUERIES[name])
    for name in ("insert_job", "insert_jobs", "insert_jobs_unique", "insert_workflow")
}

_CONNECT_TIMEOUT = 10
"""Seconds to connect, unless the DSN or ``PGCONNECT_TIMEOUT`` says otherwise."""
_MAX_IDLE = 8
"""Idle connections of koyojobs' own kept for later calls; more are closed."""


class _Settings:
    dsn: str | None = None
    secret: Secret | Sequence[Secret] | None = None


_settings = _Settings()
_lock = threading.Lock()
_idle: dict[str, list[Any]] = {}
"""Per DSN, connections of koyojobs' own waiting for the next call."""
_idle_pid = os.getpid()
_inherited: list[Any] = []


def configure(*, dsn: str | None = None, secret: Secret | Sequence[Secret] | None = None) -> None:
    """Set where :func:`enqueue` connects without ``connection=``, and how it signs.

    ``dsn`` wins over ``KOYOJOBS_DSN``, ``secret`` over ``KOYOJOBS_SECRET``;
    ``None`` falls back to the variable. The Django app calls this with the
    database of ``DATABASES`` and the secret of ``settings.KOYOJOBS``.
    Connections kept for the previous DSN are closed.

    Example:
        >>> from koyojobs import sync
        >>> sync.configure(dsn="postgresql://localhost/app", secret="key")  # doctest: +SKIP
    """
    Serializer.from_options(secret)  # a bad secret fails here, not at the first enqueue
    with _lock:
        _settings.dsn, _settings.secret = dsn, secret
        closing = [conn for conns in _idle.values() for conn in conns]
        _idle.clear()
    for conn in closing:
        conn.close()


@overload
def enqueue(call: JobCall[Any], connection: Any = None) -> int: ...
@overload
def enqueue(call: Workflow, connection: Any = None) -> WorkflowRun: ...


def enqueue(call: JobCall[Any] | Workflow, connection: Any = None) -> int | WorkflowRun:
    """Insert one job from synchronous code; returns its id.

    A :class:`~koyojobs.Workflow` inserts all its steps in one statement
    (inside ``connection``'s transaction too) and returns a
    :class:`~koyojobs.WorkflowRun`; in the synchronous mode its steps run now.

    With ``connection`` (a psycopg 3 connection, or a Django connection to
    PostgreSQL such as ``django.db.connection``) the job is inserted inside
    that connection's transaction, in one round trip, and exists only if it
    commits. Without, on a connection of koyojobs' own to ``KOYOJOBS_DSN``,
    committed at once. In the synchronous mode (``execute_jobs_synchronously``)
    the job runs now instead, and the inline run's id is returned. From async code,
    ``await my_job(...)`` instead: called in a running event loop, this raises.

    Example:
        >>> from koyojobs.sync import enqueue
        >>> job_id = enqueue(say_hello("Bogdan"))  # doctest: +SKIP
    """
    if isinstance(call, Workflow):
        return _enqueue_workflow(call, connection)
    return _enqueue([call], connection, "enqueue", "a job call")[0]


def _enqueue_workflow(wf: Workflow, connection: Any) -> WorkflowRun:
    if _in_event_loop():
        raise RuntimeError(
            "koyojobs.sync.enqueue() was called inside a running event loop: "
            "await wf.enqueue() instead"
        )
    kind = _kind_of(connection) if connection is not None else "own"
    if synchronous.enabled():
        return run_inline_workflow_blocking(wf)
    with traced(wf) as (trace_context, inserted):
        parameters = insert_parameters(wf, Serializer.from_options(_settings.secret), trace_context)
        run = enqueue_blocking(
            wf,
            parameters,
            lambda: _fetch(kind, connection, _STATEMENTS["insert_workflow"], parameters),
            kind,
            connection,
        )
        inserted(run)
    return run


def upstream() -> dict[str, Job]:
    """In a plain ``def`` step: its direct upstream steps' jobs, by step name; ``{}`` elsewhere.

    What ``await koyojobs.upstream()`` returns in an ``async def`` step, from
    the step's thread: the same query, on the worker's pool (run in the
    worker's event loop, so it needs no connection or ``KOYOJOBS_DSN`` of its
    own), the results read back by the worker's serializer. In the
    synchronous mode it returns the records of the steps run before. Called
    in a running event loop (an ``async def`` job), it raises
    ``RuntimeError``: ``await koyojobs.upstream()`` there.

    Example:
        >>> from koyojobs import define_job, sync
        >>> @define_job(name="doc.sync.upstream.render")
        ... def render(user_id: int) -> str:
        ...     [fetched] = sync.upstream().values()
        ...     return f"pdf of {fetched.result}"
        >>> sync.upstream()
        {}
    """
    inline = inline_upstream.get()
    if inline is not None:
        return dict(inline)
    if _in_event_loop():
        raise RuntimeError(
            "koyojobs.sync.upstream() was called inside a running event loop: "
            "await koyojobs.upstream() instead"
        )
    job, broker = current_job(), current_broker()
    if job is None or job.id < 0 or broker is None:
        return {}
    loop = job_loop()
    if loop is None:
        raise RuntimeError(
            "koyojobs.sync.upstream() needs the thread a worker runs a plain def step on"
        )
    return asyncio.run_coroutine_threadsafe(upstream_of(broker, job.id), loop).result()


def enqueue_many(calls: Iterable[JobCall[Any]], connection: Any = None) -> list[int]:
    """Insert many jobs in one statement and one round trip; returns their ids in order.

    ``connection`` as for :func:`enqueue`.

    Example:
        >>> from koyojobs.sync import enqueue_many
        >>> ids = enqueue_many(say_hello(n) for n in ["Ada", "Bogdan"])  # doctest: +SKIP
    """
    return _enqueue(list(calls), connection, "enqueue_many", "job calls")


def _enqueue(calls: list[JobCall[Any]], connection: Any, function: str, wanted: str) -> list[int]:
    for call in calls:
        if not isinstance(call, JobCall):
            raise TypeError(
                f"koyojobs.sync.{function}() needs {wanted} such as my_job(1, 2), got {call!r}"
            )
        call.consume()
    if _in_event_loop():
        raise RuntimeError(
            f"koyojobs.sync.{function}() was called inside a running event loop: "
            "await the job call instead (await my_job(...))"
        )
    kind = _kind_of(connection) if connection is not None else "own"
    if synchronous.enabled():
        return [synchronous.run_inline_blocking(call) for call in calls]
    if not calls:
        return []
    observer = instrumentation.observer
    if kind == "own" and function == "enqueue" and observer is None:
        # Calls of many threads at once share statements (koyojobs.coalesce_threads);
        # not with OpenTelemetry on: each caller's span carries its own trace.
        return [_coalescer().enqueue(calls[0])]
    if observer is None:
        return _insert(kind, connection, calls, None)
    # As Broker.enqueue: a send span, and its context stored with each job.
    with observer.enqueue(calls) as (trace_context, inserted):
        ids = _insert(kind, connection, calls, trace_context)
        inserted(ids)
    return ids


def _insert(
    kind: str, connection: Any, calls: list[JobCall[Any]], trace_context: str | None
) -> list[int]:
    insert = insert_for(calls, Serializer.from_options(_settings.secret), trace_context)
    rows = _fetch(kind, connection, _STATEMENTS[insert.query], insert.parameters)
    return ids_from(insert, calls, rows)


_coalescers: dict[int, ThreadCoalescer] = {}


def _coalescer() -> ThreadCoalescer:
    # One per process: a forked child must not inherit flushers that are not there.
    pid = os.getpid()
    coalescer = _coalescers.get(pid)
    if coalescer is None:
        with _lock:
            _coalescers.clear()
            coalescer = _coalescers.setdefault(
                pid, ThreadCoalescer(lambda calls: _insert("own", None, calls, None))
            )
    return coalescer


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _kind_of(connection: Any) -> str:
    """``"psycopg"`` or ``"django"``; anything else is a one-line ``TypeError``."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(connection, psycopg.Connection):
        return "psycopg"
    if _is_django_connection(connection):
        vendor = connection.vendor
        if vendor != "postgresql":
            raise TypeError(
                f"koyojobs needs a Django connection to PostgreSQL, got one to {vendor} "
                f"(alias {connection.alias!r})"
            )
        return "django"
    kind = type(connection)
    hint = (
        " (an asyncpg connection: await broker.enqueue(call, connection=conn))"
        if kind.__module__.startswith("asyncpg")
        else ""
    )
    raise TypeError(
        "connection= must be a psycopg 3 connection or a Django connection, "
        f"got {kind.__module__}.{kind.__qualname__}{hint}"
    )


def _is_django_connection(connection: Any) -> bool:
    base = sys.modules.get("django.db.backends.base.base")
    proxy = sys.modules.get("django.utils.connection")
    return (base is not None and isinstance(connection, base.BaseDatabaseWrapper)) or (
        proxy is not None and isinstance(connection, proxy.ConnectionProxy)
    )


def _fetch(
    kind: str, connection: Any, query: tuple[str, tuple[int, ...]], arguments: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    sql, order = query
    parameters = [arguments[i] for i in order]
    if kind == "django":
        with connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())
    if kind == "psycopg":
        return list(connection.execute(sql, parameters).fetchall())
    with _own_connection() as conn:
        return list(conn.execute(sql, parameters).fetchall())


@contextmanager
def _own_connection() -> Iterator[Any]:
    """An autocommit connection of koyojobs' own: an idle one, else a new one."""
    dsn = _settings.dsn or os.environ.get("KOYOJOBS_DSN")
    if not dsn:
        raise RuntimeError(
            "no database to enqueue on: set KOYOJOBS_DSN, pass connection=..., "
            "or call koyojobs.sync.configure(dsn=...)"
        )
    conn = _take_idle(dsn)
    if conn is None:
        conn = _connect(dsn)
    try:
        yield conn
    except BaseException:
        # It may be broken, or hold a half-read answer: never hand it out again.
        conn.close()
        raise
    with _lock:
        idle = _idle.setdefault(dsn, [])
        if len(idle) < _MAX_IDLE and _idle_pid == os.getpid():
            idle.append(conn)
            conn = None
    if conn is not None:
        conn.close()


def _take_idle(dsn: str) -> Any:
    global _idle_pid
    with _lock:
        if _idle_pid != os.getpid():
            # A forked child (a pre-forking web server): the parent's sessions stay the
            # parent's. Closing them here would end them for the parent too.
            _inherited.extend(conn for conns in _idle.values() for conn in conns)
            _idle.clear()
            _idle_pid = os.getpid()
        idle = _idle.get(dsn, [])
        while idle:
            conn = idle.pop()
            if _usable(conn):
                return conn
            conn.close()
    return None


def _usable(conn: Any) -> bool:
    # An idle connection has nothing to read: if it has, the server ended the
    # session (a restart, pg_terminate_backend, an idle timeout) and told so.
    if conn.closed:
        return False
    if not hasattr(select, "poll"):  # Windows
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        return not readable
    poller = select.poll()  # not select(): it fails past file descriptor 1023
    poller.register(conn.fileno(), select.POLLIN)
    return not poller.poll(0)


def _connect(dsn: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise RuntimeError(
            "koyojobs.sync needs psycopg 3 for a connection of its own: "
            "pip install 'koyojobs[sync]' (or pass connection=...)"
        ) from None
    from psycopg.conninfo import conninfo_to_dict

    dsn, cache_size = _take_statement_cache_size(dsn)
    options: dict[str, Any] = {
        "autocommit": True,
        # A transaction pooler (statement_cache_size=0) keeps no prepared statements.
        "prepare_threshold": None if cache_size == 0 else 5,
    }
    try:
        if "connect_timeout" not in conninfo_to_dict(dsn) and not os.environ.get(
            "PGCONNECT_TIMEOUT"
        ):
            # A view must not hang for minutes on a database that does not answer.
            options["connect_timeout"] = _CONNECT_TIMEOUT
        return psycopg.connect(dsn, **options)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise ConnectionError(f"cannot connect to {_redacted(dsn)}: {reason}") from None
