"""A backend for Django's Tasks framework: Django's ``@task`` on koyojobs.

.. code-block:: python

    TASKS = {
        "default": {
            "BACKEND": "koyojobs.contrib.django.tasks.KoyojobsBackend",
            "QUEUES": ["default", "emails"],  # koyojobs queues; Django's default: ["default"]
            "OPTIONS": {"max_attempts": 3, "timeout": None},  # defaults for every task
        }
    }

Works with Django 6's ``django.tasks`` and, on Django 5.2, with the
``django-tasks`` backport (``django_tasks``). A task is a koyojobs job named
after the task's module path: ``enqueue`` inserts it on the connection of
``DATABASES[KOYOJOBS["database"]]``, inside that connection's current
transaction, with the named query and the signed payload of
:func:`koyojobs.sync.enqueue`; ``python manage.py koyojobs worker`` runs it,
with koyojobs' leases, retries, timeouts and limits. Django's priority ``p``
(-100..100, higher first) is koyojobs' priority ``100 - p`` (0..200, lower
first): see :func:`koyojobs_priority`.

Example:
    >>> from django.tasks import task  # doctest: +SKIP
    >>> @task(priority=10, queue_name="emails")  # doctest: +SKIP
    ... def send_receipt(order_id: int) -> str: ...
    >>> with transaction.atomic():  # doctest: +SKIP
    ...     result = send_receipt.enqueue(order.id)
    >>> result.refresh(); result.status  # doctest: +SKIP
    <TaskResultStatus.SUCCESSFUL: 'SUCCESSFUL'>
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import math
import os
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from django.utils import timezone
from django.utils.module_loading import import_string

from ... import sync
from ...context import current_job
from ...jobs import JobCall, JobDefinition, schedule_at
from ...models import RunningJob
from ...outcomes import default_backoff
from ...registry import register
from ...serializer import Serializer, dump_arguments
from ...sql import QUERIES, pyformat
from ._tasks_api import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
    task_finished,
    task_started,
)
from .apps import koyojobs_settings
from .conf import dsn_from_database

__all__ = ["KoyojobsBackend", "KoyojobsTask", "TaskCancelledError", "koyojobs_priority"]

_GET_TASK = pyformat(QUERIES["get_task"])
_OPTIONS = ("max_attempts", "timeout")
_DEFAULT_MAX_ATTEMPTS = 3
_MAX_VALID = 1000
_MAX_QUEUE_LENGTH = 200  # as define_job allows
_UNKNOWN_WORKER = "unknown"
_STATUSES = {
    "ready": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "done": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

if TYPE_CHECKING:
    _TaskBase = Task[..., Any]
    _Result = TaskResult[..., Any]
else:
    _TaskBase = Task
    _Result = TaskResult


def koyojobs_priority(django_priority: int) -> int:
    """koyojobs' priority (0 runs first) for Django's (-100..100, higher runs first).

    ``100 - p``: Django's 100 is koyojobs' 0, the most urgent of both;
    Django's default 0 is 100; -100 is 200. A plain koyojobs job at its
    default 50 runs with Django tasks of priority 50, before the default ones.

    Example:
        >>> [koyojobs_priority(p) for p in (100, 50, 0, -100)]
        [0, 50, 100, 200]
    """
    return 100 - django_priority


class TaskCancelledError(Exception):
    """The ``exception_class_path`` a cancelled job's result shows among its errors.

    A cancelled job (``manage.py koyojobs cancel``, the dashboard) is FAILED
    to Django, which has no cancelled status.

    Example:
        >>> TaskCancelledError.__module__ + "." + TaskCancelledError.__qualname__
        'koyojobs.contrib.django.tasks.TaskCancelledError'
    """


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KoyojobsTask(_TaskBase):
    """Django's ``Task`` with koyojobs' per-task options, for ``@task(...)`` to carry.

    The backend's ``task_class``: where ``@task`` passes extra keywords on
    (Django 6.1 and the backport; Django 6.0 does not), ``max_attempts`` and
    ``timeout`` (seconds per attempt) set for the task what ``OPTIONS`` sets
    for all; ``None`` leaves ``OPTIONS``' value.

    Example:
        >>> @task(queue_name="emails", max_attempts=5, timeout=30)  # doctest: +SKIP
        ... def send_receipt(order_id: int) -> str: ...
    """

    max_attempts: int | None = None
    timeout: float | None = None


class KoyojobsBackend(BaseTaskBackend):
    """Django's Tasks backend on koyojobs: ``TASKS[alias]["BACKEND"]``.

    ``OPTIONS``: ``max_attempts`` (3) and ``timeout`` (seconds per attempt,
    ``None``: none), the defaults of every task; a malformed one is an
    ``ImproperlyConfigured`` of one line naming it.

    Example:
        >>> TASKS = {"default": {"BACKEND": "koyojobs.contrib.django.tasks.KoyojobsBackend"}}
    """

    task_class = KoyojobsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        where = f"TASKS[{alias!r}]"
        for queue in self.queues:
            if not _valid_queue(queue):
                raise ImproperlyConfigured(
                    f"{where}['QUEUES']: {queue!r} is not a queue name: a non-empty string "
                    f"of at most {_MAX_QUEUE_LENGTH} characters, with no control characters"
                )
        for key in self.options:
            if key not in _OPTIONS:
                raise ImproperlyConfigured(
                    f"{where}['OPTIONS']: unknown key {key!r} (known: {', '.join(_OPTIONS)})"
                )
        self.max_attempts = self.options.get("max_attempts", _DEFAULT_MAX_ATTEMPTS)
        self.timeout = self.options.get("timeout")
        for problem in (_bad_attempts(self.max_attempts), _bad_timeout(self.timeout)):
            if problem:
                raise ImproperlyConfigured(f"{where}['OPTIONS']{problem}")
        config = koyojobs_settings()
        self.database = config.database
        """The alias of ``DATABASES`` jobs live in (``KOYOJOBS["database"]``)."""
        self.serializer = Serializer.from_options(config.secret)
        self._valid: dict[Task[..., Any], JobDefinition[Any, Any]] = {}

    def validate_task(self, task: Task[..., Any]) -> None:
        """Django's checks, koyojobs' options; then the worker knows the task by its path.

        Django runs this as each task is defined (so importing a tasks module
        registers its tasks, as ``define_job`` does) and ``enqueue`` again.
        An unknown queue raises ``InvalidTask``, as Django says.
        """
        super().validate_task(task)
        for problem in (
            _bad_attempts(getattr(task, "max_attempts", None), none_ok=True),
            _bad_timeout(getattr(task, "timeout", None)),
        ):
            if problem:
                raise InvalidTask(f"task {task.module_path!r}: {problem.lstrip('[').lstrip()}")
        if not _valid_queue(task.queue_name):
            raise InvalidTask(f"Queue {task.queue_name!r} is not a koyojobs queue name.")
        definition = self._definition(task)
        register(definition)
        if task.run_after is None:  # a run_after is new at each call: nothing to reuse
            if len(self._valid) >= _MAX_VALID:
                self._valid.clear()
            self._valid[task] = definition

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any, Any]:
        """Insert the task as a koyojobs job in the current transaction of the jobs' database.

        Rolled back, the job never existed; committed, the insert's trigger
        has sent the NOTIFY that wakes a worker at once.
        """
        # Tasks are frozen: one checked before (they are as they are defined) needs no
        # second look, and its definition is at hand.
        definition = self._valid.get(task)
        if definition is None:
            self.validate_task(task)
            definition = self._definition(task)
        enqueued_at = timezone.now()
        # Django's own TaskResult turns the arguments into JSON's types (or raises), and
        # the worker gets them so: the same values Django's other backends hand a task.
        result = _result(
            task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=enqueued_at,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
        )
        # Times as POSIX seconds: dill takes 7x as long over an aware datetime.
        enqueued = enqueued_at.timestamp()
        meta = {"priority": task.priority, "backend": self.alias, "enqueued": enqueued}
        run_after = task.run_after
        if run_after is not None:
            meta["run_after"] = run_after  # rare: kept as given
        arguments = (result.args, result.kwargs, meta)
        payload = dump_arguments(definition.name, definition.fn, arguments, {})
        call: JobCall[Any] = JobCall(definition, arguments, {}, payload)
        if run_after is not None:
            if timezone.is_naive(run_after):  # USE_TZ = False: local time, as Django reads it
                run_after = timezone.make_aware(run_after)
            call = schedule_at(run_after, call)
        job_id = sync.enqueue(call, connection=connections[self.database])
        object.__setattr__(result, "id", str(job_id))
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """The task's result as its job stands now; ``TaskResultDoesNotExist`` if none.

        ``worker_ids`` has one entry per attempt: the running attempt's
        worker id, ``"unknown"`` for earlier ones (koyojobs keeps no history
        of them). ``errors`` holds the last failed attempt's error.
        """
        job_id = _job_id(result_id)
        row = None
        if job_id is not None:
            sql, order = _GET_TASK
            with connections[self.database].cursor() as cursor:
                cursor.execute(sql, [(job_id,)[i] for i in order])
                row = cursor.fetchone()
        if row is None:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}")
        return self._from_row(result_id, row)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """The app installed, the jobs' database PostgreSQL, every queue run by a worker."""
        where = f"TASKS[{self.alias!r}]"
        found: list[checks.CheckMessage] = []
        if not apps.is_installed("koyojobs.contrib.django"):
            found.append(
                checks.Error(
                    f"{where}: KoyojobsBackend needs 'koyojobs.contrib.django' in INSTALLED_APPS",
                    id="koyojobs.E001",
                )
            )
        try:
            dsn_from_database(self.database, settings.DATABASES)
        except ImproperlyConfigured as exc:
            found.append(checks.Error(f"{where}: {exc}", id="koyojobs.E002"))
        served = koyojobs_settings().queues
        for queue in sorted(self.queues - set(served)) if served else ():
            found.append(
                checks.Warning(
                    f"{where}['QUEUES']: no worker runs queue {queue!r}: it is not among "
                    "settings.KOYOJOBS['queues']",
                    id="koyojobs.W001",
                )
            )
        return found

    def _definition(self, task: Task[..., Any]) -> JobDefinition[Any, Any]:
        max_attempts = getattr(task, "max_attempts", None) or self.max_attempts
        timeout = getattr(task, "timeout", None) or self.timeout
        is_async = inspect.iscoroutinefunction(task.func)
        key = (task.module_path, task.queue_name, task.priority, max_attempts, timeout, is_async)
        definition = _definitions.get(key)
        if definition is None:
            definition = _definitions[key] = JobDefinition(
                _arun_task if is_async else _run_task,
                name=task.module_path,
                queue=task.queue_name,
                priority=koyojobs_priority(task.priority),
                max_attempts=max_attempts,
                timeout=None if timeout is None else float(timeout),
                backoff=default_backoff,
                label=task.name,
            )
        return definition

    def _from_row(self, result_id: str, row: tuple[Any, ...]) -> TaskResult[Any, Any]:
        (_, name, queue, _, status, attempts, _, _, created_at, started_at, finished_at) = row[:11]
        last_error, last_traceback, raw_result, _, raw_args, worker_id = row[11:17]
        task = _task_named(name)
        if task is None:
            raise TaskResultDoesNotExist(f"job {result_id} is not a task: {name!r}")
        (task_args, task_kwargs, meta), _ = self.serializer.load_arguments(bytes(raw_args), name)
        task = _as_enqueued(task, queue, meta)
        errors = []
        if last_error:
            trace = last_traceback or last_error
            path = _class_path(last_error, trace)
            errors.append(TaskError(exception_class_path=path, traceback=trace))
        if status == "cancelled":
            errors.append(
                TaskError(
                    exception_class_path=f"{__name__}.TaskCancelledError",
                    traceback=f"{__name__}.TaskCancelledError: job {result_id} was cancelled\n",
                )
            )
        workers = [_UNKNOWN_WORKER] * attempts
        if status == "running" and worker_id and workers:
            workers[-1] = worker_id
        result = _result(
            task,
            id=result_id,
            status=_STATUSES[status],
            # The time enqueue() returned; the row's created_at is its transaction's start.
            enqueued_at=_enqueued_at(meta) or created_at,
            started_at=started_at,
            finished_at=finished_at,
            args=task_args,
            kwargs=task_kwargs,
            backend=self.alias,
            errors=errors,
            worker_ids=workers,
        )
        if status == "done" and raw_result is not None:
            value = self.serializer.load_result(bytes(raw_result), name)
            object.__setattr__(result, "_return_value", value)
        return result


