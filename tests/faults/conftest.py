"""Fault-test helpers: CLI worker processes, a runs table, waiting on conditions."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from koyojobs import Broker
from tests import worker_process
from tests.faults import jobs
from tests.worker_process import REPO, until

__all__ = ["REPO", "WorkerProcess", "fetch_runs", "until"]


class WorkerProcess(worker_process.WorkerProcess):
    """``koyojobs worker tests.faults.jobs`` with the fault tests' timings; stderr is kept.

    ``options`` are the worker's (``lease=1.5``, ``queue=...``), on top of
    short ones: a lease of a second, a poll every 0.2s, a second's grace.
    """

    def __init__(self, dsn: str, module: str = "tests.faults.jobs", **options: Any) -> None:
        self.options = {
            "concurrency": 4,
            "lease": 1.0,
            "poll-interval": 0.2,
            "shutdown-grace": 1.0,
            **options,
        }
        args = [f"--{k}={v}" for k, v in self.options.items()]
        super().__init__(module, "--dsn", dsn, *args, log_level="INFO")


@pytest.fixture
async def worker_processes(dsn: str) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """Start CLI workers on the test's database; any still alive are killed at the end."""
    started: list[WorkerProcess] = []

    async def start(wait_ready: bool = True, **options: Any) -> WorkerProcess:
        worker = WorkerProcess(dsn, **options)
        started.append(worker)
        return await worker.start(wait_ready)

    yield start
    for worker in started:
        if worker.process is not None:
            with contextlib.suppress(ProcessLookupError):
                worker.signal(signal.SIGKILL)
            await worker.process.wait()
            if worker._reader is not None:
                await worker._reader


@pytest.fixture
async def runs_table(broker: Broker) -> None:
    await broker.pool.execute(jobs.RUNS_TABLE)


async def fetch_runs(broker: Broker, job_id: int) -> list[tuple[int, int]]:
    rows = await broker.pool.fetch(
        "SELECT attempt, pid FROM fault_runs WHERE job_id = $1 ORDER BY attempt, started_at",
        job_id,
    )
    return [(r["attempt"], r["pid"]) for r in rows]
