"""koyojobs through PgBouncer in transaction mode, as docs/workers.md tells.

Before these tests existed, a worker behind PgBouncer claimed nothing (its
claim loops asked for startup parameters PgBouncer rejects) while ``ping()``
passed, and a LISTEN through the pooler silently fell back to polling.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from koyojobs import Broker, Database, Status, Worker, current_job, define_job
from tests.conftest import wait_for_status
from tests.faults import jobs as fault_jobs
from tests.faults.conftest import WorkerProcess, until
from tests.pooler import PgBouncer

started: dict[int, float] = {}
_VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'koyojobs_jobs'"


@define_job(name="pooler.stamp")
async def stamp() -> None:
    job = current_job()
    assert job is not None
    started[job.id] = time.monotonic()


@define_job(name="pooler.echo")
async def echo(value: int) -> int:
    return value


@pytest.fixture
async def pooled(pooled_dsn: str, dsn: str) -> AsyncIterator[Broker]:
    """A broker whose pool goes through PgBouncer and whose LISTEN goes direct."""
    async with (
        Database(pooled_dsn, statement_cache_size=0) as db,
        Broker(db, listen_dsn=dsn) as broker,
    ):
        yield broker


async def test_jobs_are_enqueued_claimed_and_finished_through_the_pooler(
    pooled: Broker, broker: Broker
) -> None:
    assert pooled.database.pooler
    # 16 slots: two claim loops, each with a connection through the pooler.
    async with Worker(pooled, pool_size=16, poll_interval=30, vacuum_threshold=50):
        ids = await pooled.enqueue_many(echo(i) for i in range(300))
        assert ids is not None
        single = await pooled.enqueue(echo(300))
        assert single is not None
        for job_id in [*ids, single]:
            await wait_for_status(broker, job_id, Status.DONE, timeout=30)
        results = {(await broker.get_job(i)).result for i in ids}  # type: ignore[union-attr]
        assert results == set(range(300))


async def test_wakeups_through_a_direct_listen_arrive_within_50_ms(pooled: Broker) -> None:
    # A 30 s poll: anything sooner came through NOTIFY.
    async with Worker(pooled, pool_size=4, poll_interval=30):
        waits = []
        for _ in range(20):
            job_id = await pooled.enqueue(stamp())
            enqueued = time.monotonic()
            assert job_id is not None
            await until(lambda j=job_id: j in started, timeout=10, what="job started")
            waits.append(started[job_id] - enqueued)
    assert statistics.median(waits) < 0.05, waits


async def test_a_running_job_is_cancelled_and_a_failed_one_retried_through_the_pooler(
    pooled: Broker, broker: Broker
) -> None:
    async with Worker(pooled, pool_size=2, lease=3.0, poll_interval=0.5):
        hanging = await fault_jobs.hang()
        assert hanging is not None
        await wait_for_status(broker, hanging, Status.RUNNING)
        assert await pooled.cancel(hanging)
        # The worker finds out at its next renewal and stops the run.
        await until(
            lambda: broker.pool.fetchval(
                "SELECT worker_id IS NULL FROM koyojobs_jobs WHERE id = $1", hanging
            ),
            timeout=10,
            what="cancelled run let go",
        )
        job = await wait_for_status(broker, hanging, Status.CANCELLED)
        assert job.attempts == 1

        done = await pooled.enqueue(echo(7))
        assert done is not None
        await wait_for_status(broker, done, Status.DONE)
        assert await pooled.retry_job(done)
        job = await wait_for_status(broker, done, Status.DONE)
        assert job.result == 7


async def test_a_listen_through_the_pooler_is_reported_and_ping_fails(
    pooled_dsn: str, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="koyojobs")
    async with (
        Database(pooled_dsn, statement_cache_size=0) as db,
        Broker(db) as deaf,
        # With no direct DSN, the worker's VACUUM goes through the pooler too.
        Worker(deaf, pool_size=2, poll_interval=0.2, vacuum_threshold=20),
    ):
        listener = deaf.listener
        assert listener is not None
        await until(lambda: not listener.hearing, timeout=15, what="deaf LISTEN noticed")
        with pytest.raises(ConnectionError, match="listen_dsn"):
            await deaf.ping()
        # Jobs still run, found by polling.
        ids = await deaf.enqueue_many(echo(i) for i in range(100))
        assert ids is not None
        for job_id in ids:
            await wait_for_status(broker, job_id, Status.DONE)
        await until(lambda: broker.pool.fetchval(_VACUUMS), timeout=30, what="jobs table vacuumed")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "listen_dsn" in errors[0], errors


async def test_the_cli_worker_works_through_the_pooler(
    pooled_dsn: str, dsn: str, broker: Broker, pgbouncer: PgBouncer
) -> None:
    options: dict[str, Any] = {"listen-dsn": dsn, "statement-cache-size": 0, "poll-interval": 30}
    worker = WorkerProcess(pooled_dsn, **options)
    await worker.start()
    try:
        ids = await broker.enqueue_many(fault_jobs.quick(i) for i in range(50))
        assert ids is not None
        for job_id in ids:
            await wait_for_status(broker, job_id, Status.DONE, timeout=20)
        assert "claim failed" not in worker.output(), worker.output()
        assert "does not exist" not in pgbouncer.log()
    finally:
        worker.signal(15)
        assert await worker.wait(20) == 0, worker.output()
