"""Workflows: steps that wait for each other, enforced by the database.

A :class:`Workflow` is a graph of job calls (its :class:`Step` objects). It is
enqueued whole, in one statement (``insert_workflow``): a step with upstream
steps is ``pending``, which no claim looks at, and counts how many of them
have yet to end. The statement that writes an upstream step's outcome (the
claim loop's, the rescue's, a cancel's) counts its dependents down in the
same transaction, and makes ``ready`` those at zero; a failed or cancelled
step cancels its dependents, transitively, except ``always=True`` ones (the
``release_dependents`` block of ``sql/queries/workflows.sql``). So no crash
can leave a step pending whose upstream steps have ended, and none starts
before them.

The synchronous mode runs a workflow's steps in the order they were added
(which is a dependency order: ``after`` only names steps already added), at
enqueue (:mod:`koyojobs.workflow_inline`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pendulum

from . import instrumentation, synchronous
from .context import current_broker, current_job
from .errors import KoyojobsError
from .inserts import _columns
from .jobs import JobCall
from .models import Job, Status
from .serializer import Serializer
from .sql import QUERIES

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from .broker import Broker

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "Step",
    "Workflow",
    "WorkflowError",
    "WorkflowRecord",
    "WorkflowRun",
    "chain",
    "group",
    "upstream",
]

_MAX_STEP_NAME = 200

# A step waiting for this many upstream steps or more counts them in shards
# (koyojobs_step_counts, schema 0010): each upstream step's end counts down
# one of SHARDS rows, and only a shard reaching zero counts down the step's
# own row. With one counter, every statement ending a shard of a big fan-in
# waited for the previous one's commit on that row.
_SHARD_FROM = 32
_SHARDS = 16

inline_upstream: contextvars.ContextVar[dict[str, Job] | None] = contextvars.ContextVar(
    "koyojobs_inline_upstream", default=None
)
"""The upstream steps of a step the synchronous mode runs (upstream() reads it)."""


class WorkflowError(KoyojobsError, ValueError):
    """A workflow's graph is wrong (a step of another workflow, a name taken...).

    Raised by :meth:`Workflow.add`, before anything is enqueued; the message
    names the step.

    Example:
        >>> from koyojobs import Workflow, WorkflowError, define_job
        >>> @define_job(name="doc.wf.error.a")
        ... def a() -> None: ...
        >>> wf = Workflow("nightly")
        >>> _ = wf.add(a(), name="a")
        >>> try:
        ...     wf.add(a(), name="b", after="a")
        ... except WorkflowError as exc:
        ...     print(exc)
        workflow 'nightly', step 'b': after= takes a step or steps, got 'a'
    """


class Step:
    """One step of a :class:`Workflow`, as :meth:`Workflow.add` returns it.

    Pass it to ``after=`` of later steps.

    Example:
        >>> from koyojobs import Workflow, define_job
        >>> @define_job(name="doc.step.fetch")
        ... def fetch(user_id: int) -> str:
        ...     return f"profile {user_id}"
        >>> step = Workflow().add(fetch(42))
        >>> step.name, step.after, step.always
        ('doc.step.fetch', (), False)
    """

    __slots__ = ("after", "always", "call", "name", "workflow")

    def __init__(
        self,
        workflow: Workflow,
        name: str,
        call: JobCall[Any],
        after: tuple[Step, ...],
        always: bool,
    ) -> None:
        self.workflow = workflow
        self.name = name
        """Unique within the workflow: the key of ``WorkflowRun.job_ids`` and ``upstream()``."""
        self.call = call
        self.after = after
        """The steps it waits for."""
        self.always = always
        """Whether it runs however its upstream steps end."""

    def __repr__(self) -> str:
        return f"<Step {self.name!r}>"


class Workflow:
    """Job calls that wait for each other: enqueued at once, run in order by the workers.

    ``name`` is for people (the dashboard shows it). :meth:`add` adds a step;
    :meth:`enqueue` (or ``broker.enqueue(wf)``, or ``koyojobs.sync.enqueue(wf,
    connection=...)``) inserts every step in one transaction. See the
    "Workflows" page.

    Example:
        >>> from koyojobs import Workflow, define_job
        >>> @define_job(name="doc.wf.fetch")
        ... def fetch(user_id: int) -> str:
        ...     return "profile"
        >>> @define_job(name="doc.wf.resize")
        ... def resize(user_id: int, px: int) -> str:
        ...     return f"{px}px"
        >>> @define_job(name="doc.wf.notify")
        ... def notify(user_id: int) -> None: ...
        >>> wf = Workflow("onboard user 42")
        >>> first = wf.add(fetch(42))
        >>> sizes = [wf.add(resize(42, px), after=first, name=f"resize-{px}") for px in (64, 256)]
        >>> last = wf.add(notify(42), after=sizes)
        >>> print(*(step.name for step in wf.steps))
        doc.wf.fetch resize-64 resize-256 doc.wf.notify
        >>> try:
        ...     wf.add(notify(1), name="resize-64")
        ... except ValueError as exc:
        ...     print(exc)
        workflow 'onboard user 42': a step is already named 'resize-64'
    """

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Workflow() name must be a str or None, got {name!r}")
        self.name = name
        self._steps: dict[str, Step] = {}
        self._has_dependents: set[str] = set()
        self._next_suffix: dict[str, int] = {}
        self._keys: dict[str, str] = {}  # unique key -> the step holding it

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps in the order they were added (a dependency order)."""
        return tuple(self._steps.values())

    def add(
        self,
        call: JobCall[Any],
        *,
        after: Step | Iterable[Step] = (),
        name: str | None = None,
        always: bool = False,
    ) -> Step:
        """Add a step running ``call`` once every step of ``after`` is done; returns it.

        ``after`` is a step or steps of this workflow, added before (so a
        workflow has no cycle). ``name`` (default: the job's name, made
        unique by a numeric suffix: ``"app.resize"``, ``"app.resize-2"``)
        must be unique within the workflow. With ``always=True`` the step
        runs once its upstream steps have ended in any way (a clean-up);
        otherwise a failed or cancelled upstream step cancels it. A wrong
        graph is a one-line :class:`WorkflowError` naming the step.

        Example:
            >>> from koyojobs import Workflow, define_job
            >>> @define_job(name="doc.wf.add.a")
            ... def a() -> None: ...
            >>> wf, other = Workflow("one"), Workflow("two")
            >>> foreign = other.add(a())
            >>> try:
            ...     wf.add(a(), after=foreign, name="mine")
            ... except ValueError as exc:
            ...     print(exc)
            workflow 'one', step 'mine': after= names step 'doc.wf.add.a' of another workflow
        """
        if not isinstance(call, JobCall):
            raise TypeError(f"Workflow.add() needs a job call such as my_job(1), got {call!r}")
        if not isinstance(always, bool):
            call.consume()
            raise TypeError(f"Workflow.add() always= must be True or False, got {always!r}")
        label = name if isinstance(name, str) else call.definition.name
        try:
            upstream = self._upstream_of(after, label)
            step_name = self._unique_name(call.definition.name) if name is None else name
            self._check_name(step_name)
            self._check_key(call, step_name)
        except BaseException:
            call.consume()  # the error says what went wrong: no "never awaited" too
            raise
        call.consume()  # the workflow holds it now
        step = Step(self, step_name, call, upstream, always)
        self._steps[step_name] = step
        if call.unique_key is not None:
            self._keys[call.unique_key] = step_name
        self._has_dependents.update(u.name for u in upstream)
        return step

    def then(
        self, call: JobCall[Any], *, name: str | None = None, always: bool = False
    ) -> Workflow:
        """Add a step after every step that nothing waits for yet; returns the workflow.

        For ``group(...).then(report())``: the report waits for every step
        of the group.

        Example:
            >>> from koyojobs import define_job, group
            >>> @define_job(name="doc.wf.then.shard")
            ... def shard(n: int) -> int:
            ...     return n
            >>> @define_job(name="doc.wf.then.report")
            ... def report() -> None: ...
            >>> wf = group(shard(1), shard(2)).then(report())
            >>> print(*(s.name for s in wf.steps[-1].after))
            doc.wf.then.shard doc.wf.then.shard-2
        """
        leaves = [s for s in self._steps.values() if s.name not in self._has_dependents]
        self.add(call, after=leaves, name=name, always=always)
        return self

    async def enqueue(self, connection: Connection | None = None) -> WorkflowRun:
        """Insert every step, in one transaction, on the current broker.

        With ``connection``, inside the caller's transaction: rolled back,
        none of it existed. In the synchronous mode the steps run now, in
        order. Returns a :class:`WorkflowRun`.

        Example:
            >>> run = await wf.enqueue()  # doctest: +SKIP
            >>> run.job_ids["resize-64"]  # doctest: +SKIP
            1043
        """
        broker = current_broker()
        if broker is not None:
            return await broker.enqueue(self, connection=connection)
        if synchronous.enabled():
            from .workflow_inline import run_inline_workflow

            return await run_inline_workflow(self, None, None)
        raise RuntimeError(
            f"no broker to enqueue {self!r} on: call koyojobs.set_current_broker(broker) "
            "after starting one, or use koyojobs.execute_jobs_synchronously() in tests"
        )

    def _where(self, step: str | None = None) -> str:
        where = "a workflow" if self.name is None else f"workflow {self.name!r}"
        return where if step is None else f"{where}, step {step!r}"

    def _upstream_of(self, after: Step | Iterable[Step], label: str) -> tuple[Step, ...]:
        if isinstance(after, Step):
            after = (after,)
        elif isinstance(after, str | bytes) or not isinstance(after, Iterable):
            raise WorkflowError(
                f"{self._where(label)}: after= takes a step or steps, got {after!r}"
            )
        found: dict[str, Step] = {}
        for step in after:
            if not isinstance(step, Step):
                raise WorkflowError(
                    f"{self._where(label)}: after= takes steps (what add() returns), got {step!r}"
                )
            if step.workflow is not self:
                raise WorkflowError(
                    f"{self._where(label)}: after= names step {step.name!r} of another workflow"
                )
            found[step.name] = step
        return tuple(found.values())

    def _unique_name(self, base: str) -> str:
        if base not in self._steps:
            return base
        # Where the last search for this base ended: a group of 10,000 calls
        # of one job must not try every taken suffix again for each new step.
        n = self._next_suffix.get(base, 2)
        while f"{base}-{n}" in self._steps:
            n += 1
        self._next_suffix[base] = n + 1
        return f"{base}-{n}"

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str) or not name or len(name) > _MAX_STEP_NAME:
            raise WorkflowError(
                f"{self._where()}: a step name must be a non-empty str of at most "
                f"{_MAX_STEP_NAME} characters, got {name!r}"
            )
        if not name.isprintable():
            raise WorkflowError(f"{self._where()}: step name {name!r} has control characters")
        if name in self._steps:
            raise WorkflowError(f"{self._where()}: a step is already named {name!r}")

    def _check_key(self, call: JobCall[Any], name: str) -> None:
        # A unique step holds its key from its enqueue on: two steps of one
        # workflow with one key could never both be enqueued.
        other = self._keys.get(call.unique_key) if call.unique_key is not None else None
        if other is not None:
            raise WorkflowError(
                f"{self._where(name)}: same unique key as step {other!r} "
                "(steps of one workflow cannot share a unique key)"
            )

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} steps={len(self._steps)}>"


