"""Workflows: steps that wait for each other, fan-out and fan-in, progress."""

import asyncio

from koyojobs import (
    Broker,
    Worker,
    Workflow,
    chain,
    define_job,
    group,
    report_progress,
    set_current_broker,
    sync,
    upstream,
)

# --8<-- [start:onboarding]
log: list[str] = []


@define_job(name="docs.wf.fetch_profile")
async def fetch_profile(user_id: int) -> str:
    log.append("fetch")
    return f"https://img.example.com/{user_id}.png"


@define_job(name="docs.wf.resize")
async def resize(user_id: int, px: int) -> str:
    [fetched] = (await upstream()).values()  # the fetch step's job
    return f"{fetched.result}@{px}"


@define_job(name="docs.wf.notify")
async def notify(user_id: int) -> list[str]:
    sizes = await upstream()  # {"resize-64": Job, "resize-256": Job}
    return sorted(job.result for job in sizes.values())


@define_job(name="docs.wf.cleanup")
async def cleanup(user_id: int) -> str:
    # always=True: runs however the others ended, and can see how.
    ended = {name: job.status.value for name, job in (await upstream()).items()}
    return f"cleaned up after {ended}"


def onboarding(user_id: int) -> Workflow:
    wf = Workflow(f"onboard user {user_id}")  # the name is for people
    fetch = wf.add(fetch_profile(user_id))
    sizes = [
        wf.add(resize(user_id, px), after=fetch, name=f"resize-{px}") for px in (64, 256)
    ]  # both start once fetch is done, in parallel
    done = wf.add(notify(user_id), after=sizes, name="notify")  # once both are done
    wf.add(cleanup(user_id), after=[fetch, *sizes, done], name="cleanup", always=True)
    return wf


async def run_onboarding(broker: Broker) -> None:
    run = await onboarding(42).enqueue()  # every step in one transaction
    await broker.wait(run.job_ids["cleanup"], timeout=30)
    wf = await broker.get_workflow(run.id)
    assert wf is not None
    print(wf.status.value, wf.steps["notify"].result)
    # done ['https://img.example.com/42.png@256', 'https://img.example.com/42.png@64']


# --8<-- [end:onboarding]


# --8<-- [start:chain]
@define_job(name="docs.wf.extract")
async def extract(day: str) -> int:
    return 1200  # rows


@define_job(name="docs.wf.transform")
async def transform(day: str) -> int:
    [extracted] = (await upstream()).values()
    rows: int = extracted.result  # a Job's result is whatever the step returned
    return rows // 2


@define_job(name="docs.wf.load")
async def load(day: str) -> str:
    [transformed] = (await upstream()).values()
    return f"loaded {transformed.result} rows of {day}"


async def run_chain(broker: Broker) -> None:
    run = await chain(extract("2026-12-05"), transform("2026-12-05"), load("2026-12-05")).enqueue()
    job = await broker.wait(run.job_ids["docs.wf.load"], timeout=30)
    print(job.result)  # loaded 600 rows of 2026-12-05


# --8<-- [end:chain]


# --8<-- [start:plain_def]
@define_job(name="docs.wf.render_pdf")
def render_pdf(day: str) -> str:  # a plain def step: it runs on a worker thread
    [loaded] = sync.upstream().values()  # koyojobs.sync.upstream(): no await
    return f"pdf of: {loaded.result}"


async def run_plain_def(broker: Broker) -> None:
    day = "2026-12-06"
    run = await chain(extract(day), transform(day), load(day), render_pdf(day)).enqueue()
    job = await broker.wait(run.job_ids["docs.wf.render_pdf"], timeout=30)
    print(job.result)  # pdf of: loaded 600 rows of 2026-12-06


# --8<-- [end:plain_def]


# --8<-- [start:fan_in]
@define_job(name="docs.wf.count_shard")
async def count_shard(shard: int) -> int:
    return shard % 7  # the shard's count


@define_job(name="docs.wf.report")
async def report() -> str:
    shards = await upstream()  # 1,000 jobs, read in one query
    return f"{len(shards)} shards, {sum(job.result for job in shards.values())} in all"


async def run_report(broker: Broker) -> None:
    wf = group(*(count_shard(n) for n in range(1000)), name="nightly report").then(report())
    run = await wf.enqueue()
    job = await broker.wait(run.job_ids["docs.wf.report"], timeout=120)
    print(job.result)  # 1000 shards, 2997 in all


# --8<-- [end:fan_in]


# --8<-- [start:progress]
@define_job(name="docs.wf.import_rows")
def import_rows(rows: int) -> int:  # a plain def job: the same call
    for done in range(1, rows + 1):
        ...  # import one row
        report_progress(done / rows, f"{done} of {rows} rows")  # no await, no round trip
    return rows


async def run_progress(broker: Broker) -> None:
    job_id = await import_rows(500)
    job = await broker.wait(job_id, timeout=30)
    print(job.progress, job.progress_message)  # 1.0 500 of 500 rows


# --8<-- [end:progress]


# --8<-- [start:failure]
@define_job(name="docs.wf.charge", max_attempts=1)
async def charge(order_id: int) -> None:
    raise RuntimeError("card declined")


@define_job(name="docs.wf.ship")
async def ship(order_id: int) -> None: ...


@define_job(name="docs.wf.email")
async def email(order_id: int) -> None: ...


async def run_failure(broker: Broker) -> None:
    wf = Workflow("order 7")
    paid = wf.add(charge(7), name="charge")
    shipped = wf.add(ship(7), after=paid, name="ship")
    wf.add(email(7), after=shipped, name="email")
    wf.add(cleanup(7), after=[paid, shipped], name="cleanup", always=True)
    run = await wf.enqueue()
    await broker.wait(run.job_ids["cleanup"], timeout=30)
    found = await broker.get_workflow(run.id)
    assert found is not None
    for name, job in found.steps.items():
        print(name, job.status.value, job.last_error or "-")
    # charge failed RuntimeError: card declined
    # ship cancelled upstream step 'charge' failed
    # email cancelled upstream step 'charge' failed
    # cleanup done -
    print(found.status.value)  # failed


# --8<-- [end:failure]


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker, Worker(broker, poll_interval=0.5):
        set_current_broker(broker)
        try:
            await run_onboarding(broker)
            await run_chain(broker)
            await run_plain_def(broker)
            await run_report(broker)
            await run_progress(broker)
            await run_failure(broker)
        finally:
            set_current_broker(None)


if __name__ == "__main__":
    import os

    asyncio.run(main(os.environ["KOYOJOBS_DSN"]))
