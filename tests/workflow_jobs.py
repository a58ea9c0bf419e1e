"""Jobs the workflow tests run (importable by worker processes as tests.workflow_jobs)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from koyojobs import current_job, define_job, report_progress, sync, upstream

# In-process observations, reset by the tests that read them.
runs: list[str] = []
seen_upstream: dict[str, dict[str, Any]] = {}
gate = threading.Event()


@define_job(name="wf.step")
async def step(label: str) -> str:
    runs.append(label)
    return label


@define_job(name="wf.collect")
async def collect(label: str) -> dict[str, Any]:
    """Returns what upstream() gave: step name -> (status, result, last_error)."""
    runs.append(label)
    found = {
        name: (job.status.value, job.result, job.last_error)
        for name, job in (await upstream()).items()
    }
    seen_upstream[label] = found
    return found


@define_job(name="wf.plain_collect")
def plain_collect(label: str) -> dict[str, Any]:
    """collect() as a plain def step: koyojobs.sync.upstream(), from its thread."""
    runs.append(label)
    found = {
        name: (job.status.value, job.result, job.last_error)
        for name, job in sync.upstream().items()
    }
    seen_upstream[label] = found
    return found


@define_job(name="wf.sync_upstream_in_async", max_attempts=1)
async def sync_upstream_in_async() -> None:
    sync.upstream()  # wrong here: an async def step awaits upstream()


@define_job(name="wf.fail", max_attempts=1)
async def fail(label: str) -> None:
    runs.append(label)
    raise ValueError(f"{label} broke")


@define_job(name="wf.plain_step")
def plain_step(label: str) -> str:
    runs.append(label)
    return label


@define_job(name="wf.shard")
async def shard(n: int) -> int:
    return n


@define_job(name="wf.total")
async def total() -> int:
    runs.append("total")
    return sum(job.result for job in (await upstream()).values())


@define_job(name="wf.progress_async")
async def progress_async(steps: int) -> str:
    for n in range(1, steps + 1):
        report_progress(n / steps, f"async {n} of {steps}")
        await asyncio.sleep(0.3)
    return "ok"


@define_job(name="wf.progress_def")
def progress_def(steps: int) -> str:
    for n in range(1, steps + 1):
        report_progress(n / steps, f"def {n} of {steps}")
        gate.wait(0.3)
    return "ok"


@define_job(name="wf.half_done")
def half_done() -> None:
    report_progress(0.5, "half")
    raise ValueError("stopped half way")


@define_job(name="wf.blocked")
async def blocked(label: str) -> str:
    """Runs until cancelled (up to a minute): a step that is running when cancelled."""
    runs.append(label)
    job = current_job()
    assert job is not None
    await asyncio.sleep(60)
    return label


@define_job(name="wf.limited", queue="wf-limited", concurrency=2)
async def limited(label: str) -> str:
    runs.append(label)
    await asyncio.sleep(0.02)
    return label


retry_counts: dict[str, int] = {}


@define_job(name="wf.flaky", max_attempts=3, backoff=lambda attempt: 0.0)
async def flaky(label: str) -> str:
    """Fails its first two attempts."""
    job = current_job()
    assert job is not None
    runs.append(f"{label}#{job.attempt}")
    if job.attempt < 3:
        raise ValueError(f"{label} attempt {job.attempt}")
    return label
