"""Jobs the integration and acceptance tests run (importable by CLI workers as tests.jobs)."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Any

from koyojobs import current_broker, current_job, define_job, retry

# In-process observations, reset by the tests that read them.
runs: list[tuple[str, Any]] = []
gates: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
concurrency = {"now": 0, "max": 0}


@define_job
async def echo(value: Any) -> Any:
    runs.append(("echo", value))
    return value


@define_job
def plain_echo(value: Any) -> dict[str, Any]:
    return {
        "value": value,
        "in_main_thread": threading.current_thread() is threading.main_thread(),
        "thread": threading.current_thread().name,
    }


@define_job(queue="ordered", max_attempts=1)
async def ordered(label: str) -> None:
    runs.append(("ordered", label))


@define_job(queue="ordered", max_attempts=1, priority=0)
async def ordered_urgent(label: str) -> None:
    runs.append(("ordered", label))


@define_job(max_attempts=3, backoff=lambda attempt: 0.0)
async def fails_twice() -> str:
    job = current_job()
    assert job is not None
    if job.attempt < 3:
        raise ValueError(f"attempt {job.attempt} fails")
    return "third time"


@define_job(max_attempts=2, backoff=lambda attempt: 0.0)
async def always_fails() -> None:
    raise ValueError("always")


@define_job(max_attempts=3)
async def retries_once(delay: float) -> int:
    job = current_job()
    assert job is not None
    if job.attempt == 1:
        try:
            retry(delay)
        except Exception:
            runs.append(("swallowed", job.id))
    return job.attempt


@define_job(max_attempts=1, timeout=0.2)
async def too_slow() -> None:
    await asyncio.Event().wait()


@define_job(max_attempts=1)
async def wait_for_gate(name: str) -> str:
    runs.append(("started", name))
    await gates[name].wait()
    return name


@define_job
async def track_concurrency(seconds_gate: str) -> None:
    concurrency["now"] += 1
    concurrency["max"] = max(concurrency["max"], concurrency["now"])
    try:
        await gates[seconds_gate].wait()
    finally:
        concurrency["now"] -= 1


@define_job
async def who_am_i() -> dict[str, Any]:
    job = current_job()
    assert job is not None
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "scheduled_at": job.scheduled_at,
    }


@define_job
async def spawn_child(value: int) -> int | None:
    # Enqueues on the running job's broker, with no current broker set.
    return await echo(value)


@define_job
async def returns_generator() -> Any:
    return (i for i in range(3))


@define_job
async def sleeper(seconds: float) -> float:
    await asyncio.sleep(seconds)  # the job's own work: it takes time on purpose
    return seconds


@define_job(max_attempts=3)
async def hold_pool_connection(seconds: float) -> int:
    """Holds one of the broker's pool connections for ``seconds``, as a job using the DB may."""
    broker = current_broker()
    job = current_job()
    assert broker is not None and job is not None
    async with broker.pool.acquire() as conn:
        await conn.execute("SELECT pg_sleep($1)", seconds)
    return job.attempt


@define_job(max_attempts=2, backoff=lambda attempt: float("inf"))
async def fails_with_endless_backoff() -> None:
    raise ValueError("again, some day")
