"""Leases: a lapsed lease is rescued and counted; a held one is renewed."""

from __future__ import annotations

import asyncpg

from koyojobs import Broker, Database, Status, Worker
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker


async def _claim_as_dead_worker(broker: Broker, job_id: int, attempts: int = 1) -> None:
    # What a worker that died right after claiming leaves behind.
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'running', attempts = $2, worker_id = 'dead:1:x', "
        "started_at = now(), lease_expires_at = now() - interval '1 second' WHERE id = $1",
        job_id,
        attempts,
    )


async def test_a_lapsed_lease_is_rescued_and_the_lost_run_counts(
    broker: Broker, start_worker: StartWorker
) -> None:
    job_id = await jobs.echo("again")
    assert job_id is not None
    await _claim_as_dead_worker(broker, job_id)
    await start_worker()
    job = await wait_for_status(broker, job_id, Status.DONE)
    assert job.attempts == 2
    assert job.result == "again"


async def test_a_job_whose_lost_runs_spend_its_attempts_fails_with_lease_lapsed(
    broker: Broker, start_worker: StartWorker
) -> None:
    job_id = await jobs.echo("poison")
    assert job_id is not None
    await _claim_as_dead_worker(broker, job_id, attempts=3)
    await start_worker()
    job = await wait_for_status(broker, job_id, Status.FAILED)
    assert (job.attempts, job.last_error) == (3, "lease lapsed")


async def test_a_running_job_keeps_its_lease_past_the_lease_length(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(lease=0.6, poll_interval=0.2)
    job_id = await jobs.wait_for_gate("long")
    await wait_for_status(broker, job_id, Status.RUNNING)
    first = await _lease(broker, job_id)
    # Wait (by the database's clock) until the lease would have lapsed twice over.
    await broker.pool.execute("SELECT pg_sleep(1.3)")
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts) == (Status.RUNNING, 1)
    assert await _lease(broker, job_id) > first
    jobs.gates["long"].set()
    done = await wait_for_status(broker, job_id, Status.DONE)
    assert done.attempts == 1


async def _lease(broker: Broker, job_id: int) -> asyncpg.Record:
    return await broker.pool.fetchval(
        "SELECT lease_expires_at FROM koyojobs_jobs WHERE id = $1", job_id
    )


async def test_a_late_outcome_does_not_overwrite_a_rescued_job(broker: Broker) -> None:
    from koyojobs.outcomes import succeeded
    from koyojobs.sql import QUERIES

    job_id = await jobs.echo("x")
    assert job_id is not None
    await _claim_as_dead_worker(broker, job_id)
    await broker.pool.fetch(QUERIES["rescue_lapsed"])
    decision = succeeded(broker.serializer.dump_result("late", "tests.jobs.echo"))
    await broker.pool.fetch(
        QUERIES["finish_and_claim"],
        "nothing-to-claim",
        0,
        30.0,
        "late-worker",
        [job_id],
        [1],
        [decision.status.value],
        [decision.result],
        [None],
        [None],
        [0.0],
    )
    job = await broker.get_job(job_id)
    assert job is not None
    assert job.status is Status.READY
    assert job.result is None


async def test_recording_outcomes_joins_by_primary_key_even_with_stale_statistics(
    broker: Broker,
) -> None:
    from koyojobs.sql import QUERIES

    # After a bulk insert is analyzed, "running" looks empty to the planner; a
    # plan built on that estimate scanned every running row per batch, so
    # writes fell behind and leases lapsed under load.
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args) "
        "SELECT 'x', 'default', '\\x00' FROM generate_series(1, 20000)"
    )
    await broker.pool.execute("ANALYZE koyojobs_jobs")
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET status = 'running', attempts = 1 WHERE id <= 17000"
    )
    n = 3000
    args = [
        list(range(1, n + 1)),
        [1] * n,
        ["done"] * n,
        [b"r"] * n,
        [None] * n,
        [None] * n,
        [0.0] * n,
    ]
    async with broker.pool.acquire() as conn:
        for mode in ("force_generic_plan", "force_custom_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN " + QUERIES["finish_and_claim"], "default", 0, 30.0, "w", *args
                )
            )
            assert "koyojobs_jobs_running_idx" not in plan, plan
        await conn.execute("RESET plan_cache_mode")


async def test_leases_are_renewed_while_the_jobs_hold_every_pool_connection(dsn: str) -> None:
    # Two slots, a pool of two, and each job holds a pool connection for
    # twice the lease: renewals must not need a pool connection.
    async with (
        Database(dsn, max_size=2) as db,
        Broker(db) as small,
        Worker(small, pool_size=2, lease=2.0, poll_interval=0.5),
    ):
        ids = [await small.enqueue(jobs.hold_pool_connection(4.0)) for _ in range(2)]
        for job_id in ids:
            assert job_id is not None
            job = await wait_for_status(small, job_id, Status.DONE, Status.FAILED, timeout=20)
            assert (job.status, job.attempts, job.result) == (Status.DONE, 1, 1), job
