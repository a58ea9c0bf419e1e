"""Leases: a lapsed lease is rescued and counted; a held one is renewed."""

from __future__ import annotations

from datetime import datetime

from koyojobs import Broker, Database, Status, Worker
from koyojobs.outcomes import as_columns, succeeded
from koyojobs.sql import QUERIES
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


async def _lease(broker: Broker, job_id: int) -> datetime:
    lease: datetime = await broker.pool.fetchval(
        "SELECT lease_expires_at FROM koyojobs_jobs WHERE id = $1", job_id
    )
    return lease


async def test_a_late_outcome_of_a_rescued_job_is_kept_while_no_later_attempt_began(
    broker: Broker,
) -> None:
    # Until issue 25, a late outcome was dropped here and the job ran again;
    # now the success is kept (a later attempt's start would refuse it, below).
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
        [None],
        [None],
    )
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.result) == (Status.DONE, "late")


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
        [None] * n,
        [None] * n,
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


async def _claim(broker: Broker, worker_id: str) -> list[int]:
    """Claim the due jobs of the default queue, as a worker's round does."""
    rows = await broker.pool.fetch(
        QUERIES["finish_and_claim"], "default", 10, 30.0, worker_id, *as_columns([])
    )
    return [row["attempts"] for row in rows]


async def _write_success(broker: Broker, job_id: int, attempt: int, value: str) -> None:
    """What the worker that ran ``attempt`` writes once the database answers again."""
    result = broker.serializer.dump_result(value, jobs.echo.name)
    outcome = [(job_id, attempt, succeeded(result))]
    await broker.pool.fetch(
        QUERIES["finish_and_claim"], "default", 0, 30.0, "w1", *as_columns(outcome)
    )


async def _lapse_and_rescue(broker: Broker, job_id: int) -> None:
    # The outage: no renewal reaches the database, the lease lapses, a rescue runs.
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        job_id,
    )
    await broker.pool.fetch(QUERIES["rescue_lapsed"])


async def test_a_last_attempt_that_succeeds_across_a_lapse_is_stored_done(broker: Broker) -> None:
    job_id = await broker.enqueue(jobs.echo("late"))
    await broker.pool.execute("UPDATE koyojobs_jobs SET max_attempts = 1 WHERE id = $1", job_id)
    assert await _claim(broker, "w1") == [1]
    await _lapse_and_rescue(broker, job_id)
    rescued = await broker.get_job(job_id)
    assert rescued is not None
    assert (rescued.status, rescued.last_error) == (Status.FAILED, "lease lapsed")
    await _write_success(broker, job_id, 1, "late")
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.result) == (Status.DONE, 1, "late")


async def test_a_late_success_is_kept_once_and_never_over_a_later_attempt(
    broker: Broker,
) -> None:
    job_id = await broker.enqueue(jobs.echo("twice"))
    assert await _claim(broker, "w1") == [1]
    await _lapse_and_rescue(broker, job_id)
    assert await _claim(broker, "w2") == [2]  # attempt 2 began before the late outcome came
    await _write_success(broker, job_id, 1, "from attempt 1")
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts) == (Status.RUNNING, 2)
    # Rescued again and left ready: attempt 2's late success is kept, once.
    await _lapse_and_rescue(broker, job_id)
    await _write_success(broker, job_id, 2, "from attempt 2")
    await broker.pool.execute("UPDATE koyojobs_jobs SET status = 'ready' WHERE id = $1", job_id)
    await _write_success(broker, job_id, 2, "written again")
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.result) == (Status.READY, "from attempt 2")
