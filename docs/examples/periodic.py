"""Periodic jobs: a nightly job read in Amsterdam's time, and a sample every second."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from koyojobs import Broker, Worker, current_job, define_job
from koyojobs.periodic import periodic_jobs


@define_job(
    name="docs.nightly_cleanup",
    queue="docs-periodic",
    cron="0 3 * * *",  # 03:00 in Amsterdam, summer and winter
    timezone="Europe/Amsterdam",
)
async def nightly_cleanup() -> None: ...


ticks: list[float] = []


@define_job(name="docs.sample", queue="docs-periodic", every=timedelta(seconds=1))
async def sample() -> None:
    job = current_job()
    assert job is not None
    ticks.append(job.scheduled_at.timestamp())  # the tick this run is for


async def main(dsn: str) -> None:
    for job in periodic_jobs("docs-periodic"):
        assert job.schedule is not None
        print(job.name, job.schedule.expression, job.schedule.timezone)
    # A running worker of the queue enqueues each tick once, whatever else runs.
    async with Broker(dsn) as broker, Worker(broker, queue="docs-periodic"):
        while len(ticks) < 2:
            await asyncio.sleep(0.05)
    print("a second apart:", ticks[1] - ticks[0] == 1.0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
