"""Jobs the fault tests run, in-process or in CLI workers (importable as tests.faults.jobs).

Every job has an explicit name, so a worker in another process finds it.
Runs are recorded where the test can count them: a ``fault_runs`` table (through
the running worker's own pool), a file written with ``O_APPEND`` (one ``write``
per line, so lines from many processes never interleave), or, for in-process
workers, the ``runs`` list below.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

from koyojobs import JobOutcome, current_broker, current_job, define_job

RUNS_TABLE = """
CREATE TABLE fault_runs (
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    pid        integer     NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# In-process observations: [job_id, attempt, monotonic start, monotonic end or None, seconds].
runs: list[list[Any]] = []


def _job() -> Any:
    job = current_job()
    assert job is not None
    return job


async def _record_run() -> Any:
    job = _job()
    broker = current_broker()
    assert broker is not None
    await broker.pool.execute(
        "INSERT INTO fault_runs (job_id, attempt, pid) VALUES ($1, $2, $3)",
        job.id,
        job.attempt,
        os.getpid(),
    )
    return job


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@define_job(name="faults.quick")
async def quick(value: Any) -> Any:
    return value


@define_job(name="faults.hang_first_attempt", max_attempts=3)
async def hang_first_attempt() -> int:
    """Records its run; the first attempt never ends (its worker is killed)."""
    job = await _record_run()
    if job.attempt == 1:
        await asyncio.Event().wait()
    return int(job.attempt)


@define_job(name="faults.kill_own_worker", max_attempts=2)
async def kill_own_worker() -> None:
    """Poison: records its run, then SIGKILLs the process that runs it."""
    await _record_run()
    os.kill(os.getpid(), signal.SIGKILL)


@define_job(name="faults.hang", max_attempts=1)
async def hang() -> None:
    await asyncio.Event().wait()


@define_job(name="faults.hang_sync", max_attempts=1)
def hang_sync(fifo: str) -> None:
    """A plain def whose thread blocks until someone opens ``fifo`` for writing."""
    with open(fifo, "rb"):
        pass


@define_job(name="faults.finish_when_file", max_attempts=1)
async def finish_when_file(path: str) -> str:
    """Runs until ``path`` exists (checked every 10 ms, for at most 30 s)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat of a local file
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.01)
    return "finished"


@define_job(name="faults.append_run", max_attempts=1)
async def append_run(path: str) -> None:
    """Appends 'job_id pid' to ``path``: one line per run of the body."""
    _append(path, f"{_job().id} {os.getpid()}\n")


@define_job(name="faults.work", max_attempts=20, backoff=lambda attempt: 0.05)
async def work(seconds: float) -> int:
    """In-process: records (id, attempt, start, end) around ``seconds`` of work."""
    job = _job()
    record = [job.id, job.attempt, time.monotonic(), None, seconds]
    runs.append(record)
    try:
        await asyncio.sleep(seconds)  # the job's own work: it takes time on purpose
    finally:
        record[3] = time.monotonic()
    return int(job.attempt)


def _block_until_lease_lapsed(dsn: str, job_id: int, attempt: int, margin: float) -> None:
    """Blocks the calling thread (the worker's event loop) until ``margin`` seconds
    after the job's lease lapses by the database's clock (before it, if negative), or
    until the job is no longer this attempt's."""

    async def poll() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                lapsed = await conn.fetchval(
                    "SELECT status <> 'running' OR attempts <> $2"
                    "       OR coalesce(lease_expires_at + make_interval(secs => $3)"
                    "                   < clock_timestamp(), true)"
                    "  FROM koyojobs_jobs WHERE id = $1",
                    job_id,
                    attempt,
                    margin,
                )
                if lapsed:
                    return True
                await asyncio.sleep(0.002)
            return False
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        if not pool.submit(asyncio.run, poll()).result():
            raise TimeoutError(f"the lease of job {job_id} never lapsed")


@define_job(name="faults.finish_at_lapse", max_attempts=20, backoff=lambda attempt: 0.0)
async def finish_at_lapse(dsn: str, log: str, margin: float, io_after: float) -> int:
    """Attempt 1 stalls its worker's event loop (no lease renewal) until ``margin``
    seconds from its lease's lapse, then finishes: its outcome races the rescue."""
    job = _job()
    pid = os.getpid()
    _append(log, f"start {job.id} {job.attempt} {pid} {time.monotonic()}\n")
    try:
        if job.attempt == 1:
            _block_until_lease_lapsed(dsn, job.id, job.attempt, margin)
            if io_after:
                # Some I/O after the stall, as a real job would do: the worker's
                # other tasks run before this one ends.
                await current_broker().pool.execute(  # type: ignore[union-attr]
                    "SELECT pg_sleep($1)", io_after
                )
        return int(job.attempt)
    finally:
        _append(log, f"end {job.id} {job.attempt} {pid} {time.monotonic()}\n")


def _lease_current(dsn: str, job_id: int, attempt: int) -> bool:
    """Whether, by the database's clock, ``attempt`` holds the job's lease right
    now. Blocks the calling thread (the worker's event loop), so that "now" is
    the moment the job's body began, not some later await."""

    async def check() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT status = 'running' AND attempts = $2"
                    "       AND lease_expires_at > clock_timestamp()"
                    "  FROM koyojobs_jobs WHERE id = $1",
                    job_id,
                    attempt,
                )
            )
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, check()).result()


