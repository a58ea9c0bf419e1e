"""Workflows on a real PostgreSQL: enqueue in one transaction, release in the outcome's
statement, cancellation, always steps, upstream(), fan-in, pruning."""

from __future__ import annotations

import asyncio
import itertools
import time

import psycopg
import pytest

from koyojobs import Broker, Status, Workflow, chain, group, sync
from koyojobs.outcomes import as_columns, succeeded
from koyojobs.sql import QUERIES
from koyojobs.testing import drain
from tests import workflow_jobs as wj
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker


@pytest.fixture(autouse=True)
def _reset() -> None:
    wj.runs.clear()
    wj.seen_upstream.clear()


def _onboarding() -> Workflow:
    wf = Workflow("onboard user 42")
    fetch = wf.add(wj.step("fetch"), name="fetch")
    sizes = [wf.add(wj.step(f"resize-{px}"), after=fetch, name=f"resize-{px}") for px in (64, 256)]
    done = wf.add(wj.collect("notify"), after=sizes, name="notify")
    wf.add(wj.collect("cleanup"), after=[fetch, *sizes, done], name="cleanup", always=True)
    return wf


async def test_steps_wait_for_their_upstream_steps_and_run_in_order(broker: Broker) -> None:
    run = await _onboarding().enqueue()
    assert list(run.job_ids) == ["fetch", "resize-64", "resize-256", "notify", "cleanup"]
    assert await wj.step_statuses(broker, run.id) == {
        "fetch": Status.READY,
        "resize-64": Status.PENDING,
        "resize-256": Status.PENDING,
        "notify": Status.PENDING,
        "cleanup": Status.PENDING,
    }
    notify = await broker.get_job(run.job_ids["notify"])
    assert notify is not None and notify.workflow_id == run.id and notify.step == "notify"
    assert await drain(broker) == {"done": 5}
    assert wj.runs[0] == "fetch" and set(wj.runs[1:3]) == {"resize-64", "resize-256"}
    assert wj.runs[3:] == ["notify", "cleanup"]
    # upstream(): the direct upstream steps, results read back through the serializer.
    assert wj.seen_upstream["notify"] == {
        "resize-64": ("done", "resize-64", None),
        "resize-256": ("done", "resize-256", None),
    }
    assert set(wj.seen_upstream["cleanup"]) == {"fetch", "resize-64", "resize-256", "notify"}
    wf = await broker.get_workflow(run.id)
    assert wf is not None and wf.status is Status.DONE and wf.name == "onboard user 42"
    assert wf.after["notify"] == ("resize-64", "resize-256") and wf.always == {"cleanup"}


async def test_get_workflow_of_an_unknown_id_is_none(broker: Broker) -> None:
    assert await broker.get_workflow(12345) is None


async def test_a_rolled_back_enqueue_leaves_nothing(broker: Broker) -> None:
    async with broker.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        run = await _onboarding().enqueue(connection=conn)
        assert await conn.fetchval("SELECT count(*) FROM koyojobs_jobs") == 5
        await tx.rollback()
    assert await broker.get_workflow(run.id) is None
    for table in ("koyojobs_jobs", "koyojobs_workflows", "koyojobs_job_edges"):
        assert await broker.pool.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_sync_enqueue_joins_a_psycopg_transaction(broker: Broker, dsn: str) -> None:
    def enqueue(commit: bool) -> int:
        with psycopg.connect(dsn) as conn:
            run = sync.enqueue(chain(wj.step("a"), wj.step("b")), connection=conn)
            if not commit:
                conn.rollback()
            return run.id

    rolled_back = await asyncio.to_thread(enqueue, False)
    assert await broker.get_workflow(rolled_back) is None
    committed = await asyncio.to_thread(enqueue, True)
    assert await wj.step_statuses(broker, committed) == {
        "wf.step": Status.READY,
        "wf.step-2": Status.PENDING,
    }
    assert await drain(broker) == {"done": 2}
    assert wj.runs == ["a", "b"]

    def enqueue_one_step() -> int:  # no edges: empty arrays, typed by the statement
        with psycopg.connect(dsn) as conn:
            return sync.enqueue(Workflow("solo").then(wj.step("solo")), connection=conn).id

    solo = await asyncio.to_thread(enqueue_one_step)
    assert await wj.step_statuses(broker, solo) == {"wf.step": Status.READY}


