"""Periodic jobs in a worker: catch-up after downtime, skip_if_running, the tick as scheduled_at."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from koyojobs import Broker, Worker
from koyojobs.periodic import periodic_jobs
from koyojobs.registry import forget, register
from tests import periodic_jobs as jobs
from tests.faults.conftest import until


async def test_after_downtime_only_the_latest_missed_tick_runs(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)
    # The schedule's last tick is ten periods ago: the workers were down since.
    ten_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    await broker.pool.execute(
        "INSERT INTO koyojobs_schedules (name, last_tick) VALUES ($1, $2)",
        jobs.catch_up.name,
        ten_ago,
    )
    before = await broker.pool.fetchval("SELECT clock_timestamp()")
    async with Worker(broker, queue="periodic-catch-up", poll_interval=0.2):
        await until(
            lambda: broker.pool.fetchval("SELECT count(*) >= 3 FROM periodic_runs"),
            timeout=15,
            what="three runs",
        )
    ticks = [
        row["scheduled_at"]
        for row in await broker.pool.fetch(
            "SELECT scheduled_at FROM koyojobs_jobs WHERE name = $1 ORDER BY scheduled_at",
            jobs.catch_up.name,
        )
    ]
    # The first tick enqueued is the latest one due when the worker first looked
    # (at or after `before`, by the database's clock): the nine missed before
    # it are not backfilled, and it runs once.
    assert ticks[0] >= before.replace(microsecond=0), (before, ticks)
    assert ticks[0] - ten_ago >= timedelta(seconds=10), (ten_ago, ticks)
    assert len(ticks) == len(set(ticks)), ticks


async def test_a_new_periodic_job_waits_for_its_next_tick(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)
    async with Worker(broker, queue="periodic-catch-up", poll_interval=0.2):
        await until(
            lambda: broker.pool.fetchval("SELECT count(*) >= 1 FROM periodic_runs"),
            timeout=10,
            what="a run",
        )
        row = await broker.pool.fetchrow(
            "SELECT s.created_at, j.scheduled_at FROM koyojobs_schedules AS s "
            "JOIN koyojobs_jobs AS j ON j.name = s.name ORDER BY j.scheduled_at LIMIT 1"
        )
    assert row is not None
    # Like cron: no run for the tick that fell before the job was first seen.
    assert row["scheduled_at"] > row["created_at"], dict(row)


async def test_a_run_longer_than_the_period_is_not_stacked(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)
    async with Worker(broker, queue="periodic-slow", pool_size=4, poll_interval=0.2):
        await until(
            lambda: broker.pool.fetchval(
                "SELECT count(*) >= 2 FROM periodic_runs WHERE finished_at IS NOT NULL"
            ),
            timeout=20,
            what="two finished runs",
        )
        skipped = await broker.pool.fetchval(
            "SELECT last_skipped OR last_tick > last_enqueued_tick FROM koyojobs_schedules "
            "WHERE name = $1",
            jobs.slow.name,
        )
    runs = await broker.pool.fetch(
        "SELECT started_at, finished_at FROM periodic_runs ORDER BY started_at"
    )
    for earlier, later in itertools.pairwise(runs):
        assert earlier["finished_at"] is not None and earlier["finished_at"] <= later["started_at"]
    assert skipped is not None
    # 4 slots free, a tick a second: without skip_if_running runs would overlap.
    assert (
        await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE name = $1 AND status IN ('ready', 'running')",
            jobs.slow.name,
        )
        <= 1
    )


def test_periodic_jobs_lists_what_this_process_imported() -> None:
    names = [job.name for job in periodic_jobs("periodic-1s")]
    assert names == [jobs.every_second.name]


async def test_a_periodic_job_removed_from_the_code_stops_being_enqueued(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)

    async def runs_of(name: str) -> int:
        count: int = await broker.pool.fetchval(
            "SELECT count(*) FROM periodic_runs WHERE name = $1", name
        )
        return count

    try:
        async with Worker(broker, queue="periodic-removal", poll_interval=0.2):
            await until(
                lambda: runs_of(jobs.removed.name), timeout=10, what="the job to remove ran"
            )
            forget(jobs.removed.name)  # as a deploy that deletes it
            # Ticks taken, enqueued or skipped: the schedule row's last tick.
            taken = "SELECT last_tick FROM koyojobs_schedules WHERE name = $1"
            before = await broker.pool.fetchval(taken, jobs.removed.name)
            clock = await runs_of(jobs.clock.name)

            # Three more ticks of its neighbour: the clock of this test.
            async def three_more() -> bool:
                return await runs_of(jobs.clock.name) >= clock + 3

            await until(three_more, timeout=15, what="three more ticks")
        after = await broker.pool.fetchval(taken, jobs.removed.name)
        # At most the round already under way when it was removed.
        assert after - before <= timedelta(seconds=1), (before, after)
    finally:
        register(jobs.removed)
