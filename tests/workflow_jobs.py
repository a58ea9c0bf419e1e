"""Jobs the workflow tests run (importable by worker processes as tests.workflow_jobs)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

from koyojobs import (
    Broker,
    JobOutcome,
    Status,
    chain,
    current_job,
    define_job,
    report_progress,
    sync,
    upstream,
)

# In-process observations, reset by the tests that read them.
runs: list[str] = []
seen_upstream: dict[str, dict[str, Any]] = {}
gate = threading.Event()


async def step_statuses(broker: Broker, workflow_id: int) -> dict[str, Status]:
    """Each step's status in workflow ``workflow_id``, by step name."""
    wf = await broker.get_workflow(workflow_id)
    assert wf is not None
    return {name: job.status for name, job in wf.steps.items()}


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


# What the hooks of wf.hooked saw: (hook, label, outcome.job.workflow_id,
# current_job().workflow_id, attempt).
hook_log: list[tuple[str, str, int | None, int | None, int]] = []


@define_job(name="wf.hooked", max_attempts=2, backoff=lambda attempt: 0.0)
async def hooked(label: str, fail: bool) -> str:
    if fail:
        raise ValueError(f"{label} broke")
    return label


def _hook_saw(kind: str, outcome: JobOutcome) -> None:
    running = current_job()
    assert running is not None
    hook_log.append(
        (kind, outcome.args[0], outcome.job.workflow_id, running.workflow_id, outcome.job.attempt)
    )


@hooked.on_success
async def _hooked_ok(outcome: JobOutcome) -> None:
    _hook_saw("success", outcome)


@hooked.on_failure
def _hooked_failed(outcome: JobOutcome) -> None:  # a def hook: on the worker's threads
    _hook_saw("failure", outcome)


@define_job(name="wf.too_slow", timeout=0.2, max_attempts=2, backoff=lambda attempt: 0.0)
async def too_slow(label: str) -> None:
    job = current_job()
    assert job is not None
    runs.append(f"{label}#{job.attempt}")
    await asyncio.sleep(30)


@define_job(name="wf.too_slow_def", timeout=0.2, max_attempts=1)
def too_slow_def(label: str) -> None:
    runs.append(label)
    threading.Event().wait(0.6)  # its thread cannot be stopped: its late end is dropped


# Periodic jobs, each on a queue that only the periodic workflow tests work.
@define_job(name="wf.periodic_step", queue="wf-periodic-step", every=timedelta(seconds=1))
async def periodic_step() -> str:
    job = current_job()
    assert job is not None
    runs.append(f"periodic_step:{job.workflow_id is not None}")
    return "ticked"


@define_job(name="wf.periodic_workflow", queue="wf-periodic", every=timedelta(seconds=1))
async def periodic_workflow() -> int:
    """Each tick enqueues a workflow of two steps; returns its id."""
    run = await chain(step("tick-first"), collect("tick-second"), name="per tick").enqueue()
    return run.id


@define_job(name="wf.unique", unique=lambda key, label="", fail=False: key, max_attempts=1)
async def unique_step(key: str, label: str = "", fail: bool = False) -> str:
    """A unique job (keyed by ``key``) to run as a step; ``fail`` makes it fail."""
    runs.append(label or key)
    if fail:
        raise ValueError(f"{label or key} broke")
    return key
