"""Worker heartbeats: Broker.workers() lists every live worker process; a gone one drops out."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import pytest

from koyojobs import Broker, Status, heartbeat
from koyojobs.heartbeat import WorkerProcess
from koyojobs.rollup import roll_up
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker


@pytest.fixture(autouse=True)
def _quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # Five seconds between beats in production; the tests watch several beats.
    monkeypatch.setattr(heartbeat, "INTERVAL", 0.2)


async def until(check: Callable[[], Awaitable[object]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it answers something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.02)


async def test_a_process_s_workers_share_one_row_that_says_what_runs(
    broker: Broker, start_worker: StartWorker
) -> None:
    first = await start_worker(queue="default", pool_size=3, poll_interval=0.2)
    second = await start_worker(queue="ordered", pool_size=2, poll_interval=0.2)
    seen: list[WorkerProcess] = []

    async def listed(queues: list[str], running: int) -> bool:
        seen[:] = await broker.workers()
        return len(seen) == 1 and seen[0].queues == queues and seen[0].running == running

    await until(lambda: listed(["default", "ordered"], 0))
    [row] = seen
    assert row.pid == os.getpid() and row.concurrency == 5 and row.seen_ago < 5
    job_id = await jobs.wait_for_gate("hb")
    await until(lambda: listed(["default", "ordered"], 1))
    jobs.gates["hb"].set()
    await wait_for_status(broker, job_id, Status.DONE)
    await second.stop()
    await until(lambda: listed(["default"], 0))
    await first.stop()
    assert await broker.workers() == []  # a clean stop removes the row at once


async def test_a_worker_not_seen_for_three_heartbeats_is_gone(
    broker: Broker, start_worker: StartWorker
) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_workers (id, host, pid, queues, concurrency, interval_s, last_seen)"
        " VALUES ('lost:1:x', 'lost', 1, '{reports}', 4, 1, now() - interval '4 seconds'),"
        "        ('slow:2:y', 'slow', 2, '{reports}', 4, 5, now() - interval '4 seconds')"
    )
    hosts = [w.host for w in await broker.workers()]
    assert hosts == ["slow"]  # 4s is three beats of the first, not of the second
    assert await broker.queue_known("reports") is True  # a live worker names it
    await start_worker(poll_interval=0.2)

    async def deleted() -> bool:
        ids = await broker.pool.fetch("SELECT id FROM koyojobs_workers ORDER BY id")
        return "lost:1:x" not in [r["id"] for r in ids]

    await until(deleted)  # another process's heartbeat cleared the gone one's row


async def test_minutes_are_rolled_up_for_the_charts(broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, scheduled_at, started_at,"
        " finished_at) SELECT 'r', 'charts', CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'done' END,"
        " '\\x00', m - interval '3 seconds', m, m + interval '1 second'"
        " FROM generate_series(1, 40) AS g,"
        " LATERAL (SELECT date_trunc('minute', now()) - interval '10 minutes' AS m) AS t"
    )
    while await roll_up(broker):
        pass
    row = await broker.pool.fetchrow(
        "SELECT done, failed, waited_sum / waited_count AS waited, waited_max"
        " FROM koyojobs_minutes WHERE queue = 'charts'"
    )
    assert row is not None and tuple(row) == (30, 10, 3.0, 3.0)
    assert await roll_up(broker) is False  # nothing new until the next minute ends