def chain(*calls: JobCall[Any], name: str | None = None) -> Workflow:
    """A workflow running ``calls`` one after the other, each once the previous is done.

    Example:
        >>> from koyojobs import chain, define_job
        >>> @define_job(name="doc.wf.chain.step")
        ... def step(n: int) -> int:
        ...     return n
        >>> wf = chain(step(1), step(2), step(3))
        >>> for s in wf.steps[1:]:
        ...     print(s.name, "after", *(u.name for u in s.after))
        doc.wf.chain.step-2 after doc.wf.chain.step
        doc.wf.chain.step-3 after doc.wf.chain.step-2
    """
    wf = Workflow(name)
    previous: Sequence[Step] = ()
    for call in calls:
        previous = (wf.add(call, after=previous),)
    return wf


def group(*calls: JobCall[Any], name: str | None = None) -> Workflow:
    """A workflow running ``calls`` in parallel; ``.then(call)`` adds a step after all of them.

    Example:
        >>> from koyojobs import define_job, group
        >>> @define_job(name="doc.wf.group.part")
        ... def part(n: int) -> int:
        ...     return n
        >>> len(group(*(part(n) for n in range(3))).steps)
        3
    """
    wf = Workflow(name)
    for call in calls:
        wf.add(call)
    return wf


@dataclass(frozen=True)
class WorkflowRun:
    """An enqueued workflow: its ``id`` and each step's job id by step name.

    Example:
        >>> WorkflowRun(7, {"fetch": 41, "notify": 42}).job_ids["notify"]
        42
    """

    id: int
    job_ids: dict[str, int]


