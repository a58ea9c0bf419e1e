"""What the dashboard's pages read: one statement per page, each at a bounded cost.

The statements are in ``koyojobs/sql/queries/dashboard.sql`` (``dashboard_*``); this
module turns their rows into the records the templates show.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import Status
from ..periodic import periodic_jobs
from ..registry import definitions
from ..sql import QUERIES

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from ..broker import Broker

__all__ = [
    "COUNT_BOUND",
    "PAGE_SIZE",
    "SCAN_BUDGET",
    "JobPage",
    "QueueRow",
    "ScheduleRow",
    "console_indexed",
    "exact_page",
    "indexed",
    "job_page",
    "job_payloads",
    "job_row",
    "names_labelled",
    "queue_rows",
    "schedule_rows",
    "table_size",
]

COUNT_BOUND = 10_000
"""Jobs are counted up to this many per queue and count ("10000+")."""
PAGE_SIZE = 50
"""Jobs per page of the jobs page."""
SCAN_BUDGET = 10_000
"""Ids a filtered page looks through at most, before saying where it stopped."""
_NO_CURSOR = sys.maxsize  # above every id: the first page


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue on the queues page.

    Every count but ``running`` stops at :data:`COUNT_BOUND` (a backlog of
    millions is not counted on every refresh); ``*_last_hour`` count jobs
    finished in the last hour.

    Example:
        >>> QueueRow("default", 1, 0, 0, None, 10, 0, 0, 10, 0, False).capped("done")
        False
    """

    queue: str
    ready: int
    scheduled: int
    running: int
    oldest_wait: float | None
    done: int | None
    """``None`` (as the other counts of finished jobs) without 0006's indexes."""
    failed: int | None
    cancelled: int | None
    done_last_hour: int | None
    failed_last_hour: int | None
    paused: bool

    def capped(self, field: str) -> bool:
        """Whether the count ``field`` stopped at the bound (so it shows as ``N+``)."""
        value: int | None = getattr(self, field)
        return value is not None and value >= COUNT_BOUND

    def as_json(self) -> dict[str, Any]:
        """The live fields, as the page's script reads them."""
        return {
            "ready": _bounded(self.ready),
            "scheduled": _bounded(self.scheduled),
            "running": self.running,
            "oldest_wait": self.oldest_wait,
            "done": _bounded(self.done),
            "failed": _bounded(self.failed),
            "cancelled": _bounded(self.cancelled),
            "done_last_hour": _bounded(self.done_last_hour),
            "failed_last_hour": _bounded(self.failed_last_hour),
            "paused": self.paused,
        }


@asynccontextmanager
async def _reading(broker: Broker) -> AsyncIterator[PoolConnectionProxy]:
    """A connection in a read-only transaction with the dashboard's planner settings."""
    async with broker.pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(QUERIES["dashboard_settings"])
        yield conn


