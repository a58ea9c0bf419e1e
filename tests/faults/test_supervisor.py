"""``koyojobs worker --processes N``: real supervisor and child processes on the test's database."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from koyojobs import Broker, Status
from tests.faults import jobs
from tests.faults.conftest import WorkerProcess, until

StartProcess = Callable[..., Awaitable[WorkerProcess]]


def _children(supervisor: WorkerProcess) -> list[int]:
    """The pids the supervisor started, in order."""
    found = re.findall(r"worker process started pid=(\d+)", "".join(supervisor.lines))
    return [int(pid) for pid in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: its parent has not reaped it yet.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _working(supervisor: WorkerProcess) -> int:
    return sum("INFO koyojobs.cli: working" in line for line in supervisor.lines)


async def _statuses(broker: Broker) -> dict[str, int]:
    rows = await broker.pool.fetch("SELECT status, count(*) AS n FROM koyojobs_jobs GROUP BY 1")
    return {r["status"]: r["n"] for r in rows}


async def test_n_children_work_and_a_killed_child_is_replaced(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    supervisor = await worker_processes(processes=2, concurrency=2)
    await until(
        lambda: _working(supervisor) == 2, 20, "two children working", details=supervisor.output
    )
    first, second = _children(supervisor)
    assert first != second and _alive(first) and _alive(second)

    # Both children claim: jobs that sleep long enough that one child cannot take them all.
    log = tmp_path / "runs.log"
    for _ in range(8):
        await jobs.sleep_and_log(str(log), 0.5)
    await until(
        lambda: (
            log.exists()
            and {int(line.split()[1]) for line in log.read_text().splitlines()} == {first, second}
        ),
        20,
        "runs in both children",
        details=supervisor.output,
    )

    os.kill(first, signal.SIGKILL)
    await until(
        lambda: len(_children(supervisor)) == 3, 20, "a replacement", details=supervisor.output
    )
    assert "a worker process ended; replacing it" in supervisor.output()
    assert f"pid={first} code=-9" in supervisor.output()
    replacement = _children(supervisor)[2]
    await until(
        lambda: _working(supervisor) == 3, 20, "the replacement working", details=supervisor.output
    )
    assert _alive(second) and _alive(replacement) and not _alive(first)

    # The killed child's jobs come back when their leases lapse; every job ends done.
    async def all_done() -> bool:
        return await _statuses(broker) == {"done": 8}

    await until(all_done, 30, "all jobs done", details=supervisor.output)
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait(20) == 0
    assert not _alive(second) and not _alive(replacement)


async def test_sigterm_stops_every_child_gracefully_exit_0_and_no_job_is_lost(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    supervisor = await worker_processes(processes=2, concurrency=2, **{"shutdown-grace": 5})
    await until(
        lambda: _working(supervisor) == 2, 20, "two children working", details=supervisor.output
    )
    children = _children(supervisor)
    log = tmp_path / "runs.log"
    ids = [await jobs.sleep_and_log(str(log), 0.3) for _ in range(40)]
    await until(
        lambda: log.exists() and len(log.read_text().splitlines()) >= 6,
        20,
        "some runs",
        details=supervisor.output,
    )

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait(30) == 0, supervisor.output()
    assert "all worker processes stopped" in supervisor.output()
    assert sum("stopping gracefully" in line for line in supervisor.lines) == 2
    assert not any(_alive(pid) for pid in children)
    # Nothing is left running: each job ran to its end or went back to the queue.
    statuses = await _statuses(broker)
    assert set(statuses) <= {"done", "ready"} and sum(statuses.values()) == len(ids), statuses

    # A new worker finishes the rest; each job is done.
    again = await worker_processes(concurrency=8)
    for job_id in ids:
        job = await broker.get_job(job_id)
        assert job is not None
        if job.status is not Status.DONE:
            await until(
                lambda job_id=job_id: _is_done(broker, job_id),
                30,
                f"job {job_id} done",
                details=again.output,
            )
    again.signal(signal.SIGTERM)
    assert await again.wait(20) == 0


async def _is_done(broker: Broker, job_id: int) -> bool:
    job = await broker.get_job(job_id)
    return job is not None and job.status is Status.DONE


async def test_children_stop_when_their_supervisor_is_killed(
    worker_processes: StartProcess,
) -> None:
    supervisor = await worker_processes(processes=2, concurrency=1)
    await until(
        lambda: _working(supervisor) == 2, 20, "two children working", details=supervisor.output
    )
    children = _children(supervisor)
    assert await supervisor.kill() == -signal.SIGKILL
    # The pipe closed: each child logs it and stops gracefully (they are no zombies of
    # ours: init reaps them).
    await until(lambda: not any(_alive(pid) for pid in children), 20, "children gone")
    assert "the supervisor is gone; stopping" in supervisor.output()


async def test_a_child_that_fails_at_start_is_replaced_after_a_growing_delay() -> None:
    # A child that fails at start (its database refuses) is replaced with a growing delay.
    supervisor = WorkerProcess("postgresql://127.0.0.1:1/none", processes=2, concurrency=1)
    await supervisor.start(wait_ready=False)
    try:
        await until(
            lambda: re.search(r"replacing it .*code=1 after_s=1\.0", supervisor.output()),
            30,
            "a second, longer delay",
            details=supervisor.output,
        )
        assert "cannot connect to" in supervisor.output()
        supervisor.signal(signal.SIGTERM)
        assert await supervisor.wait(20) == 0
    finally:
        if supervisor.returncode is None:
            await supervisor.kill()
