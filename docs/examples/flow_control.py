"""Flow control: one sync per user, two reports per tenant, 100 API calls a minute,
a queue paused during a deploy."""

from __future__ import annotations

import asyncio
import sys

from koyojobs import Broker, Status, Worker, define_job, snooze


# One job per user: a second request while one is ready or running gets its id.
@define_job(name="docs.sync_account", queue="docs-flow", unique=lambda user_id, reason: user_id)
async def sync_account(user_id: str, reason: str) -> None: ...


# At most 2 reports at once per tenant, across every worker process.
@define_job(
    name="docs.build_report",
    queue="docs-flow",
    concurrency=2,
    limit_key=lambda tenant, report: tenant,
)
async def build_report(tenant: str, report: str) -> str:
    return f"{tenant}/{report}"


# The partner's API allows 100 calls a minute, whichever worker makes them.
@define_job(name="docs.call_partner_api", queue="docs-flow", rate_limit=(100, 60))
async def call_partner_api(order_id: int) -> None:
    if await partner_is_down():
        snooze(30)  # try again in 30 s; this does not spend an attempt


async def partner_is_down() -> bool:
    return False


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker:
        first = await broker.enqueue(sync_account("u-1", "login"))
        again = await broker.enqueue(sync_account("u-1", "settings changed"))
        print("one sync for u-1:", first == again)

        # A deploy: pause the queue, and its workers in every process claim
        # nothing more (running jobs finish); enqueueing goes on.
        await broker.pause("docs-flow")
        reports = await broker.enqueue_many(
            build_report(tenant, f"r{n}") for tenant in ("acme", "globex") for n in range(3)
        )
        calls = await broker.enqueue_many(call_partner_api(n) for n in range(5))
        assert reports is not None and calls is not None
        [waiting] = await broker.list_jobs(queue="docs-flow", limit=1)
        print("while paused:", waiting.waiting)
        await broker.resume("docs-flow")

        async with Worker(broker, queue="docs-flow", pool_size=8):
            for job_id in [first, *reports, *calls]:
                assert job_id is not None
                while (job := await broker.get_job(job_id)) is None or job.status is not (
                    Status.DONE
                ):
                    await asyncio.sleep(0.02)
        print("all done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