@define_job(name="faults.check_lease_then_stall", max_attempts=3)
async def check_lease_then_stall(dsn: str, stall: float) -> bool:
    """Returns whether its lease was current when its body began, after
    blocking its worker's event loop for ``stall`` seconds (no lease renewal)."""
    job = _job()
    held = _lease_current(dsn, job.id, job.attempt)
    time.sleep(stall)  # noqa: ASYNC251 - a job that blocks the loop is the fault under test
    return held


@define_job(name="faults.unserializable_result", max_attempts=1)
async def unserializable_result() -> Any:
    return (i for i in range(3))  # generators cannot be pickled


@define_job(name="faults.takes_arg", max_attempts=1)
async def takes_arg(value: Any) -> Any:
    return value


@define_job(name="faults.hooked", max_attempts=3)
async def hooked(log: str, stall: str) -> str:
    """Appends 'job attempt pid'; its on_success hook may stall its worker (see below)."""
    _append(log, f"job {_job().attempt} {os.getpid()}\n")
    return "hooked"


@hooked.on_success
async def hooked_succeeded(outcome: JobOutcome) -> None:
    """Appends 'hook attempt pid'. The first worker to find ``<log>.armed`` takes it
    and stalls for good (the test kills it there), ``stall`` saying whether before
    or after that line."""
    log, stall = outcome.args
    pid = os.getpid()
    try:
        os.remove(log + ".armed")
    except FileNotFoundError:
        armed = False
    else:
        armed = True
    if not armed or stall == "after":
        _append(log, f"hook {outcome.job.attempt} {pid}\n")
    if armed:
        _append(log, f"stalled {pid}\n")
        await asyncio.Event().wait()


@define_job(name="faults.lifelog", max_attempts=3)
def lifelog(path: str, seconds: float) -> str:
    """A plain def that logs its life to ``path``: ``start``, ``alive`` every 20 ms, ``end``.

    Each line carries the process, the attempt and the wall clock, so a test can
    tell from the job's own log whether two runs ever overlapped."""
    return _live(path, seconds)


def _live(path: str, seconds: float) -> str:
    job = _job()

    def line(what: str) -> None:
        _append(path, f"{what} {os.getpid()} {job.attempt} {time.time():.6f}\n")

    line("start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        line("alive")
        time.sleep(0.02)
    line("end")
    return "lived"


LIMITED_QUEUE = "faults-limited"
"""The queue of :func:`limited_lifelog`: a limited job would change how the
default queue claims, for every other test that imports this module."""


@define_job(name="faults.limited_lifelog", queue=LIMITED_QUEUE, max_attempts=3, concurrency=1)
def limited_lifelog(path: str, seconds: float) -> str:
    """:func:`lifelog` under ``concurrency=1``: one run of any call at a time."""
    return _live(path, seconds)


def life_spans(path: str) -> list[tuple[int, float, float]]:
    """Per run (one per process and attempt) of :func:`lifelog`: pid, first and last
    sign of life, in the order the runs began."""
    spans: dict[tuple[int, int], list[float]] = {}
    with open(path) as lines:
        for line in lines:
            _, pid, attempt, moment = line.split()
            spans.setdefault((int(pid), int(attempt)), []).append(float(moment))
    runs = [(pid, min(times), max(times)) for (pid, _), times in spans.items()]
    return sorted(runs, key=lambda run: run[1])


def overlaps(spans: list[tuple[int, float, float]]) -> list[str]:
    """The pairs of consecutive runs in which the later began before the earlier's last sign."""
    return [
        f"run in {b[0]} began {a[2] - b[1]:.3f}s before run in {a[0]} last showed life"
        for a, b in itertools.pairwise(spans)
        if b[1] <= a[2]
    ]


@define_job(name="faults.lifelog_past_timeout", max_attempts=2, timeout=0.3, backoff=lambda a: 0)
def lifelog_past_timeout(path: str, seconds: float) -> str:
    """:func:`lifelog` with a timeout shorter than its run: its thread outlives each attempt."""
    return _live(path, seconds)


@define_job(name="faults.sleep_and_log", max_attempts=3)
async def sleep_and_log(path: str, seconds: float) -> int:
    """Appends 'job_id pid' to ``path`` when it starts, then sleeps ``seconds``."""
    _append(path, f"{_job().id} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    return os.getpid()