async def test_a_failed_step_cancels_its_dependents_transitively_but_always_steps_run(
    broker: Broker,
) -> None:
    wf = Workflow("breaks")
    fetch = wf.add(wj.step("fetch"), name="fetch")
    bad = wf.add(wj.fail("resize"), after=fetch, name="resize")
    ok = wf.add(wj.step("thumb"), after=fetch, name="thumb")
    notify = wf.add(wj.step("notify"), after=[bad, ok], name="notify")
    later = wf.add(wj.step("archive"), after=notify, name="archive")
    wf.add(
        wj.collect("cleanup"), after=[fetch, bad, ok, notify, later], name="cleanup", always=True
    )
    run = await wf.enqueue()
    await drain(broker)
    found = await broker.get_workflow(run.id)
    assert found is not None
    assert {n: j.status for n, j in found.steps.items()} == {
        "fetch": Status.DONE,
        "resize": Status.FAILED,
        "thumb": Status.DONE,
        "notify": Status.CANCELLED,
        "archive": Status.CANCELLED,
        "cleanup": Status.DONE,
    }
    assert found.steps["notify"].last_error == "upstream step 'resize' failed"
    assert found.steps["archive"].last_error == "upstream step 'resize' failed"
    assert found.status is Status.FAILED
    assert "notify" not in wj.runs and "archive" not in wj.runs
    seen = wj.seen_upstream["cleanup"]
    assert seen["resize"][0] == "failed" and seen["resize"][2] == "ValueError: resize broke"
    assert seen["notify"][0] == "cancelled"


async def test_cancelling_a_step_cancels_its_dependents_and_releases_always_ones(
    broker: Broker,
) -> None:
    wf = Workflow()
    first = wf.add(wj.step("first"), name="first")
    second = wf.add(wj.step("second"), after=first, name="second")
    third = wf.add(wj.step("third"), after=second, name="third")
    wf.add(wj.step("cleanup"), after=third, name="cleanup", always=True)
    run = await wf.enqueue()
    assert await broker.cancel(run.job_ids["second"])  # a pending step
    assert await wj.step_statuses(broker, run.id) == {
        "first": Status.READY,
        "second": Status.CANCELLED,
        "third": Status.CANCELLED,
        "cleanup": Status.READY,
    }
    third_job = await broker.get_job(run.job_ids["third"])
    assert third_job is not None and third_job.last_error == "upstream step 'second' cancelled"
    await drain(broker)
    assert sorted(wj.runs) == ["cleanup", "first"]
    # A step cancelled while it waited cannot be retried ahead of its upstream steps.
    assert not await broker.retry_job(run.job_ids["third"])


async def test_cancel_workflow_cancels_every_unfinished_step_including_a_running_one(
    broker: Broker, start_worker: StartWorker
) -> None:
    wf = Workflow("long")
    first = wf.add(wj.step("first"), name="first")
    slow = wf.add(wj.blocked("slow"), after=first, name="slow")
    wf.add(wj.step("after"), after=slow, name="after")
    wf.add(wj.step("cleanup"), after=slow, name="cleanup", always=True)
    run = await wf.enqueue()
    await start_worker(lease=1.0)
    await wait_for_status(broker, run.job_ids["slow"], Status.RUNNING)
    assert await broker.cancel_workflow(run.id) == 3
    assert await broker.cancel_workflow(run.id) == 0
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.CANCELLED
    assert found.steps["cleanup"].last_error == "workflow cancelled"
    # The running step is stopped at its worker's next renewal; nothing else runs.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        slow_job = await broker.get_job(run.job_ids["slow"])
        running = await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE status = 'running'"
        )
        if running == 0:
            break
        await asyncio.sleep(0.05)
    slow_job = await broker.get_job(run.job_ids["slow"])
    assert slow_job is not None and slow_job.status is Status.CANCELLED
    assert wj.runs == ["first", "slow"]


async def test_a_fan_in_of_10000_steps_starts_its_next_step_exactly_once(
    broker: Broker, start_worker: StartWorker
) -> None:
    wf = group(*(wj.shard(n) for n in range(10_000)), name="report").then(wj.total(), name="total")
    run = await wf.enqueue()
    for _ in range(3):
        await start_worker(pool_size=20)
    job = await wait_for_status(broker, run.job_ids["total"], Status.DONE, timeout=120)
    assert job.result == sum(range(10_000))
    assert job.attempts == 1 and wj.runs == ["total"]
    last_shard = await broker.pool.fetchval(
        "SELECT max(finished_at) FROM koyojobs_jobs WHERE id <> $1", run.job_ids["total"]
    )
    assert job.started_at is not None and job.started_at >= last_shard
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.DONE


async def test_a_chain_runs_in_order(broker: Broker, start_worker: StartWorker) -> None:
    run = await chain(*(wj.step(str(n)) for n in range(50))).enqueue()
    await start_worker(pool_size=4)
    last = run.job_ids["wf.step-50"]
    await wait_for_status(broker, last, Status.DONE, timeout=30)
    assert wj.runs == [str(n) for n in range(50)]
    rows = await broker.pool.fetch("SELECT started_at, finished_at FROM koyojobs_jobs ORDER BY id")
    for before, after in itertools.pairwise(rows):
        assert after["started_at"] >= before["finished_at"]