def _bounded(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{COUNT_BOUND}+" if count >= COUNT_BOUND else str(count)


async def indexed(broker: Broker) -> bool:
    """Whether the indexes of migration 0006 exist (it skips them on a big table)."""
    present: bool = await broker.pool.fetchval(QUERIES["dashboard_indexed"])
    return present


async def queue_rows(
    broker: Broker, *, indexed: bool = True, bound: int = COUNT_BOUND
) -> list[QueueRow]:
    """Every queue that has jobs or is paused, with its counts.

    Without the indexes of 0006 (``indexed=False``), the counts of finished
    jobs are left out (``None``): they would read the whole table.

    Example:
        >>> [row.queue for row in await queue_rows(broker)]  # doctest: +SKIP
        ['default', 'emails']
    """
    query = QUERIES["dashboard_queues" if indexed else "dashboard_queues_unindexed"]
    async with _reading(broker) as conn:
        rows = await conn.fetch(query, bound)
    return [QueueRow(**dict(row)) for row in rows]


async def table_size(broker: Broker) -> int:
    """About how many jobs the table holds (the planner's estimate, free to read)."""
    size: int | None = await broker.pool.fetchval(QUERIES["dashboard_table_size"])
    return size or 0


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of the jobs page.

    ``older`` is the cursor of the next page (``None``: the end). ``scanned``
    tells how many ids the look went through, when a filter made it stop
    before a full page (see :data:`SCAN_BUDGET`).
    """

    jobs: list[dict[str, Any]]
    older: int | None
    scanned: int
    exhausted_budget: bool


async def console_indexed(broker: Broker) -> bool:
    """Whether the indexes of migration 0009 exist (the exact filters need them)."""
    present: bool = await broker.pool.fetchval(QUERIES["console_indexed"])
    return present


def names_labelled(prefix: str) -> list[str]:
    """The names of the jobs defined in this process whose ``label`` starts with ``prefix``.

    Example:
        >>> names_labelled("no label starts like this")
        []
    """
    return sorted(
        job.name for job in definitions() if job.label is not None and job.label.startswith(prefix)
    )


async def exact_page(
    broker: Broker,
    *,
    status: Status | None,
    queue: str | None,
    name: str | None,
    label: str | None = None,
    before: int | None,
    page_size: int = PAGE_SIZE,
) -> JobPage:
    """The newest jobs below id ``before`` that match every filter given, exactly.

    ``name`` and ``label`` match by prefix (a label through the jobs this
    process defines). Needs the indexes of 0009 (:func:`console_indexed`):
    a page then costs a probe per (status, name, queue) combination in the
    table and at most a page of rows for each that matches, whatever the
    table holds.

    Example:
        >>> page = await exact_page(broker, status=Status.FAILED, queue="emails",  # doctest: +SKIP
        ...                         name=None, before=None)
    """
    statuses = [s.value for s in Status] if status is None else [status.value]
    names = None if label is None else names_labelled(label)
    async with _reading(broker) as conn:
        rows = await conn.fetch(
            QUERIES["console_jobs"],
            statuses,
            queue,
            name,
            names,
            _NO_CURSOR if before is None else before,
            page_size + 1,
        )
    jobs = [dict(row) for row in rows]
    if len(jobs) > page_size:
        jobs = jobs[:page_size]
        return JobPage(jobs, jobs[-1]["id"], 0, False)
    return JobPage(jobs, None, 0, False)


async def job_page(
    broker: Broker,
    *,
    status: Status | None,
    queue: str | None,
    name: str | None,
    before: int | None,
    page_size: int = PAGE_SIZE,
    budget: int | None = None,
    indexed: bool = True,
) -> JobPage:
    """The newest jobs below id ``before``, filtered; keyset-paged by id.

    ``done``, ``ready`` and ``running``, and without 0006's indexes
    (``indexed=False``) every finished status, are matched like a queue or a
    name: within the budget.

    Example:
        >>> page = await job_page(broker, status=Status.FAILED, queue=None,  # doctest: +SKIP
        ...                       name=None, before=None)
    """
    scanned_status, matched_status = status, None
    # Only failed and cancelled jobs have an index in id order (0006's). Done
    # ones have none (the bulk of the table: one would slow every finish),
    # and ready and running ones have theirs in other orders (the claim's, the
    # leases'): walking the primary key for them, a few old ready jobs under
    # a million newer finished ones would read the table. Those statuses are
    # matched within the budget, in primary key order, as a queue or a name.
    if status in (Status.DONE, Status.READY, Status.RUNNING) or (
        status is not None and status.finished and not indexed
    ):
        scanned_status, matched_status = None, status
    filtered = queue is not None or name is not None or matched_status is not None
    # Unfiltered by queue and name, the ids read are the page itself.
    scan = (budget or SCAN_BUDGET) if filtered else page_size + 1
    async with _reading(broker) as conn:
        rows = await conn.fetch(
            QUERIES["dashboard_jobs"],
            None if scanned_status is None else scanned_status.value,
            queue,
            name,
            _NO_CURSOR if before is None else before,
            scan,
            page_size + 1,
            None if matched_status is None else matched_status.value,
        )
    jobs = [dict(row) for row in rows if row["id"] is not None]
    scanned: int = rows[0]["scanned"]
    floor: int | None = rows[0]["floor"]
    if len(jobs) > page_size:
        jobs = jobs[:page_size]
        return JobPage(jobs, jobs[-1]["id"], scanned, False)
    if scanned >= scan and filtered and floor is not None:
        # The look stopped at its budget: older matches may lie below.
        return JobPage(jobs, floor, scanned, True)
    return JobPage(jobs, None, scanned, False)


async def job_row(broker: Broker, job_id: int) -> dict[str, Any] | None:
    """Every column of one job but its payloads (their sizes instead); ``None``: no such job."""
    row = await broker.pool.fetchrow(QUERIES["dashboard_job"], job_id)
    return None if row is None else dict(row)


async def job_payloads(broker: Broker, job_id: int, most: int) -> tuple[bytes | None, bytes | None]:
    """A job's arguments and result, each ``None`` if missing or bigger than ``most`` bytes."""
    row = await broker.pool.fetchrow(QUERIES["dashboard_job_payloads"], job_id, most)
    return (None, None) if row is None else (row["args"], row["result"])


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A periodic job on the periodic page.

    ``defined`` says whether this process imported the job (then ``queue``,
    ``expression``, ``timezone`` and ``next_tick`` are known and it can run
    now); the others are rows of ``koyojobs_schedules`` only.
    """

    name: str
    defined: bool
    queue: str | None
    expression: str | None
    timezone: str | None
    last_tick: datetime | None
    last_enqueued_tick: datetime | None
    last_skipped: bool
    last_job_id: int | None
    last_job_status: str | None
    next_tick: datetime | None


async def schedule_rows(broker: Broker) -> list[ScheduleRow]:
    """The periodic jobs this process defines and those the database knows, by name."""
    rows = {row["name"]: row for row in await broker.pool.fetch(QUERIES["dashboard_schedules"])}
    now: datetime | None = next(iter(rows.values()))["now"] if rows else None
    if now is None:
        now = await broker.pool.fetchval(QUERIES["database_now"])
    assert now is not None
    defined = {job.name: job for job in periodic_jobs()}
    result = []
    for name in sorted(set(rows) | set(defined)):
        row = rows.get(name)
        job = defined.get(name)
        schedule = None if job is None else job.schedule
        result.append(
            ScheduleRow(
                name=name,
                defined=job is not None,
                queue=None if job is None else job.queue,
                expression=None if schedule is None else schedule.expression,
                timezone=None if schedule is None else schedule.timezone,
                last_tick=None if row is None else row["last_tick"],
                last_enqueued_tick=None if row is None else row["last_enqueued_tick"],
                last_skipped=False if row is None else row["last_skipped"],
                last_job_id=None if row is None else row["last_job_id"],
                last_job_status=None if row is None else row["last_job_status"],
                next_tick=None if schedule is None else schedule.next_tick(now),
            )
        )
    return result
