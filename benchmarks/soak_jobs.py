"""The jobs of benchmarks/soak_outages.py, imported by its `koyojobs worker` processes.

Every run logs its own life to the file named by ``$SOAK_LIFELOG`` with
``O_APPEND``, one ``write`` per line (so lines from many processes and threads
never interleave): ``start``, ``alive`` every 50 ms for the longer ones, and
``end`` (also when an async run is cancelled). A line is::

    event run job_id attempt pid wall_clock kind key outcome

``run`` is a token of its own per run (a snoozed job runs again with the same
attempt number, maybe in the same process); ``key`` is the limit key, the
unique key or the tick, ``-`` for the others.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from datetime import timedelta

from koyojobs import current_job, define_job, retry, snooze

LIFELOG_ENV = "SOAK_LIFELOG"
ALIVE_EVERY = 0.05
QUEUE = "soak"
"""Not ``default``: a limited job changes how its queue claims, for whoever imports this."""
PERIODIC_QUEUE = "soak-periodic"
LIMIT = 2
"""``concurrency`` of soak.limited, per key."""
RATE = (5, 1.0)
"""``rate_limit`` of soak.rated: starts, seconds."""


def _backoff(attempt: int) -> float:
    return 0.1


class _Life:
    """One run's log lines."""

    def __init__(self, kind: str, key: str = "-") -> None:
        job = current_job()
        assert job is not None
        self.head = f"{secrets.token_hex(4)} {job.id} {job.attempt} {os.getpid()}"
        self.tail = f"{kind} {key}"
        self.path = os.environ[LIFELOG_ENV]
        self.line("start")

    def line(self, event: str, outcome: str = "-") -> None:
        text = f"{event} {self.head} {time.time():.6f} {self.tail} {outcome}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def live_sync(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.line("alive")
            time.sleep(ALIVE_EVERY)  # the job's own work, in its thread

    async def live(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self.line("alive")
                await asyncio.sleep(ALIVE_EVERY)  # the job's own work
        except asyncio.CancelledError:
            self.line("end", "cancelled")
            raise


@define_job(name="soak.quick", queue=QUEUE, max_attempts=20, backoff=_backoff)
async def quick(seconds: float) -> str:
    life = _Life("quick")
    await asyncio.sleep(seconds)  # a short piece of work
    life.line("end", "done")
    return "quick"


@define_job(name="soak.long_def", queue=QUEUE, max_attempts=20, backoff=_backoff)
def long_def(seconds: float) -> str:
    """A thread, longer than the grace and often than the lease: it cannot be stopped."""
    life = _Life("def")
    life.live_sync(seconds)
    life.line("end", "done")
    return "long_def"


@define_job(name="soak.long_async", queue=QUEUE, max_attempts=20, backoff=_backoff)
async def long_async(seconds: float) -> str:
    life = _Life("async")
    await life.live(seconds)
    life.line("end", "done")
    return "long_async"


@define_job(
    name="soak.limited",
    queue=QUEUE,
    max_attempts=20,
    backoff=_backoff,
    concurrency=LIMIT,
    limit_key=lambda key, seconds: key,
)
def limited(key: str, seconds: float) -> str:
    life = _Life("limited", key)
    life.live_sync(seconds)
    life.line("end", "done")
    return "limited"


@define_job(name="soak.rated", queue=QUEUE, max_attempts=20, backoff=_backoff, rate_limit=RATE)
async def rated(n: int) -> int:
    life = _Life("rated")
    life.line("end", "done")
    return n


@define_job(
    name="soak.unique",
    queue=QUEUE,
    max_attempts=20,
    backoff=_backoff,
    unique=lambda key, seconds: key,
)
async def unique(key: str, seconds: float) -> str:
    life = _Life("unique", key)
    await life.live(seconds)
    life.line("end", "done")
    return "unique"


@define_job(name="soak.snoozer", queue=QUEUE, max_attempts=20, backoff=_backoff)
async def snoozer(chance: float) -> str:
    life = _Life("snooze")
    if random.random() < chance:
        life.line("end", "snoozed")
        snooze(0.3)
    life.line("end", "done")
    return "awake"


@define_job(name="soak.flaky", queue=QUEUE, max_attempts=20, backoff=_backoff)
async def flaky() -> int:
    """Fails its first attempt, asks for a retry in its second, succeeds from its third."""
    life = _Life("flaky")
    job = current_job()
    assert job is not None
    if job.attempt == 1:
        life.line("end", "raised")
        raise RuntimeError("the first attempt fails, on purpose")
    if job.attempt == 2:
        life.line("end", "retry")
        retry(0.2)
    life.line("end", "done")
    return job.attempt


@define_job(name="soak.tick", every=timedelta(seconds=1), queue=PERIODIC_QUEUE, max_attempts=20)
async def tick() -> str:
    job = current_job()
    assert job is not None
    life = _Life("tick", f"{job.scheduled_for.timestamp():.0f}")
    await asyncio.sleep(0.05)  # a periodic job's short work
    life.line("end", "done")
    return "tick"