_definitions: dict[tuple[Any, ...], JobDefinition[Any, Any]] = {}
"""One job definition per task and options: ``enqueue`` builds none in the common case."""


def _valid_queue(queue: object) -> bool:
    return (
        isinstance(queue, str)
        and 0 < len(queue) <= _MAX_QUEUE_LENGTH
        and all(c.isprintable() for c in queue)
    )


def _bad_attempts(value: object, none_ok: bool = False) -> str | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        return f"['max_attempts']: must be an int >= 1, got {value!r}"
    return None


def _bad_timeout(value: object) -> str | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        return f"['timeout']: must be seconds > 0 or None, got {value!r}"
    return None


def _job_id(result_id: object) -> int | None:
    try:
        job_id = int(str(result_id))
    except ValueError:
        return None
    return job_id if 0 < job_id < 2**63 else None


def _task_named(name: str) -> Task[..., Any] | None:
    try:
        found = import_string(name)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


def _as_enqueued(task: Task[..., Any], queue: str, meta: dict[str, Any]) -> Task[..., Any]:
    """The module's task as it was enqueued (``using()`` may have changed it)."""
    changes = {
        "queue_name": queue,
        "priority": meta["priority"],
        "backend": meta["backend"],
        "run_after": meta.get("run_after"),
    }
    if all(getattr(task, field) == value for field, value in changes.items()):
        return task
    return dataclasses.replace(task, **changes)


