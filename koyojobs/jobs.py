"""Defining jobs and calling them: ``define_job``, job calls, ``schedule_at``."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import synchronous
from ._text import code_point, hidden_characters
from ._validate import INT_LIMIT, is_count, is_seconds
from .context import current_broker
from .errors import JobDefinitionError
from .hooks import Hook, check_hook
from .limits import KeyFunction, Limits, keys_of, make_limits
from .outcomes import Backoff, default_backoff
from .periodic import Schedule, make_schedule
from .registry import register
from .serializer import dump_arguments

__all__ = [
    "JobCall",
    "JobDefinition",
    "define_job",
    "schedule_at",
]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=Hook)

_MAX_QUEUE_LENGTH = 200


class JobDefinition(Generic[P, R]):
    """A function made into a job by :func:`define_job`.

    Calling it returns a :class:`JobCall`; the function itself stays
    reachable as ``.fn``.

    Example:
        >>> from koyojobs import define_job
        >>> @define_job(name="doc.double")
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> double.fn(21)
        42
    """

    def __init__(
        self,
        fn: Callable[P, R] | Callable[P, Awaitable[R]],
        *,
        name: str,
        queue: str,
        priority: int,
        max_attempts: int,
        timeout: float | None,
        backoff: Backoff,
        schedule: Schedule | None = None,
        limits: Limits | None = None,
        label: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.backoff = backoff
        self.schedule = schedule
        """When a periodic job's ticks fall (``None``: not periodic)."""
        self.label = label
        """A name for people (the dashboard shows it), or ``None``."""
        self.limits = limits
        """Its uniqueness and limits (``None``: none; see the "Flow control" page)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.positional_only_simple = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in self.signature.parameters.values()
        )
        """Whether every parameter takes a positional argument (no ``*args``, ``**kw``)."""
        parameters = self.signature.parameters.values()
        self._positional_range = (
            (sum(p.default is p.empty for p in parameters), len(parameters))
            if self.positional_only_simple
            else None
        )
        # Calls with only positional arguments, as many as the parameters
        # allow, bind without inspect's bind(), which costs more than pickling
        # the arguments (it is most of building 20,000 calls for enqueue_many).
        self.success_hooks: list[Hook] = []
        """Run in order after an attempt succeeds (see :meth:`on_success`)."""
        self.failure_hooks: list[Hook] = []
        """Run in order after the last attempt fails (see :meth:`on_failure`)."""

    def on_success(self, hook: H) -> H:
        """Register ``hook(outcome)`` to run after an attempt of this job succeeds.

        ``async def`` hooks run in the worker's event loop, plain ``def``
        ones in its thread pool; ``outcome`` is a :class:`JobOutcome` with
        ``result`` set. A hook that raises is logged at WARNING and changes
        nothing about the job. Hooks run before the outcome is written: after
        a worker crash the job runs again and so do its hooks, so a hook may
        run twice, as a job may (make it idempotent).

        Example:
            >>> @send_invoice.on_success  # doctest: +SKIP
            ... async def mark_sent(outcome: JobOutcome) -> None:
            ...     await orders.mark_invoiced(outcome.args[0])
        """
        check_hook(self.name, "on_success", hook)
        self.success_hooks.append(hook)
        return hook

    def on_failure(self, hook: H) -> H:
        """Register ``hook(outcome)`` to run after the last attempt of this job failed.

        Not after an attempt that will be retried. ``outcome.error`` is what
        that attempt raised. Otherwise as :meth:`on_success`.

        Example:
            >>> @send_invoice.on_failure  # doctest: +SKIP
            ... def alert(outcome: JobOutcome) -> None:
            ...     pager.send(f"invoice {outcome.args[0]} failed: {outcome.error}")
        """
        check_hook(self.name, "on_failure", hook)
        self.failure_hooks.append(hook)
        return hook

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> JobCall[R]:
        fits = self._positional_range
        if kwargs or fits is None or not fits[0] <= len(args) <= fits[1]:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"job {self.name!r} called with bad arguments: {exc}") from None
        unique_key, limit_key = keys_of(self, args, kwargs)
        payload = dump_arguments(self.name, self.fn, args, kwargs)
        return JobCall(self, args, kwargs, payload, unique_key=unique_key, limit_key=limit_key)

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name!r} queue={self.queue!r} priority={self.priority}>"


class JobCall(Generic[R]):
    """One call of a job, not yet enqueued: await it to enqueue.

    Awaiting returns the new job's id (in the synchronous mode, where the job
    has already run, the inline run's: see :mod:`koyojobs.synchronous`). A job
    call dropped without being awaited warns with a ``RuntimeWarning``.

    Example:
        >>> job_id = await say_hello("Bogdan")  # doctest: +SKIP
    """

    def __init__(
        self,
        definition: JobDefinition[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        payload: bytes,
        scheduled_at: datetime | None = None,
        *,
        unique_key: str | None = None,
        limit_key: str | None = None,
    ) -> None:
        self.definition = definition
        self.args = args
        self.kwargs = kwargs
        self.payload = payload
        """The arguments as unsigned dill bytes, pickled at the call site."""
        self.scheduled_at = scheduled_at
        self.unique_key = unique_key
        """The job's name and unique key, for a unique job."""
        self.limit_key = limit_key
        """The job's name and limit key, for a job with a limit."""
        self._consumed = False

    def consume(self) -> None:
        """Mark the call as handed to a broker, so it does not warn when dropped."""
        self._consumed = True

    def __await__(self) -> Generator[Any, None, int]:
        return self._enqueue().__await__()

    async def _enqueue(self) -> int:
        broker = current_broker()
        if broker is not None:
            return await broker.enqueue(self)
        self.consume()
        if synchronous.enabled():
            return await synchronous.run_inline(self, None)
        raise RuntimeError(
            f"no broker to enqueue {self!r} on: call koyojobs.set_current_broker(broker) "
            "after starting one, or use koyojobs.execute_jobs_synchronously() in tests"
        )

    def __del__(self) -> None:
        if not getattr(self, "_consumed", True):
            warnings.warn(
                f"job call {self!r} was never awaited, so it was never enqueued",
                RuntimeWarning,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"{self.definition.name}(...)"


def schedule_at(when: datetime, call: JobCall[R]) -> JobCall[R]:
    """A job call that runs no earlier than ``when`` (the database's clock decides).

    ``when`` is a pendulum ``DateTime`` or a timezone-aware ``datetime``.

    Example:
        >>> import pendulum
        >>> from koyojobs import schedule_at
        >>> await schedule_at(pendulum.now().add(minutes=5), say_hello("Bogdan"))  # doctest: +SKIP
    """
    if not isinstance(when, datetime):
        call.consume()
        raise TypeError(f"schedule_at() needs a datetime, got {type(when).__name__}: {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        call.consume()
        raise ValueError(
            f"schedule_at() needs a timezone-aware time, got the naive {when.isoformat()}; "
            "use pendulum.now() or datetime.now(timezone.utc)"
        )
    call.consume()
    return JobCall(
        call.definition,
        call.args,
        call.kwargs,
        call.payload,
        when,
        unique_key=call.unique_key,
        limit_key=call.limit_key,
    )


def _check_options(
    name: str,
    queue: object,
    priority: object,
    max_attempts: object,
    timeout: object,
    backoff: object,
) -> None:
    def bad(option: str, value: object, rule: str) -> JobDefinitionError:
        return JobDefinitionError(f"job {name!r}: {option}={value!r} is invalid: {rule}")

    if not isinstance(queue, str) or not queue or len(queue) > _MAX_QUEUE_LENGTH:
        raise bad("queue", queue, f"a non-empty string of at most {_MAX_QUEUE_LENGTH} characters")
    if hidden_characters(name):
        raise JobDefinitionError(
            f"job {name!r}: the name holds a control or invisible character "
            f"({', '.join(map(code_point, hidden_characters(name)))}): PostgreSQL refuses a NUL, "
            "and the others disguise the name in logs and the dashboard"
        )
    if hidden_characters(queue):
        raise bad(
            "queue",
            queue,
            f"it holds a control or invisible character "
            f"({', '.join(map(code_point, hidden_characters(queue)))})",
        )
    if not is_count(priority, least=0, below=INT_LIMIT):
        raise bad("priority", priority, "an int >= 0 (0 runs first)")
    if not is_count(max_attempts, below=INT_LIMIT):
        raise bad("max_attempts", max_attempts, "an int >= 1")
    if timeout is not None and not is_seconds(timeout):
        raise bad("timeout", timeout, "seconds > 0, or None for no timeout")
    if backoff is not None and not callable(backoff):
        raise bad("backoff", backoff, "a callable attempt -> seconds")


@overload
def define_job(fn: Callable[P, Awaitable[R]], /) -> JobDefinition[P, R]: ...
@overload
def define_job(fn: Callable[P, R], /) -> JobDefinition[P, R]: ...
@overload
def define_job(
    *,
    queue: str = "default",
    priority: int = 50,
    max_attempts: int = 3,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    cron: str | None = None,
    every: timedelta | None = None,
    timezone: str = "UTC",
    skip_if_running: bool = True,
    unique: bool | KeyFunction = False,
    concurrency: int | None = None,
    rate_limit: tuple[int, float] | None = None,
    limit_key: KeyFunction | None = None,
    label: str | None = None,
) -> Callable[[Callable[P, Any]], JobDefinition[P, Any]]: ...


def define_job(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    queue: str = "default",
    priority: int = 50,
    max_attempts: int = 3,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    cron: str | None = None,
    every: timedelta | None = None,
    timezone: str = "UTC",
    skip_if_running: bool = True,
    unique: bool | KeyFunction = False,
    concurrency: int | None = None,
    rate_limit: tuple[int, float] | None = None,
    limit_key: KeyFunction | None = None,
    label: str | None = None,
) -> Any:
    """Make a function into a job; works bare and with options.

    ``queue`` names the queue (``"default"``); ``priority`` orders jobs within
    it (0 first, default 50); ``max_attempts`` (3) bounds the runs;
    ``timeout`` is seconds per attempt (``None``: none); ``backoff`` maps a
    failed attempt's number to the seconds to wait; ``name`` is the key a
    worker finds the function by (``module.qualname`` unless given, and
    required in ``__main__``). An ``async def`` runs on the worker's event
    loop, a plain ``def`` on its thread pool.

    ``cron`` (a 5-field expression, or ``@hourly``, ``@daily``...) read in
    ``timezone``, or ``every`` (a ``timedelta`` of at least a second) makes
    the job periodic: the running workers of its queue enqueue each tick
    once; with ``skip_if_running`` (the default) a tick is skipped while the
    previous run is still ready or running. See the "Periodic jobs" page.

    Flow control (the "Flow control" page): ``unique=True`` keeps one ready
    or running job per name and equal arguments, ``unique=callable`` per the
    key it returns from the job's arguments; ``concurrency=N`` runs at most N
    at once and ``rate_limit=(count, seconds)`` starts at most ``count`` in
    any window of ``seconds``, across every process; ``limit_key=callable``
    makes both limits hold per key instead.

    ``label`` is a name for people, such as ``"Send the receipt"``: the
    dashboard shows it beside the job's name.

    Example:
        >>> from koyojobs import define_job
        >>> @define_job(queue="emails", priority=0, max_attempts=5, timeout=30, name="doc.send")
        ... def send_email(to: str) -> None:
        ...     ...
        >>> send_email.queue, send_email.priority
        ('emails', 0)
        >>> @define_job(cron="0 3 * * *", timezone="Europe/Amsterdam", name="doc.nightly")
        ... async def nightly() -> None:
        ...     ...
        >>> nightly.schedule.expression
        '0 3 * * *'
        >>> @define_job(concurrency=2, limit_key=lambda tenant: tenant, name="doc.report")
        ... async def report(tenant: str) -> None:
        ...     ...
        >>> report.limits.concurrency
        2
    """

    def wrap(target: Callable[..., Any]) -> JobDefinition[Any, Any]:
        if not callable(target):
            raise JobDefinitionError(f"define_job() needs a function, got {target!r}")
        module = getattr(target, "__module__", None) or "__main__"
        job_name = name if name is not None else f"{module}.{target.__qualname__}"
        if not isinstance(job_name, str) or not job_name.strip():
            raise JobDefinitionError(f"job name must be a non-empty string, got {name!r}")
        if name is None and (module == "__main__" or "<locals>" in target.__qualname__):
            raise JobDefinitionError(
                f"job {target.__qualname__!r} is defined in {module} where workers cannot "
                "import it by name; pass name=... to define_job"
            )
        _check_options(job_name, queue, priority, max_attempts, timeout, backoff)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise JobDefinitionError(
                f"job {job_name!r}: label={label!r} is invalid: a non-empty string, or None"
            )
        schedule = make_schedule(
            job_name,
            target,
            cron=cron,
            every=every,
            timezone=timezone,
            skip_if_running=skip_if_running,
        )
        limits = make_limits(
            job_name,
            unique=unique,
            concurrency=concurrency,
            rate_limit=rate_limit,
            limit_key=limit_key,
        )
        if schedule is not None and unique is not False:
            raise JobDefinitionError(
                f"job {job_name!r}: unique= does not apply to a periodic job; "
                "skip_if_running (the default) keeps one run of it at a time"
            )
        definition: JobDefinition[Any, Any] = JobDefinition(
            target,
            name=job_name,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=None if timeout is None else float(timeout),
            backoff=backoff or default_backoff,
            schedule=schedule,
            limits=limits,
            label=label,
        )
        register(definition)
        return definition

    if fn is not None:
        return wrap(fn)
    return wrap
