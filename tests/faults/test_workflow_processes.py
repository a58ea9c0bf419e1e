"""Workflows across 3 worker processes under SIGKILLs and pg_terminate_backend: no step
starts before its upstream steps ended, none is left pending, none is lost."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from koyojobs import Broker, Status, Workflow
from tests.faults import workflow_jobs
from tests.faults.conftest import WorkerProcess, until

StartProcess = Callable[..., Awaitable[WorkerProcess]]

WORKFLOWS = 40


def _graph(log: str, n: int) -> Workflow:
    """fetch -> 4 resizes -> notify -> archive, and a cleanup after all (always).

    Every fourth workflow has 36 resizes: its notify and cleanup count their
    upstream steps in shards (koyojobs.workflows._SHARD_FROM).
    """
    wf = Workflow(f"fault {n}")
    fetch = wf.add(workflow_jobs.logged(log, n, "fetch"), name="fetch")
    sizes = [
        wf.add(workflow_jobs.logged(log, n, f"resize{k}"), after=fetch, name=f"resize{k}")
        for k in range(36 if n % 4 == 0 else 4)
    ]
    notify = wf.add(workflow_jobs.logged(log, n, "notify"), after=sizes, name="notify")
    archive = wf.add(workflow_jobs.logged(log, n, "archive"), after=notify, name="archive")
    wf.add(
        workflow_jobs.logged(log, n, "cleanup"),
        after=[fetch, *sizes, notify, archive],
        name="cleanup",
        always=True,
    )
    return wf


@pytest.mark.timeout(240)
async def test_no_step_starts_early_and_none_is_stranded_under_kills_and_cut_connections(
    broker: Broker, worker_processes: StartProcess, tmp_path: Path
) -> None:
    log = str(tmp_path / "steps.log")
    options = {
        "concurrency": 4,
        "lease": 1.0,
        "poll-interval": 0.2,
        "module": "tests.faults.workflow_jobs",
    }
    workers = [await worker_processes(**options) for _ in range(3)]
    every = list(workers)  # the killed ones too: their logs say what their runs did
    graphs = [_graph(log, n) for n in range(WORKFLOWS)]
    upstream = [{s.name: [u.name for u in s.after] for s in wf.steps} for wf in graphs]
    runs = [await wf.enqueue() for wf in graphs]
    ids = [job_id for run in runs for job_id in run.job_ids.values()]

    # Faults while the workflows run: a SIGKILL (and a fresh process in its
    # place) or every worker connection cut, in turn, for a few seconds.
    rng = random.Random(20)
    faults = {"kills": 0, "terminated": 0}
    ends = time.monotonic() + 8
    while time.monotonic() < ends:
        await asyncio.sleep(rng.uniform(0.2, 0.6))
        if rng.random() < 0.5:
            victim = rng.randrange(len(workers))
            await workers[victim].kill()
            workers[victim] = await worker_processes(**options)
            every.append(workers[victim])
            faults["kills"] += 1
        else:
            faults["terminated"] += await broker.pool.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name LIKE 'koyojobs-worker%'"
            )

    async def drained() -> bool:
        unfinished: int = await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE status IN ('pending', 'ready', 'running')"
        )
        return unfinished == 0

    await until(
        drained,
        timeout=180,
        what="every step ended",
        interval=0.2,
        details=lambda: "\n".join(w.output() for w in workers),
    )
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        await worker.wait(15)

    statuses = await broker.pool.fetch(
        "SELECT status, count(*) FROM koyojobs_jobs WHERE id = ANY($1::bigint[]) GROUP BY status",
        ids,
    )
    unfinished = await broker.pool.fetch(
        "SELECT id, workflow_id, step, status, attempts, last_error FROM koyojobs_jobs "
        "WHERE id = ANY($1::bigint[]) AND status <> 'done' ORDER BY id",
        ids,
    )
    assert {r["status"]: r["count"] for r in statuses} == {Status.DONE.value: len(ids)}, "\n".join(
        [
            f"workflow {r['workflow_id']} step {r['step']} {r['status']} after {r['attempts']} "
            f"attempts: {r['last_error']}"
            for r in unfinished
        ]
        + [
            line.rstrip()
            for w in every
            for line in w.lines
            if any(
                f"job_id={r['id']} " in line or f"job_id={r['id']}\n" in line for r in unfinished
            )
        ][:60]
    )
    for run in runs:
        found = await broker.get_workflow(run.id)
        assert found is not None and found.status is Status.DONE

    starts: dict[tuple[int, str], list[float]] = defaultdict(list)
    ends_at: dict[tuple[int, str], list[float]] = defaultdict(list)
    for line in (await asyncio.to_thread(Path(log).read_text)).splitlines():
        kind, workflow, step, at, _attempt, _pid = line.split()
        (starts if kind == "start" else ends_at)[(int(workflow), step)].append(float(at))
    early = [
        (n, step, up)
        for n in range(WORKFLOWS)
        for step, ups in upstream[n].items()
        for up in ups
        if min(starts[(n, step)]) <= max(ends_at[(n, up)])
    ]
    assert early == [], f"steps started before an upstream step's run ended: {early[:5]}"
    assert all(ends_at[(n, s)] for n in range(WORKFLOWS) for s in upstream[n])
    assert faults["kills"] >= 3 and faults["terminated"] >= 3, faults
