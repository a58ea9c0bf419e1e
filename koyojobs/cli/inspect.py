"""The read-only commands: ``koyojobs status``, ``jobs`` and ``schedules``."""

from __future__ import annotations

import os
import sys

import click
from pendulum import DateTime

from ..broker import Broker
from ..heartbeat import WorkerProcess
from ..models import Job, QueueStatus, ScheduleState, Status
from ..periodic import periodic_jobs
from .base import (
    Connection,
    UsageError,
    age,
    connects,
    import_job_module,
    main,
    table,
    when,
    with_broker,
)


@main.command()
@connects
def status(connection: Connection) -> None:
    """Show job counts per queue and status (pending workflow steps too), the oldest
    due job's wait, and pauses."""

    async def action(broker: Broker) -> tuple[list[QueueStatus], list[WorkerProcess]]:
        return await broker.queue_status(), await broker.workers()

    queues, workers = with_broker(connection, action, read_only=True)
    if not queues:
        click.echo("no jobs")
    else:
        header = (
            "queue",
            "pending",
            "ready",
            "running",
            "done",
            "failed",
            "cancelled",
            "oldest ready",
            "",
        )
        rows = [
            (
                q.queue,
                str(q.pending),
                str(q.ready),
                str(q.running),
                str(q.done),
                str(q.failed),
                str(q.cancelled),
                age(q.oldest_ready_seconds),
                "paused" if q.paused else "",
            )
            for q in queues
        ]
        table([header, *rows], right=frozenset(range(1, 8)))
    click.echo("")
    if not workers:
        click.echo("no live workers")
        return
    lines: list[tuple[str, ...]] = [("worker", "pid", "queues", "running", "started", "last seen")]
    lines += [
        (
            w.host,
            str(w.pid),
            ",".join(w.queues),
            f"{w.running}/{w.concurrency}",
            when(w.started_at),
            f"{age(w.seen_ago)} ago",
        )
        for w in workers
    ]
    table(lines, right=frozenset({1, 3}))


@main.command()
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in Status]),
    help="Only jobs with this status.",
)
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@connects
def jobs(status_: str | None, queue: str | None, limit: int, connection: Connection) -> None:
    """List the newest jobs, with the first line of their last error.

    For a due job that is not running, the last column says instead what
    holds it back: its queue paused, or its key at a concurrency or rate limit;
    for a pending workflow step, the upstream steps it waits for. A running
    job that reported its progress shows it beside its status.
    """

    async def action(broker: Broker) -> list[Job]:
        return await broker.list_jobs(status=status_, queue=queue, limit=limit)

    found = with_broker(connection, action, read_only=True)
    if not found:
        click.echo("no jobs")
        return
    header = ("id", "name", "queue", "status", "attempts", "finished", "last error / waiting")
    rows = [
        (
            str(j.id),
            j.name if j.step is None else f"{j.name} (step {j.step} of workflow {j.workflow_id})",
            j.queue,
            _status(j),
            f"{j.attempts}/{j.max_attempts}" + (f" +{j.snoozes} snoozes" if j.snoozes else ""),
            "-" if j.finished_at is None else j.finished_at.to_datetime_string(),
            f"waiting: {j.waiting}"
            if j.waiting
            else (j.last_error or "").splitlines()[0][:100]
            if j.last_error
            else "",
        )
        for j in found
    ]
    table([header, *rows], right=frozenset({0}))


def _status(job: Job) -> str:
    if job.status is not Status.RUNNING or job.progress is None:
        return job.status.value
    said = f": {job.progress_message}" if job.progress_message else ""
    return f"running {job.progress:.0%}{said}"


@main.command()
@click.argument("modules", nargs=-1)
@connects
def schedules(modules: tuple[str, ...], connection: Connection) -> None:
    """List the periodic jobs MODULES define, with their last and next ticks.

    With no MODULES, the modules of [tool.koyojobs] in ./pyproject.toml.
    """
    modules = modules or connection.deployment.modules
    if not modules:
        raise UsageError("no job modules: name them or declare modules in [tool.koyojobs]")
    sys.path.insert(0, os.getcwd())
    for module in modules:
        import_job_module(module)
    jobs = periodic_jobs()
    if not jobs:
        click.echo("no periodic jobs")
        return

    async def action(broker: Broker) -> tuple[DateTime, dict[str, ScheduleState]]:
        now = await broker.database_now()
        return now, await broker.schedule_states([job.name for job in jobs])

    now, known = with_broker(connection, action, read_only=True)
    header = ("job", "queue", "schedule", "zone", "last tick", "last enqueued", "next tick")
    lines: list[tuple[str, ...]] = [header]
    for job in jobs:
        assert job.schedule is not None
        row = known.get(job.name)
        last = "-" if row is None else when(row.last_tick)
        if row is not None and row.last_skipped:
            last += " (skipped: still running)"
        lines.append(
            (
                job.name,
                job.queue,
                job.schedule.expression,
                job.schedule.timezone,
                last,
                "-" if row is None else when(row.last_enqueued_tick),
                when(job.schedule.next_tick(now)),
            )
        )
    table(lines)
