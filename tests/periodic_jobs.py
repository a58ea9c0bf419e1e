"""Periodic jobs for the periodic tests, each on a queue of its own.

Only the periodic tests start workers of these queues, so importing this
module elsewhere enqueues nothing. Runs are recorded in ``periodic_runs``.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from koyojobs import current_broker, current_job, define_job

RUNS_TABLE = """
CREATE TABLE periodic_runs (
    job_id      bigint      NOT NULL,
    name        text        NOT NULL,
    tick        timestamptz NOT NULL,
    pid         integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
)
"""


async def _record(finish_after: float = 0.0) -> None:
    job = current_job()
    broker = current_broker()
    assert job is not None and broker is not None
    await broker.pool.execute(
        "INSERT INTO periodic_runs (job_id, name, tick, pid) VALUES ($1, $2, $3, $4)",
        job.id,
        job.name,
        job.scheduled_for,
        os.getpid(),
    )
    if finish_after:
        await asyncio.sleep(finish_after)  # the job's own work: longer than its period
    await broker.pool.execute(
        "UPDATE periodic_runs SET finished_at = clock_timestamp() WHERE job_id = $1", job.id
    )


# Never skipped: the test of exactly one run per tick counts every tick.
@define_job(
    name="periodic.every_second",
    queue="periodic-1s",
    every=timedelta(seconds=1),
    skip_if_running=False,
)
async def every_second() -> None:
    await _record()


@define_job(name="periodic.slow", queue="periodic-slow", every=timedelta(seconds=1))
async def slow() -> None:
    """Takes 2.5 periods: with skip_if_running, runs never stack."""
    await _record(finish_after=2.5)


@define_job(name="periodic.catch_up", queue="periodic-catch-up", every=timedelta(seconds=1))
async def catch_up() -> None:
    await _record()


@define_job(name="periodic.clock", queue="periodic-removal", every=timedelta(seconds=1))
async def clock() -> None:
    await _record()


@define_job(name="periodic.removed", queue="periodic-removal", every=timedelta(seconds=1))
async def removed() -> None:
    await _record()
