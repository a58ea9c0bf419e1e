"""Periodic jobs across worker processes: each tick enqueued once and run once."""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import UTC, datetime, timedelta

import pytest

from koyojobs import Broker
from koyojobs.testing import TemporaryPostgres
from tests import periodic_jobs
from tests.faults.conftest import WorkerProcess, until


@pytest.mark.timeout(90)
async def test_three_processes_enqueue_every_tick_once_and_run_it_once(
    broker: Broker, dsn: str
) -> None:
    await broker.pool.execute(periodic_jobs.RUNS_TABLE)
    workers = [
        WorkerProcess(dsn, module="tests.periodic_jobs", queue="periodic-1s") for _ in range(3)
    ]
    try:
        for worker in workers:
            await worker.start()
        # About five seconds of ticks, counted by the database, not by a sleep.
        await until(
            lambda: broker.pool.fetchval("SELECT count(*) >= 6 FROM periodic_runs"),
            timeout=30,
            what="six ticks run",
        )
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [await worker.wait(20) for worker in workers]
    assert codes == [0, 0, 0], [w.output() for w in workers]

    jobs = await broker.pool.fetch(
        "SELECT id, scheduled_at, status FROM koyojobs_jobs "
        "WHERE name = 'periodic.every_second' ORDER BY scheduled_at"
    )
    ticks = [row["scheduled_at"] for row in jobs]
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
    assert all(t.microsecond == 0 for t in ticks), ticks  # whole seconds since the epoch
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps == {timedelta(seconds=1)}, f"a tick is missing: {ticks}"
    runs = await broker.pool.fetch("SELECT job_id, tick, pid FROM periodic_runs")
    done = [row["id"] for row in jobs if row["status"] == "done"]
    ran = [row["job_id"] for row in runs]
    assert sorted(ran) == sorted(done), "a tick ran twice, or a done tick never ran"
    # Only the last tick or two may be cut off by the stop (put back as ready).
    assert len(jobs) - len(done) <= 2, [dict(r) for r in jobs]
    # The run saw its tick as scheduled_at.
    by_id = {row["id"]: row["scheduled_at"] for row in jobs}
    assert all(by_id[row["job_id"]] == row["tick"] for row in runs)


@pytest.mark.timeout(120)
async def test_ticks_resume_as_soon_as_the_database_is_back_from_an_outage() -> None:
    # A cluster of its own, stopped for longer than the ticker's old backoff
    # (0.1 * 2**n s) would have waited: ticks came back up to 11 s late.
    pg = TemporaryPostgres()
    await asyncio.to_thread(pg.start)
    worker = WorkerProcess(pg.dsn, module="tests.periodic_jobs", queue="periodic-1s")
    try:
        async with Broker(pg.dsn) as broker:
            await broker.pool.execute(periodic_jobs.RUNS_TABLE)
        await worker.start()
        async with Broker(pg.dsn, migrate=False) as broker:
            await until(
                lambda: broker.pool.fetchval("SELECT count(*) >= 2 FROM koyojobs_jobs"),
                timeout=20,
                what="two ticks enqueued",
            )
        await asyncio.to_thread(pg.restart, "fast", 14.0)
        back = datetime.now(UTC)
        async with Broker(pg.dsn, migrate=False) as broker:
            first_after: datetime = await until(
                lambda: broker.pool.fetchval(
                    "SELECT min(created_at) FROM koyojobs_jobs WHERE created_at > $1", back
                ),
                timeout=30,
                what="a tick enqueued after the outage",
            )
            # The tick that fell in the outage, and the ones since, once each.
            ticks = await broker.pool.fetch(
                "SELECT scheduled_at FROM koyojobs_jobs ORDER BY scheduled_at"
            )
        worker.signal(signal.SIGTERM)
        assert await worker.wait(20) == 0, worker.output()
    finally:
        await worker.kill()
        await asyncio.to_thread(pg.stop)
    late = (first_after - back).total_seconds()
    assert late < 3.0, (
        f"the first tick after the outage came {late:.1f}s after it\n{worker.output()}"
    )
    moments = [row["scheduled_at"] for row in ticks]
    assert len(moments) == len(set(moments)), "a tick was enqueued twice"
    assert worker.output().count("enqueuing periodic jobs again") == 1, worker.output()
