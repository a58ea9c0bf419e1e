"""A hook runs at least once for a job that ends, and may run twice after a crash.

Hooks run after the job, before its outcome is written. A worker killed in
between has written nothing: the job's lease lapses, another worker runs the
job again, and its hooks with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from koyojobs import Broker, Status
from tests.faults import jobs
from tests.faults.conftest import WorkerProcess, until


@pytest.mark.parametrize(
    ("stall", "hook_lines"),
    [
        # Killed after the job ended, before its hook did anything: the hook is not lost.
        ("before", ["hook 2 B"]),
        # Killed after the hook's effect, before the outcome was written: it runs twice.
        ("after", ["hook 1 A", "hook 2 B"]),
    ],
)
async def test_a_worker_killed_between_a_job_and_its_hook(
    broker: Broker,
    worker_processes: Callable[..., Awaitable[WorkerProcess]],
    tmp_path: Path,
    stall: str,
    hook_lines: list[str],
) -> None:
    log = tmp_path / "runs.log"
    (tmp_path / "runs.log.armed").touch()
    first = await worker_processes()
    job_id = await jobs.hooked(str(log), stall)
    assert job_id is not None
    await until(
        lambda: log.exists() and "stalled" in log.read_text(),
        timeout=20,
        what="the first worker stalling in the hook",
        details=first.output,
    )
    await first.kill()
    job = await broker.get_job(job_id)
    assert job is not None and job.status is Status.RUNNING  # nothing was written
    second = await worker_processes()
    job = await broker.wait(job_id, timeout=30)
    assert job.status is Status.DONE and job.attempts == 2, second.output()
    names = {str(first.pid): "A", str(second.pid): "B"}
    lines = [
        " ".join(names.get(w, w) for w in line.split()) for line in log.read_text().splitlines()
    ]
    assert [line for line in lines if line.startswith("job")] == ["job 1 A", "job 2 B"]
    assert [line for line in lines if line.startswith("hook")] == hook_lines