def _enqueued_at(meta: dict[str, Any]) -> datetime | None:
    seconds = meta.get("enqueued")
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _result(task: Task[..., Any], **fields: Any) -> TaskResult[Any, Any]:
    """A ``TaskResult``: the fields given, nothing started, finished nor failed by default."""
    defaults: dict[str, Any] = {
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "errors": [],
        "worker_ids": [],
    }
    defaults.update(fields)
    defaults.setdefault("last_attempted_at", defaults["started_at"])
    result: TaskResult[Any, Any] = _Result(task=task, **defaults)
    return result


def _class_path(error: str, traceback: str) -> str:
    """The exception's class path from its traceback's last ``Type: message`` line.

    ``error`` is koyojobs' one-line ``Name: message``; the traceback names
    the class with its module, unless the class is a builtin.

    Example:
        >>> _class_path("ValueError: bad", "Traceback ...\\nValueError: bad\\n")
        'builtins.ValueError'
        >>> _class_path("Declined: no", "Traceback ...\\nshop.tasks.Declined: no\\n")
        'shop.tasks.Declined'
    """
    name = error.split(":", 1)[0].strip()
    for line in reversed(traceback.splitlines()):
        token = line.split(":", 1)[0].strip()
        if token == name or token.endswith(f".{name}"):
            return token if "." in token else f"builtins.{token}"
    if name.isidentifier() and isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    return "builtins.Exception"


