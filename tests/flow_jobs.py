"""Jobs with flow control, for in-process workers and ``koyojobs worker`` processes.

Runs append ``start``/``end`` lines (with the process id and the wall clock)
to a log file named in their arguments: one ``write`` per line with
``O_APPEND``, so lines of many processes never interleave. Tests read limits
off that log, not off anything the worker counts.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import timedelta

from koyojobs import current_job, define_job, snooze

# A queue of their own: a worker of a queue with limited jobs claims through
# the limited claim, and the other tests' workers of "default" must not.
QUEUE = "flow"


def _log(path: str, event: str, key: str) -> None:
    job = current_job()
    assert job is not None
    line = f"{event} {job.id} {key} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _logged(path: str, key: str, seconds: float) -> str:
    _log(path, "start", key)
    await asyncio.sleep(seconds)
    _log(path, "end", key)
    return key


@define_job(queue=QUEUE, name="flow.limited", concurrency=3)
async def limited(path: str, seconds: float) -> str:
    """At most 3 at once, across every process."""
    return await _logged(path, "-", seconds)


@define_job(
    queue=QUEUE,
    name="flow.per_tenant",
    concurrency=2,
    limit_key=lambda path, tenant, seconds: tenant,
)
async def per_tenant(path: str, tenant: str, seconds: float) -> str:
    """At most 2 at once per tenant. A run after a lost one does not sleep."""
    job = current_job()
    assert job is not None
    return await _logged(path, tenant, seconds if job.attempt == 1 else 0)


@define_job(queue=QUEUE, name="flow.rated", rate_limit=(4, 1.0))
async def rated(n: int) -> int:
    """At most 4 starts in any second."""
    return n


@define_job(
    queue=QUEUE, name="flow.rated_per_key", rate_limit=(2, 1.0), limit_key=lambda key, n: key
)
async def rated_per_key(key: str, n: int) -> int:
    """At most 2 starts in any second, per key."""
    return n


@define_job(queue=QUEUE, name="flow.free")
async def free(n: int) -> int:
    """No limit: shares a queue with limited jobs."""
    return n


@define_job(queue=QUEUE, name="flow.unique", unique=True)
async def unique(user_id: int, note: str = "") -> int:
    """One ready or running job per equal arguments."""
    return user_id


@define_job(
    queue=QUEUE, name="flow.unique_by_user", unique=lambda user_id, note="": f"user-{user_id}"
)
async def unique_by_user(user_id: int, note: str = "") -> str:
    """One ready or running job per user, whatever the note."""
    return note


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@define_job(queue=QUEUE, name="flow.unique_point", unique=True)
async def unique_point(point: Point, tags: frozenset[str]) -> int:
    """Keyed by a dataclass and a set."""
    return point.x


@define_job(queue=QUEUE, name="flow.snoozer", max_attempts=2)
async def snoozer(times: int) -> int:
    """Snoozes ``times`` times (counted by its snoozes so far), then returns its attempt."""
    job = current_job()
    assert job is not None
    snoozes = snoozer_counts.get(job.id, 0)
    if snoozes < times:
        snoozer_counts[job.id] = snoozes + 1
        snooze(0.05)
    return job.attempt


snoozer_counts: dict[int, int] = {}


@define_job(
    name="flow.periodic_limited",
    queue="flow-periodic",
    every=timedelta(seconds=1),
    concurrency=1,
)
async def periodic_limited() -> None:
    """A periodic job with a limit: each tick's job carries it."""


@define_job(queue=QUEUE, name="flow.always_snoozes")
async def always_snoozes() -> None:
    """Never done: snoozes at once, every time."""
    snooze(0)


@define_job(queue=QUEUE, name="flow.rated_logged", rate_limit=(3, 1.0))
async def rated_logged(path: str, n: int) -> int:
    """At most 3 starts in any second, across processes; each start logged."""
    await _logged(path, "rated", 0)
    return n
