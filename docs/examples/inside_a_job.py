"""Inside a job: current_job(), retry(), timeouts and failures."""

import asyncio

from koyojobs import Broker, Status, Worker, current_job, define_job, retry, set_current_broker


class ExportUnavailableError(Exception):
    pass


@define_job(name="docs.poll_payment", max_attempts=10)
async def poll_payment(payment_id: int) -> str:
    job = current_job()
    assert job is not None
    if job.attempt < 3:  # pretend the payment settles on the third look
        retry(delay=0.1)  # ends this attempt now; runs again in 0.1 s
    return f"payment {payment_id} settled after {job.attempt} attempts"


@define_job(name="docs.flaky_export", max_attempts=2, backoff=lambda attempt: 0.1)
async def flaky_export() -> None:
    raise ExportUnavailableError("the export service is down")


@define_job(name="docs.slow_report", max_attempts=1, timeout=0.2)
async def slow_report() -> None:
    await asyncio.sleep(10)  # cancelled at 0.2 s: a failed attempt


async def wait_until_finished(broker: Broker, job_id: int) -> Status:
    while (job := await broker.get_job(job_id)) and not job.status.finished:
        await asyncio.sleep(0.01)
    assert job is not None
    return job.status


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker, Worker(broker, poll_interval=0.5):
        set_current_broker(broker)
        paid, export, report = await poll_payment(42), await flaky_export(), await slow_report()
        for job_id in (paid, export, report):
            await wait_until_finished(broker, job_id)
        for job_id in (paid, export, report):
            job = await broker.get_job(job_id)
            assert job is not None
            print(job.name, job.status.value, job.attempts, job.result or job.last_error)
        # docs.poll_payment done 3 payment 42 settled after 3 attempts
        # docs.flaky_export failed 2 ExportUnavailableError: the export service is down
        # docs.slow_report failed 1 TimeoutError: job 'docs.slow_report' ran past its timeout...
        set_current_broker(None)
