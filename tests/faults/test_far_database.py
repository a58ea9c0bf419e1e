"""A worker far from its database (koyojobs.distance): claims ahead through a
delaying proxy, and keeps the lease and at-least-once rules when killed or stopped.

Workers are real ``koyojobs worker`` processes; the proxy adds about 6 ms to
every round trip of theirs.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from koyojobs import Broker
from tests.faults import jobs
from tests.faults.conftest import WorkerProcess, until
from tests.proxy import BlackholeProxy

StartProcess = Callable[..., Awaitable[WorkerProcess]]


@pytest.fixture
async def far(dsn: str) -> AsyncIterator[BlackholeProxy]:
    proxy = BlackholeProxy(dsn, delay=0.003)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def far_worker(far: BlackholeProxy) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """CLI workers whose connections all go through the delaying proxy."""
    started: list[WorkerProcess] = []

    async def start(**options: Any) -> WorkerProcess:
        worker = WorkerProcess(far.dsn, **options)
        started.append(worker)
        return await worker.start()

    yield start
    for worker in started:
        if worker.process is not None and worker.returncode is None:
            await worker.kill()


def _started(log: Path) -> set[int]:
    if not log.exists():
        return set()
    return {int(line.split()[0]) for line in log.read_text().splitlines()}


async def _held(broker: Broker) -> bool:
    """Whether more jobs are running than the worker's 2 slots: some were claimed ahead."""
    running: int = await broker.pool.fetchval(
        "SELECT count(*) FROM koyojobs_jobs WHERE status = 'running'"
    )
    return running > 2


async def _counts(broker: Broker) -> dict[str, int]:
    rows = await broker.pool.fetch("SELECT status, count(*) AS n FROM koyojobs_jobs GROUP BY 1")
    return {r["status"]: r["n"] for r in rows}


async def test_a_killed_far_worker_loses_no_job_it_claimed_ahead(
    broker: Broker,
    far_worker: StartProcess,
    worker_processes: StartProcess,
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    ids = await broker.enqueue_many(jobs.sleep_and_log(str(log), 0.01) for _ in range(300))
    worker = await far_worker(concurrency=2, lease=2.0)
    await worker.wait_for_line("claiming ahead", timeout=20)
    match = re.search(r"claiming ahead .*round_trip_ms=([\d.]+)", worker.output())
    assert match is not None and float(match[1]) >= 6, worker.output()
    # It holds more jobs than it has slots: it claimed ahead.
    await until(lambda: _held(broker), 30, "jobs claimed ahead", details=worker.output)

    assert await worker.kill() == -signal.SIGKILL

    # Every job runs (again, once its lease lapses, for those the dead worker held).
    near = await worker_processes(concurrency=8, lease=2.0)

    async def all_done() -> bool:
        return await _counts(broker) == {"done": len(ids)}

    await until(all_done, 60, "every job done", details=near.output)
    assert _started(log) == set(ids)
    near.signal(signal.SIGTERM)
    assert await near.wait(20) == 0


async def test_a_far_worker_stopped_gracefully_puts_back_what_it_claimed_ahead(
    broker: Broker,
    far_worker: StartProcess,
    worker_processes: StartProcess,
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    ids = await broker.enqueue_many(jobs.sleep_and_log(str(log), 0.01) for _ in range(300))
    worker = await far_worker(concurrency=2, lease=5.0)
    await until(lambda: _held(broker), 30, "jobs claimed ahead", details=worker.output)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0, worker.output()

    counts = await _counts(broker)
    assert set(counts) == {"done", "ready"}, counts
    started = _started(log)
    # What never began is back, its attempt not counted; what ran finished.
    rows = await broker.pool.fetch(
        "SELECT id, status, attempts FROM koyojobs_jobs WHERE id = ANY($1::bigint[])", ids
    )
    for row in rows:
        if row["status"] == "ready":
            assert row["id"] not in started and row["attempts"] == 0, dict(row)
        else:
            assert row["id"] in started and row["attempts"] == 1, dict(row)
