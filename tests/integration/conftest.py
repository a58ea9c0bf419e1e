from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from koyojobs import Broker, Worker
from tests import flow_jobs, jobs

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture(autouse=True)
def _reset_observations() -> None:
    jobs.runs.clear()
    jobs.gates.clear()
    jobs.concurrency.update(now=0, max=0)
    # Keyed by job id, which every test's fresh database numbers from 1.
    flow_jobs.snoozer_counts.clear()


@pytest.fixture
async def start_worker(broker: Broker) -> AsyncIterator[StartWorker]:
    """Start workers with test-sized timings; all are stopped at the end."""
    started: list[Worker] = []

    async def start(**options: Any) -> Worker:
        options.setdefault("lease", 2.0)
        options.setdefault("poll_interval", 0.5)
        options.setdefault("shutdown_grace", 1.0)
        worker = Worker(broker, **options)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in reversed(started):
        await worker.stop()
