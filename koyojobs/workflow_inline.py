"""The synchronous mode's workflows: every step run at enqueue, in dependency order.

The steps run in the order they were added (``after`` only names steps added
before, so that order is a dependency order), as the workers would run them:
a step whose upstream step failed or was cancelled is cancelled, naming it,
unless it was added with ``always=True``; ``upstream()`` gives each step its
upstream steps' records. Once every step had its turn, the first exception a
step raised reaches the caller, as a job's does in this mode.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pendulum

from . import synchronous
from .errors import describe
from .models import Job, Status
from .workflows import Step, Workflow, WorkflowRun, inline_upstream

if TYPE_CHECKING:
    from .broker import Broker
    from .synchronous import _Inline
    from .workflows import Connection

__all__ = ["InlineWorkflow", "run_inline_workflow", "run_inline_workflow_blocking"]


class InlineWorkflow:
    """One inline run of a workflow: the steps' records so far, and the first error."""

    def __init__(self, wf: Workflow) -> None:
        self.wf = wf
        self.id = synchronous.next_id()
        self.records: dict[str, Job] = {}
        self.error: Exception | None = None

    def blocked(self, step: Step) -> Job | None:
        """The record of ``step`` cancelled for an upstream step, or ``None``: run it."""
        if step.always:
            return None
        for up in step.after:
            ended = self.records[up.name]
            if ended.status is not Status.DONE:
                error = f"upstream step {up.name!r} {ended.status.value}"
                return self._record(step, synchronous.next_id(), Status.CANCELLED, error=error)
        return None

    def upstream(self, step: Step) -> dict[str, Job]:
        return {up.name: self.records[up.name] for up in step.after}

    def turns(self, broker: Broker | None) -> Iterator[Turn]:
        """Each step to run, in order, prepared; those an upstream step blocked are recorded."""
        for step in self.wf.steps:
            cancelled = self.blocked(step)
            if cancelled is not None:
                self.records[step.name] = cancelled
                continue
            inline = synchronous.prepare(step.call, broker)
            inline.workflow_id = self.id
            yield Turn(self, step, inline)

    def done(self, step: Step, job_id: int, value: Any) -> None:
        self.records[step.name] = self._record(step, job_id, Status.DONE, result=value)

    def failed(self, step: Step, job_id: int, exc: Exception) -> None:
        self.records[step.name] = self._record(step, job_id, Status.FAILED, error=describe(exc))
        if self.error is None:
            self.error = exc

    def finish(self) -> WorkflowRun:
        if self.error is not None:
            raise self.error
        return WorkflowRun(self.id, {name: job.id for name, job in self.records.items()})

    def _record(
        self,
        step: Step,
        job_id: int,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> Job:
        d = step.call.definition
        now = pendulum.now("UTC")
        return Job(
            id=job_id,
            name=d.name,
            queue=d.queue,
            priority=d.priority,
            status=status,
            attempts=0 if status is Status.CANCELLED else 1,
            max_attempts=d.max_attempts,
            scheduled_at=now,
            created_at=now,
            started_at=None if status is Status.CANCELLED else now,
            finished_at=now,
            last_error=error,
            last_traceback=None,
            result=result,
            workflow_id=self.id,
            step=step.name,
        )


class Turn:
    """One step's run: ``with turn:`` sets what ``upstream()`` returns around its
    execution, which sets ``turn.value``; on leaving, the step is recorded done,
    or failed by the exception, which goes no further (:meth:`InlineWorkflow.finish`
    raises the first one)."""

    def __init__(self, run: InlineWorkflow, step: Step, inline: _Inline) -> None:
        self.run = run
        self.step = step
        self.inline = inline
        self.value: Any = None
        self._token: contextvars.Token[dict[str, Job] | None] | None = None

    def __enter__(self) -> Self:
        self._token = inline_upstream.set(self.run.upstream(self.step))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._token is not None
        inline_upstream.reset(self._token)
        if exc is None:
            self.run.done(self.step, self.inline.id, self.value)
            return False
        if isinstance(exc, Exception):
            self.run.failed(self.step, self.inline.id, exc)
            return True
        return False  # KeyboardInterrupt, a cancel: on their way


async def run_inline_workflow(
    wf: Workflow, broker: Broker | None, connection: Connection | None
) -> WorkflowRun:
    """Run ``wf``'s steps now, in this task (on ``connection`` as ``run_calls`` does)."""
    run = InlineWorkflow(wf)
    bound = broker
    if connection is not None and broker is not None:
        bound = synchronous.on_connection(broker, connection)
    for turn in run.turns(bound):
        with turn:
            async with synchronous.savepoint(connection):
                turn.value = await synchronous.execute(turn.inline, bound)
    return run.finish()


def run_inline_workflow_blocking(wf: Workflow) -> WorkflowRun:
    """:func:`run_inline_workflow` for synchronous code (``koyojobs.sync.enqueue``)."""
    run = InlineWorkflow(wf)
    for turn in run.turns(None):
        with turn:
            turn.value = synchronous.execute_blocking(turn.inline)
    return run.finish()
