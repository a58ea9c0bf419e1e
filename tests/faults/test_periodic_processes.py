"""Periodic jobs across worker processes: each tick enqueued once and run once."""

from __future__ import annotations

import itertools
import signal
from datetime import timedelta

import pytest

from koyojobs import Broker
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