def _worker() -> str:
    # The worker id's first parts (koyojobs gives no job its worker's full id).
    return f"{socket.gethostname()}:{os.getpid()}"


def _running(job: RunningJob, args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]) -> Any:
    task = _task_named(job.name)
    if task is None:
        raise LookupError(f"{job.name!r} is not a Django task")
    task = _as_enqueued(task, job.queue, meta)
    now = timezone.now()
    return _result(
        task,
        id=str(job.id),
        status=TaskResultStatus.RUNNING,
        enqueued_at=_enqueued_at(meta),
        started_at=now,
        args=args,
        kwargs=kwargs,
        backend=meta["backend"],
        worker_ids=[_worker()] * job.attempt,
    )


def _arguments(result: _Result) -> Iterator[Any]:
    if result.task.takes_context:
        yield TaskContext(task_result=result)
    yield from result.args


def _ended(result: _Result, status: TaskResultStatus, exc: BaseException | None) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    if exc is not None:
        kind = type(exc)
        result.errors.append(
            TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )


def _last_attempt(job: RunningJob) -> bool:
    return job.attempt >= job.max_attempts


def _run_task(args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]) -> Any:
    """Run a plain ``def`` task on the worker's thread pool: the job of every such task."""
    job = current_job()
    assert job is not None, "a Django task runs as a koyojobs job"
    result = _running(job, args, kwargs, meta)
    # As Django does around a request: a connection past CONN_MAX_AGE or broken is replaced.
    close_old_connections()
    try:
        task_started.send(KoyojobsBackend, task_result=result)
        try:
            value = normalize_json(result.task.func(*_arguments(result), **result.kwargs))
        except Exception as exc:
            if _last_attempt(job):
                _ended(result, TaskResultStatus.FAILED, exc)
                task_finished.send(KoyojobsBackend, task_result=result)
            raise
        object.__setattr__(result, "_return_value", value)
        _ended(result, TaskResultStatus.SUCCESSFUL, None)
        task_finished.send(KoyojobsBackend, task_result=result)
        return value
    finally:
        close_old_connections()


async def _arun_task(args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]) -> Any:
    """Run an ``async def`` task on the worker's event loop: the job of every such task."""
    job = current_job()
    assert job is not None, "a Django task runs as a koyojobs job"
    result = _running(job, args, kwargs, meta)
    await task_started.asend(KoyojobsBackend, task_result=result)
    try:
        value = normalize_json(await result.task.func(*_arguments(result), **result.kwargs))
    except Exception as exc:
        if _last_attempt(job):
            _ended(result, TaskResultStatus.FAILED, exc)
            await task_finished.asend(KoyojobsBackend, task_result=result)
        raise
    object.__setattr__(result, "_return_value", value)
    _ended(result, TaskResultStatus.SUCCESSFUL, None)
    await task_finished.asend(KoyojobsBackend, task_result=result)
    return value
