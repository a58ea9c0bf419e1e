"""koyojobs end to end: enqueue a job, a worker woken by NOTIFY runs it, read the result.

Uses $KOYOJOBS_DSN when set; otherwise starts a throwaway PostgreSQL cluster
(initdb + pg_ctl in a temporary directory, as the test suite does).
"""

import asyncio
import os
import time
from contextlib import ExitStack

from koyojobs import Broker, Status, Worker, define_job, set_current_broker
from koyojobs.testing import TemporaryPostgres


@define_job(name="examples.say_hello")  # run as __main__, so the name is explicit
async def say_hello(name: str) -> str:
    print(f"  worker: hi {name}!")
    return f"hello, {name}"


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker, Worker(broker, poll_interval=60):
        set_current_broker(broker)
        enqueued = time.perf_counter()
        job_id = await say_hello("Bogdan")
        print(f"enqueued job {job_id}")
        while (job := await broker.get_job(job_id)) and job.status is not Status.DONE:
            await asyncio.sleep(0.001)  # polling the result, as a caller would
        assert job is not None
        elapsed = (time.perf_counter() - enqueued) * 1000
        # The worker polls only every 60 s: finishing in milliseconds means NOTIFY woke it.
        print(
            f"job {job.id} {job.status.value} after {elapsed:.1f} ms "
            f"(attempts={job.attempts}): result={job.result!r}"
        )


if __name__ == "__main__":
    with ExitStack() as stack:
        dsn = os.environ.get("KOYOJOBS_DSN")
        if not dsn:
            print("KOYOJOBS_DSN is not set: starting a throwaway PostgreSQL cluster")
            dsn = stack.enter_context(TemporaryPostgres()).dsn
        asyncio.run(main(dsn))
