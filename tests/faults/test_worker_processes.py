"""Faults of worker processes: SIGKILL, poison jobs, SIGTERM, many workers, rescue races.

Workers here are real ``koyojobs worker`` processes on the test's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from koyojobs import Broker, Status, Worker
from tests.conftest import wait_for_status
from tests.faults import jobs
from tests.faults.conftest import WorkerProcess, fetch_runs, until

StartProcess = Callable[..., Awaitable[WorkerProcess]]


async def _statuses(broker: Broker) -> Counter[str]:
    rows = await broker.pool.fetch("SELECT status, count(*) AS n FROM koyojobs_jobs GROUP BY 1")
    return Counter({r["status"]: r["n"] for r in rows})


@pytest.mark.usefixtures("runs_table")
async def test_a_job_whose_worker_is_killed_runs_again_elsewhere_and_the_lost_run_counts(
    broker: Broker, worker_processes: StartProcess
) -> None:
    first = await worker_processes(lease=0.5)
    job_id = await jobs.hang_first_attempt()
    await until(lambda: fetch_runs(broker, job_id), what="first run started", details=first.output)

    assert await first.kill() == -signal.SIGKILL
    job = await broker.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == (Status.RUNNING, 1)

    second = await worker_processes(lease=0.5)
    done = await wait_for_status(broker, job_id, Status.DONE, timeout=15)
    assert (done.attempts, done.result) == (2, 2)
    assert await fetch_runs(broker, job_id) == [(1, first.pid), (2, second.pid)]
    assert (await _statuses(broker)) == {"done": 1}

    second.signal(signal.SIGTERM)
    assert await second.wait(10) == 0


@pytest.mark.usefixtures("runs_table")
async def test_a_job_that_kills_its_worker_every_time_ends_failed_with_lease_lapsed(
    broker: Broker, worker_processes: StartProcess
) -> None:
    job_id = await jobs.kill_own_worker()
    killed: list[WorkerProcess] = []
    worker = None
    # Each worker either dies running the poison (one attempt each) or, once the
    # attempts are spent, rescues it as failed and lives on.
    for _ in range(jobs.kill_own_worker.max_attempts + 1):
        worker = await worker_processes(lease=0.5, wait_ready=False)

        async def settled(worker: WorkerProcess = worker) -> bool:
            job = await broker.get_job(job_id)
            assert job is not None
            return worker.returncode is not None or job.status is Status.FAILED

        await until(settled, timeout=15, what="worker died or job failed", details=worker.output)
        if worker.returncode is None:
            break
        assert worker.returncode == -signal.SIGKILL, worker.output()
        killed.append(worker)

    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.last_error) == (Status.FAILED, 2, "lease lapsed")
    assert len(killed) == 2
    assert await fetch_runs(broker, job_id) == [(1, killed[0].pid), (2, killed[1].pid)]

    # The survivor goes on working.
    assert worker is not None and worker.returncode is None
    after = await wait_for_status(broker, await jobs.quick("next"), Status.DONE, timeout=10)
    assert after.result == "next"
    job = await broker.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == (Status.FAILED, 2)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(10) == 0


async def test_sigterm_lets_running_jobs_finish_within_the_grace_and_puts_the_rest_back(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    grace = 1.5
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    release = tmp_path / "release"
    worker = await worker_processes(concurrency=8, lease=1.0, **{"shutdown-grace": grace})
    quick = await jobs.quick("early")
    finishing = await jobs.finish_when_file(str(release))
    hanging = await jobs.hang()
    hanging_thread = await jobs.hang_sync(str(fifo))
    await wait_for_status(broker, quick, Status.DONE)
    for job_id in (finishing, hanging, hanging_thread):
        await wait_for_status(broker, job_id, Status.RUNNING)

    try:
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        await worker.wait_for_line("stopping gracefully")
        release.touch()  # this one finishes during the grace
        code = await worker.wait(grace + 10)
        elapsed = time.monotonic() - signalled
    finally:
        # Let the blocked thread go if its process is still there.
        with contextlib.suppress(OSError):  # ENXIO: nobody reads the fifo any more
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert code == 0, worker.output()
    assert elapsed < grace + 3, f"exit took {elapsed:.1f}s with a {grace}s grace"

    for job_id, result in ((quick, "early"), (finishing, "finished")):
        job = await broker.get_job(job_id)
        assert job is not None
        assert (job.status, job.attempts, job.result) == (Status.DONE, 1, result)
    job = await broker.get_job(hanging)
    assert job is not None
    assert (job.status, job.attempts) == (Status.READY, 0), job
    # A thread cannot be stopped: its job stays running, held by no worker, until
    # its lease lapses (the process is gone by then), and the rescue puts it back.
    row = await broker.pool.fetchrow(
        "SELECT status, attempts, worker_id, lease_expires_at > now() AS leased"
        " FROM koyojobs_jobs WHERE id = $1",
        hanging_thread,
    )
    assert row is not None
    assert dict(row) == {"status": "running", "attempts": 0, "worker_id": None, "leased": True}
    assert "released=2" in worker.output()


@pytest.mark.timeout(180)
async def test_three_processes_of_eight_slots_run_each_of_ten_thousand_jobs_once(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    total = 10_000
    workers = [
        await worker_processes(concurrency=8, lease=10.0, **{"poll-interval": 0.5})
        for _ in range(3)
    ]
    ids: list[int] = []
    for start in range(0, total, 1000):
        batch = await broker.enqueue_many(
            [jobs.append_run(str(log)) for _ in range(start, min(total, start + 1000))]
        )
        assert batch is not None
        ids.extend(batch)

    async def all_finished() -> bool:
        counts = await _statuses(broker)
        return counts["done"] + counts["failed"] == total

    await until(
        all_finished,
        timeout=150,
        what="all jobs finished",
        interval=0.2,
        details=lambda: "\n".join(w.output() for w in workers),
    )
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert await worker.wait(15) == 0, worker.output()

    assert await _statuses(broker) == {"done": total}
    assert await broker.pool.fetchval("SELECT max(attempts) FROM koyojobs_jobs") == 1
    lines = log.read_text().splitlines()
    runs = Counter(int(line.split()[0]) for line in lines)
    assert len(lines) == total
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1
    pids = Counter(int(line.split()[1]) for line in lines)
    assert set(pids) == {w.pid for w in workers}


async def test_a_run_whose_lease_lapsed_before_it_began_goes_back_uncounted(
    broker: Broker, dsn: str
) -> None:
    # Both jobs are claimed in one round; whichever runs first blocks the event
    # loop past both leases. The other's run would then begin after its lease
    # lapsed, when another worker may already have rescued and started the job:
    # it must not begin, but go back (no attempt spent) and run on a new claim.
    ids = await broker.enqueue_many([jobs.check_lease_then_stall(dsn, stall=0.8) for _ in range(2)])
    assert ids is not None
    # No rescue after the first round: only the worker itself decides.
    async with Worker(broker, pool_size=2, lease=0.5, poll_interval=30):

        async def all_done() -> bool:
            return (await _statuses(broker))["done"] == len(ids)

        await until(all_done, timeout=20, what="both jobs done")
    for job_id in ids:
        job = await broker.get_job(job_id)
        assert job is not None
        # result: whether the run's lease was current when its body began.
        assert (job.status, job.result, job.attempts) == (Status.DONE, True, 1), job


async def test_a_claim_answered_after_its_lease_lapsed_is_not_begun(
    broker: Broker, dsn: str, tmp_path: Path
) -> None:
    # The round that writes the first job's outcome also claims the second, and
    # its answer comes back only after the second's lease lapsed (the first's
    # row is locked here meanwhile; a job stalling the event loop does the same
    # to the answer). That run must not begin: the job goes back and runs on a
    # fresh claim.
    gate = tmp_path / "finish"
    first = await jobs.finish_when_file(str(gate))
    assert first is not None
    async with Worker(broker, pool_size=1, lease=0.5, poll_interval=30):
        await wait_for_status(broker, first, Status.RUNNING)
        second = await jobs.check_lease_then_stall(dsn, stall=0)
        assert second is not None
        async with broker.pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM koyojobs_jobs WHERE id = $1 FOR UPDATE", first)
            gate.touch()

            async def round_blocked() -> bool:
                waiting = await broker.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%finished AS (%'"
                )
                return bool(waiting)

            await until(round_blocked, what="the outcome-and-claim round waits on the lock")
            # The fault itself: the round trip outlasts the lease it grants.
            await asyncio.sleep(0.8)
        job = await wait_for_status(broker, second, Status.DONE, Status.FAILED)
    # result: whether the run's lease was current when its body began.
    assert (job.status, job.result, job.attempts) == (Status.DONE, True, 1), job
    done = await broker.get_job(first)
    assert done is not None and done.status is Status.DONE


# From 16 slots a worker claims in two loops: a job rescued from one may come
# back through the other, and must not run beside its stale run either.
@pytest.mark.parametrize("concurrency", [2, 16], ids=["one-claim-loop", "two-claim-loops"])
async def test_a_job_finishing_just_as_its_lease_lapses_never_runs_after_it_is_done(
    broker: Broker, dsn: str, worker_processes: StartProcess, tmp_path: Path, concurrency: int
) -> None:
    # Each first attempt stalls its worker's event loop (no renewal) until just
    # before or after its lease lapses, then finishes, with or without some I/O
    # first. A rescuer in this process puts lapsed jobs back every 10 ms (and
    # the worker's own claim loop every 20 ms): outcome and rescue race.
    log = tmp_path / "runs.log"
    count = 16
    ids = await broker.enqueue_many(
        [
            jobs.finish_at_lapse(dsn, str(log), margin=(i % 4 - 2) * 0.015, io_after=i % 2 * 0.05)
            for i in range(count)
        ]
    )
    assert ids is not None
    worker = await worker_processes(concurrency=concurrency, lease=0.4, **{"poll-interval": 0.02})
    rescuer = Worker(broker, queue="faults-rescuer", lease=0.4, poll_interval=0.01)

    async def all_done() -> bool:
        counts = await _statuses(broker)
        return counts["done"] == count

    async with rescuer:
        await until(all_done, timeout=60, what="all jobs done", interval=0.1, details=worker.output)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(10) == 0

    # A claim answered while a job stalls the loop may lapse before its run
    # begins: the worker does not begin it and says so. Put back in time, the
    # attempt number is claimed again; rescued first, it stays counted, unrun.
    unbegun = {
        (int(m["job"]), int(m["attempt"]))
        for m in re.finditer(
            r"lease lapsed before the job began.*job_id=(?P<job>\d+) attempt=(?P<attempt>\d+)",
            "".join(worker.lines),
        )
    }
    starts: dict[tuple[int, int], list[float]] = defaultdict(list)
    ends: dict[tuple[int, int], float] = {}
    for line in log.read_text().splitlines():
        kind, logged_job, logged_attempt, _pid, at = line.split()
        if kind == "start":
            starts[int(logged_job), int(logged_attempt)].append(float(at))
        else:
            ends[int(logged_job), int(logged_attempt)] = float(at)
    rescued = 0
    for job_id in ids:
        job = await broker.get_job(job_id)
        assert job is not None and job.status is Status.DONE
        # The recorded outcome is the latest claim's: nothing claimed it after.
        assert job.result == job.attempts, job
        attempts = sorted(a for (j, a) in starts if j == job_id)
        assert set(attempts) <= set(range(1, job.attempts + 1)), (job_id, attempts)
        # Every counted attempt ran, or its worker knowingly never began it.
        unrun = {(job_id, a) for a in range(1, job.attempts + 1) if a not in attempts}
        assert unrun <= unbegun, (job_id, attempts, sorted(unbegun))
        rescued += job.attempts > 1
        spans = []
        for attempt in attempts:
            # One claim, one run of the body.
            assert len(starts[job_id, attempt]) == 1, (job_id, attempt, starts[job_id, attempt])
            spans.append((starts[job_id, attempt][0], ends.get((job_id, attempt), float("inf"))))
        # The one worker process never ran the job twice at once.
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert end <= begin, f"job {job_id} ran twice at once: {spans}"
    assert await _statuses(broker) == {"done": count}
    print(f"{rescued} of {count} jobs were rescued before their outcome was recorded;")
    print(f"{len(unbegun)} claims lapsed before their runs began")