async def test_a_step_failed_by_the_rescue_cancels_its_dependents(broker: Broker) -> None:
    wf = Workflow()
    lost = wf.add(wj.step("lost"), name="lost")
    wf.add(wj.step("next"), after=lost, name="next")
    wf.add(wj.step("cleanup"), after=lost, name="cleanup", always=True)
    run = await wf.enqueue()
    await broker.pool.execute("UPDATE koyojobs_jobs SET max_attempts = 1")
    # Claimed by a worker that then vanished: its lease lapses.
    claimed = await broker.pool.fetch(
        QUERIES["finish_and_claim"], "default", 10, 0.01, "gone", *[[]] * 9
    )
    assert [r["id"] for r in claimed] == [run.job_ids["lost"]]
    await asyncio.sleep(0.05)  # the lease of 10 ms lapses
    rescued = await broker.pool.fetch(QUERIES["rescue_lapsed"])
    assert [r["status"] for r in rescued] == ["failed"]
    assert await wj.step_statuses(broker, run.id) == {
        "lost": Status.FAILED,
        "next": Status.CANCELLED,
        "cleanup": Status.READY,
    }


async def test_retention_keeps_the_steps_of_an_unfinished_workflow(broker: Broker) -> None:
    run = await chain(wj.step("a"), wj.step("b"), name="kept").enqueue()
    plain = await broker.enqueue(wj.step("plain"))
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', finished_at = now() "
        "WHERE id = ANY($1::bigint[])",
        [run.job_ids["wf.step"], plain],
    )
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET finished_at = now() - interval '1 day' WHERE status = 'done'"
    )
    assert await broker.prunable(older_than=3600) == {
        Status.DONE: 1,
        Status.FAILED: 0,
        Status.CANCELLED: 0,
    }
    assert await broker.prune(older_than=3600) == 1  # the plain job only
    assert await broker.prune_expired(100) == 0
    assert await broker.get_job(run.job_ids["wf.step"]) is not None
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'done', finished_at = now() - interval '10 days'"
    )
    assert await broker.prune_expired(100) == 2
    for table in ("koyojobs_jobs", "koyojobs_workflows", "koyojobs_job_edges"):
        assert await broker.pool.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_progress_from_async_and_def_jobs_is_written_with_renewals_and_outcome(
    broker: Broker, start_worker: StartWorker
) -> None:
    async_id = await wj.progress_async(6)
    def_id = await wj.progress_def(6)
    failing = await wj.half_done()
    await start_worker(lease=0.6)  # renewals every 0.2 s
    seen: dict[int, set[float]] = {async_id: set(), def_id: set()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for job_id, values in seen.items():
            job = await broker.get_job(job_id)
            assert job is not None
            if job.status is Status.RUNNING and job.progress is not None:
                values.add(job.progress)
        if all(len(v) >= 2 for v in seen.values()):
            break
        await asyncio.sleep(0.02)
    # Seen part way, while running: written by the renewals.
    assert all(any(p < 1 for p in v) for v in seen.values()), seen
    for job_id, kind in ((async_id, "async"), (def_id, "def")):
        job = await wait_for_status(broker, job_id, Status.DONE)
        assert (job.progress, job.progress_message) == (1.0, f"{kind} 6 of 6")
    half = await wait_for_status(broker, failing, Status.READY, Status.FAILED)
    assert (half.progress, half.progress_message) == (0.5, "half")


async def test_steps_of_limited_jobs_are_released_by_the_limited_claim(
    broker: Broker, start_worker: StartWorker
) -> None:
    wf = group(*(wj.limited(str(n)) for n in range(6)), name="limited").then(
        wj.limited("after"), name="after"
    )
    run = await wf.enqueue()
    worker = await start_worker(queue="wf-limited", pool_size=8)
    assert worker.limited  # claims through finish_and_claim_limited
    await wait_for_status(broker, run.job_ids["after"], Status.DONE, timeout=30)
    assert wj.runs[-1] == "after" and sorted(wj.runs[:-1]) == [str(n) for n in range(6)]


async def test_a_retried_step_releases_its_dependents_only_once_done(broker: Broker) -> None:
    run = await chain(wj.flaky("first"), wj.step("second")).enqueue()
    assert await drain(broker) == {"ready": 2, "done": 2}
    assert wj.runs == ["first#1", "first#2", "first#3", "second"]
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.DONE


async def test_a_fan_in_step_is_released_by_its_last_upstream_outcome_and_not_before(
    broker: Broker,
) -> None:
    run = (
        await group(wj.shard(1), wj.shard(2), wj.shard(3)).then(wj.total(), name="total").enqueue()
    )
    claim = QUERIES["finish_and_claim"]
    rows = await broker.pool.fetch(claim, "default", 3, 30.0, "w", *as_columns([]))
    assert len(rows) == 3
    for n, row in enumerate(rows, 1):
        outcome = [(row["id"], row["attempts"], succeeded(broker.serializer.dump_result(n, "x")))]
        await broker.pool.fetch(claim, "default", 0, 30.0, "w", *as_columns(outcome))
        total = await broker.get_job(run.job_ids["total"])
        assert total is not None
        expected = Status.READY if n == 3 else Status.PENDING
        assert total.status is expected, (n, total)
