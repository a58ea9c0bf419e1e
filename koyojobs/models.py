"""The records koyojobs hands back: Job, Status, RunningJob, QueueStatus, ScheduleState."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pendulum
from asyncpg import Record

__all__ = ["Job", "QueueStatus", "RunningJob", "Status"]


class Status(enum.StrEnum):
    """Where a job is in its life.

    Example:
        >>> Status("done") is Status.DONE
        True
    """

    PENDING = "pending"
    """A workflow step waiting for its upstream steps; no worker claims it."""
    READY = "ready"
    """Waiting to run, possibly scheduled for later."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    """Attempts spent, or the payload could not be read."""
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not run again by itself."""
        return self in (Status.DONE, Status.FAILED, Status.CANCELLED)


def _time(value: datetime | None) -> pendulum.DateTime | None:
    return None if value is None else pendulum.instance(value)


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored, read with :meth:`koyojobs.Broker.get_job`.

    ``result`` is the job function's return value, deserialized (``None``
    until the job is done). ``last_error`` is the one-line error of the latest
    failed attempt and ``last_traceback`` its traceback.

    Example:
        >>> job = await broker.get_job(job_id)  # doctest: +SKIP
        >>> job.status, job.attempts, job.result  # doctest: +SKIP
        (<Status.DONE: 'done'>, 1, 'Bogdan')
    """

    id: int
    name: str
    queue: str
    priority: int
    status: Status
    attempts: int
    max_attempts: int
    scheduled_at: pendulum.DateTime
    created_at: pendulum.DateTime
    started_at: pendulum.DateTime | None
    finished_at: pendulum.DateTime | None
    last_error: str | None
    last_traceback: str | None
    result: Any
    snoozes: int = 0
    """How many times the job called ``snooze()``."""
    waiting: str | None = None
    """From ``list_jobs``: for a due job not yet running, what holds it back
    (its queue paused, its key at a concurrency or rate limit); ``None`` when
    only a free worker is missing, or the job is not waiting."""
    workflow_id: int | None = None
    """The workflow the job is a step of (:class:`koyojobs.Workflow`), else ``None``."""
    step: str | None = None
    """The job's step name in its workflow, else ``None``."""
    progress: float | None = None
    """How far the job got, 0 to 1, as it last said with ``report_progress()``."""
    progress_message: str | None = None
    """What the job said with its latest ``report_progress()``."""

    @classmethod
    def from_row(cls, row: Record, load_result: Callable[[bytes, str], Any]) -> Job:
        """Build a job from a ``get_job`` row; ``load_result(raw, name)`` reads ``result``."""
        raw = row["result"]
        scheduled_at = _time(row["scheduled_at"])
        created_at = _time(row["created_at"])
        assert scheduled_at is not None
        assert created_at is not None
        return cls(
            id=row["id"],
            name=row["name"],
            queue=row["queue"],
            priority=row["priority"],
            status=Status(row["status"]),
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            scheduled_at=scheduled_at,
            created_at=created_at,
            started_at=_time(row["started_at"]),
            finished_at=_time(row["finished_at"]),
            last_error=row["last_error"],
            last_traceback=row["last_traceback"],
            result=None if raw is None else load_result(raw, row["name"]),
            snoozes=row.get("snoozes", 0),
            waiting=row.get("waiting"),
            workflow_id=row.get("workflow_id"),
            step=row.get("step"),
            # Stored as a real: 0.3 reads back as 0.30000001192092896.
            progress=None if row.get("progress") is None else round(row["progress"], 6),
            progress_message=row.get("progress_message"),
        )


@dataclass(frozen=True, slots=True)
class RunningJob:
    """What :func:`koyojobs.current_job` returns inside a running job.

    Example:
        >>> from koyojobs import current_job
        >>> def attempt_number() -> int:
        ...     job = current_job()
        ...     return 0 if job is None else job.attempt
        >>> attempt_number()
        0
    """

    id: int
    name: str
    queue: str
    attempt: int
    """1-based: the first run is attempt 1."""
    max_attempts: int
    scheduled_for: datetime
    """When the job was due, as stored (see ``scheduled_at``)."""
    workflow_id: int | None = None
    """The workflow of a step (as ``Job.workflow_id``), else ``None``; hooks and
    middleware see it in ``outcome.job`` and ``job``."""

    @property
    def scheduled_at(self) -> pendulum.DateTime:
        """When the job was due, as a pendulum time (built on demand: it is rarely read)."""
        return pendulum.instance(self.scheduled_for)


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One queue's job counts, from :meth:`koyojobs.Broker.queue_status`.

    Example:
        >>> QueueStatus("default", 3, 1, 10, 0, 0, 2.5).ready
        3
    """

    queue: str
    ready: int
    running: int
    done: int
    failed: int
    cancelled: int
    oldest_ready_seconds: float | None
    """How long the oldest due job has waited, if any is due."""
    paused: bool = False
    """Whether the queue is paused (:meth:`koyojobs.Broker.pause`)."""
    pending: int = 0
    """Workflow steps waiting for their upstream steps (``Status.PENDING``)."""


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the database knows of a periodic job's ticks (``Broker.schedule_states``).

    Example:
        >>> ScheduleState("app.nightly", None, None, False, None).last_tick is None
        True
    """

    name: str
    last_tick: datetime | None
    """The latest tick handled, enqueued or skipped."""
    last_enqueued_tick: datetime | None
    last_skipped: bool
    """Whether the latest tick was skipped because the previous run was still going."""
    last_job_id: int | None
