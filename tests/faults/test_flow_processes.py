"""Flow control across processes: limits hold over two ``koyojobs worker``
processes, unique keys over many enqueuing processes, a killed worker's slot,
and a pause seen by a worker in another process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from koyojobs import Broker, Status
from tests import flow_jobs
from tests.conftest import wait_for_status
from tests.faults.conftest import REPO, WorkerProcess, until
from tests.integration.test_flow_control import most_at_once, read_log

_ENQUEUER = """
import asyncio, json, sys
from koyojobs import Broker, Database
from tests import flow_jobs

async def main(dsn: str, n: int) -> None:
    async with Database(dsn, max_size=n) as db, Broker(db) as broker:
        ids = await asyncio.gather(*(broker.enqueue(flow_jobs.unique_by_user(42, str(i)))
                                     for i in range(n)))
        many = await broker.enqueue_many([flow_jobs.unique_by_user(43, "a"),
                                          flow_jobs.unique_by_user(42, "b"),
                                          flow_jobs.unique_by_user(43, "c")])
    print(json.dumps({"ids": ids, "many": many}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_fifty_enqueuers_of_one_key_in_five_processes_leave_one_job_and_share_its_id(
    broker: Broker, dsn: str
) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ENQUEUER,
            dsn,
            "10",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(5)
    ]
    answers = [await p.communicate() for p in processes]
    assert all(p.returncode == 0 for p in processes), [err.decode() for _, err in answers]
    results = [json.loads(out) for out, _ in answers]
    ids = {i for r in results for i in r["ids"]}
    many = {tuple(r["many"]) for r in results}
    rows = await broker.pool.fetch("SELECT id, unique_key FROM koyojobs_jobs ORDER BY id")
    assert len(rows) == 2
    keys = {r["unique_key"].hex: r["id"] for r in rows}
    key42, key43 = (keys[_key_of(flow_jobs.unique_by_user(user))] for user in (42, 43))
    assert ids == {key42}
    assert many == {(key43, key42, key43)}


async def test_limits_hold_across_two_worker_processes_by_the_jobs_own_log(
    broker: Broker, worker_processes: object, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    calls = [flow_jobs.limited(str(log), 0.15) for _ in range(15)]
    calls += [flow_jobs.per_tenant(str(log), f"t{n % 2}", 0.15) for n in range(16)]
    ids = await broker.enqueue_many(calls)
    assert ids is not None
    workers = await _two_workers_run(broker, dsn, ids, concurrency=6)
    events = read_log(log)
    assert {pid for _, _, _, pid, _ in events} == {w.pid for w in workers}
    most = most_at_once(events)
    # Reached, never passed: 3 for flow.limited ("-"), 2 per tenant.
    assert (most["-"], most["t0"], most["t1"]) == (3, 2, 2), most


async def test_a_killed_workers_slot_frees_when_its_lease_lapses_never_sooner(
    broker: Broker, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    lost = await broker.enqueue_many(
        [flow_jobs.per_tenant(str(log), "solo", 600) for _ in range(2)]
    )
    assert lost is not None
    worker = await WorkerProcess(
        dsn, module="tests.flow_jobs", queue=flow_jobs.QUEUE, lease=2.0
    ).start()
    await until(lambda: len(read_log(log)) == 2, what="both runs' start lines")
    assert await worker.kill() == -signal.SIGKILL
    # The key's two slots are held by runs nobody works on, until a lease lapses.
    lapses = await broker.pool.fetchval(
        "SELECT min(lease_expires_at) FROM koyojobs_jobs WHERE id = ANY($1)", lost
    )
    waiting = await broker.enqueue(flow_jobs.per_tenant(str(log), "solo", 0.01))
    other = await WorkerProcess(
        dsn, module="tests.flow_jobs", queue=flow_jobs.QUEUE, lease=2.0
    ).start()
    try:
        await wait_for_status(broker, waiting, Status.DONE, timeout=30)
    finally:
        other.signal(signal.SIGTERM)
        await other.wait(15)
    starts = {job_id: t for e, job_id, _, _, t in read_log(log) if e == "start"}
    assert starts[waiting] >= lapses.timestamp()


async def test_a_pause_stops_a_worker_in_another_process_and_its_running_job_finishes(
    broker: Broker, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    worker = await WorkerProcess(dsn, module="tests.flow_jobs", queue=flow_jobs.QUEUE).start()
    try:
        running = await flow_jobs.limited(str(log), 1.0)
        await wait_for_status(broker, running, Status.RUNNING)
        await broker.pause(flow_jobs.QUEUE)
        paused_at = time.monotonic()
        later = await flow_jobs.free(1)
        await wait_for_status(broker, running, Status.DONE, timeout=10)
        # Its claim rounds after the pause (woken by the insert and by the
        # finished run) took nothing.
        job = await broker.get_job(later)
        assert job is not None and job.status is Status.READY, time.monotonic() - paused_at
        await broker.resume(flow_jobs.QUEUE)
        await wait_for_status(broker, later, Status.DONE, timeout=5)
    finally:
        worker.signal(signal.SIGTERM)
        assert await worker.wait(15) == 0


async def test_a_rate_limit_holds_across_two_worker_processes_by_the_jobs_own_log(
    broker: Broker, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    ids = await broker.enqueue_many([flow_jobs.rated_logged(str(log), n) for n in range(12)])
    assert ids is not None
    await _two_workers_run(broker, dsn, ids)
    starts = [t for event, _, _, _, t in read_log(log) if event == "start"]
    assert len(starts) == 12
    # 3 a second: any 4 starts in a row span a second, less what a job's start
    # line may lag its claim (0.5 s, ample). Without the limit, or with one
    # per process, 4 starts fall within a few milliseconds.
    spans = [starts[i + 3] - starts[i] for i in range(len(starts) - 3)]
    assert min(spans) >= 0.5, spans


async def _two_workers_run(
    broker: Broker, dsn: str, ids: list[int], **options: object
) -> list[WorkerProcess]:
    """Two ``koyojobs worker`` processes of the flow queue run the jobs ``ids``, then stop.

    The queue is paused until both are working: otherwise the first to start
    could run every job before the second has imported its modules.
    """
    await broker.pause(flow_jobs.QUEUE)
    workers = [
        await WorkerProcess(dsn, module="tests.flow_jobs", queue=flow_jobs.QUEUE, **options).start()
        for _ in range(2)
    ]
    await broker.resume(flow_jobs.QUEUE)
    try:
        for job_id in ids:
            await wait_for_status(broker, job_id, Status.DONE, timeout=60)
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
            await worker.wait(15)
    return workers


def _key_of(call: Any) -> str:
    call.consume()  # not enqueued: only its key is read
    key: str = call.unique_key
    return key