@dataclass(frozen=True)
class WorkflowRecord:
    """A workflow as stored, from :meth:`koyojobs.Broker.get_workflow`.

    ``status`` is ``running`` until every step has ended, then ``failed`` if
    a step failed, else ``cancelled`` if one was cancelled, else ``done``.

    Example:
        >>> wf = await broker.get_workflow(run.id)  # doctest: +SKIP
        >>> wf.status, wf.steps["notify"].status, wf.after["notify"]  # doctest: +SKIP
        (<Status.RUNNING: 'running'>, <Status.PENDING: 'pending'>, ('resize-64', 'resize-256'))
    """

    id: int
    name: str | None
    status: Status
    created_at: pendulum.DateTime
    steps: dict[str, Job]
    """Step name -> its job, in the order the steps were added."""
    after: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Step name -> the names of the steps it waits for."""
    always: frozenset[str] = frozenset()
    """The steps added with ``always=True``."""

    def waiting_for(self, step: str) -> tuple[str, ...]:
        """The upstream steps of ``step`` that have not ended yet.

        Example:
            >>> wf.waiting_for("notify")  # doctest: +SKIP
            ('resize-256',)
        """
        return tuple(u for u in self.after.get(step, ()) if not self.steps[u].status.finished)


def overall_status(statuses: Iterable[Status]) -> Status:
    """A workflow's status from its steps' (see :class:`WorkflowRecord`).

    Example:
        >>> overall_status([Status.DONE, Status.FAILED, Status.CANCELLED])
        <Status.FAILED: 'failed'>
        >>> overall_status([Status.DONE, Status.PENDING])
        <Status.RUNNING: 'running'>
    """
    seen = set(statuses)
    if any(not s.finished for s in seen):
        return Status.RUNNING
    for status in (Status.FAILED, Status.CANCELLED):
        if status in seen:
            return status
    return Status.DONE


def insert_parameters(
    wf: Workflow, serializer: Serializer, trace_context: str | None
) -> tuple[Any, ...]:
    """The parameters of ``insert_workflow`` for ``wf`` (``$1..$19``), the calls signed.

    Example:
        >>> from koyojobs import define_job
        >>> @define_job(name="doc.wf.params.shard")
        ... async def shard(n: int) -> int:
        ...     return n
        >>> wf = Workflow()
        >>> parts = [wf.add(shard(n)) for n in range(40)]
        >>> total = wf.add(shard(-1), after=parts)
        >>> params = insert_parameters(wf, Serializer(), None)
        >>> params[10][-1], sorted(set(params[17]))  # the fan-in waits for 16 shards
        (16, [2, 3])
    """
    steps = wf.steps
    if not steps:
        raise WorkflowError(f"{wf._where()} has no steps to enqueue")
    position = {s.name: n for n, s in enumerate(steps, 1)}
    edges: list[tuple[int, int, bool, int | None]] = []
    counts: list[tuple[int, int, int]] = []  # (step, shard, upstream steps in it)
    waits_for: list[int] = []
    for step in steps:
        at, waited = position[step.name], len(step.after)
        shards = min(_SHARDS, waited) if waited >= _SHARD_FROM else 0
        for n, up in enumerate(step.after):
            edges.append((at, position[up.name], step.always, n % shards if shards else None))
        counts.extend((at, k, len(range(k, waited, shards))) for k in range(shards))
        waits_for.append(shards or waited)
    return (
        wf.name,
        *_columns([s.call for s in steps], serializer),
        trace_context,
        [s.name for s in steps],
        waits_for,
        [e[0] for e in edges],
        [e[1] for e in edges],
        [e[2] for e in edges],
        [e[3] for e in edges],
        [c[0] for c in counts],
        [c[1] for c in counts],
        [c[2] for c in counts],
        [s.call.unique_key for s in steps],
    )


@contextlib.contextmanager
def traced(wf: Workflow) -> Iterator[tuple[str | None, Callable[[WorkflowRun], None]]]:
    """Around the insert of ``wf``: the trace context its steps store, and what takes the run.

    With :mod:`koyojobs.otel` on, one ``send`` span covers the steps (as an
    ``enqueue_many`` does) and every step stores its context, so each
    step's attempt joins the trace that enqueued the workflow. Without, the
    context is ``None``.

    Example:
        >>> with traced(Workflow()) as (trace_context, inserted):
        ...     trace_context is None
        True
    """
    observer = instrumentation.observer
    if observer is None or not wf.steps:  # no steps: insert_parameters says so, untraced
        yield None, _nothing
        return
    with observer.enqueue([s.call for s in wf.steps]) as (trace_context, inserted):
        yield trace_context, lambda run: inserted(list(run.job_ids.values()))


def _nothing(run: WorkflowRun) -> None:
    return None


async def enqueue_workflow(
    broker: Broker, wf: Workflow, connection: Connection | None
) -> WorkflowRun:
    """What ``broker.enqueue(wf, connection=...)`` does."""
    if synchronous.enabled():
        from .workflow_inline import run_inline_workflow

        return await run_inline_workflow(wf, broker, connection)
    from .workflow_unique import insert_workflow

    with traced(wf) as (trace_context, inserted):
        parameters = insert_parameters(wf, broker.serializer, trace_context)
        run = await insert_workflow(broker, wf, connection, parameters)
        inserted(run)
    return run


async def get_workflow(broker: Broker, workflow_id: int) -> WorkflowRecord | None:
    """What ``broker.get_workflow(id)`` does."""
    async with broker.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        found = await conn.fetchrow(QUERIES["get_workflow"], workflow_id)
        if found is None:
            return None
        rows = await conn.fetch(QUERIES["workflow_steps"], workflow_id)
    steps = {row["step"]: Job.from_row(row, broker._loads_or_keep) for row in rows}
    return WorkflowRecord(
        id=found["id"],
        name=found["name"],
        status=overall_status(job.status for job in steps.values()),
        created_at=pendulum.instance(found["created_at"]),
        steps=steps,
        after={row["step"]: tuple(row["after"]) for row in rows},
        always=frozenset(row["step"] for row in rows if row["always"]),
    )


async def upstream() -> dict[str, Job]:
    """Inside a step: its direct upstream steps' jobs, by step name; ``{}`` elsewhere.

    Each ``Job`` has its ``status``, ``result`` (deserialized, its signature
    checked, as :meth:`koyojobs.Broker.get_job` does) and ``last_error``. A
    step added with ``always=True`` sees there how its upstream steps ended.

    Example:
        >>> from koyojobs import define_job, upstream
        >>> @define_job(name="doc.wf.upstream.notify")
        ... async def notify(user_id: int) -> list[str]:
        ...     return [job.result for job in (await upstream()).values()]
    """
    inline = inline_upstream.get()
    if inline is not None:
        return dict(inline)
    job = current_job()
    broker = current_broker()
    if job is None or job.id < 0 or broker is None:
        return {}
    return await upstream_of(broker, job.id)


async def upstream_of(broker: Broker, job_id: int) -> dict[str, Job]:
    """The direct upstream steps of step ``job_id``, by name (one query, ``upstream_steps``).

    What :func:`upstream` and :func:`koyojobs.sync.upstream` return in a worker.
    """
    rows = await broker.pool.fetch(QUERIES["upstream_steps"], job_id)
    return {row["step"]: Job.from_row(row, broker.serializer.load_result) for row in rows}
