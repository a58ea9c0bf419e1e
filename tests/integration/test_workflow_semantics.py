"""Workflow steps as jobs: koyojobs.sync.upstream() in plain def steps, hooks, timeouts,
periodic jobs, pending steps in the counts, unique steps; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal

import pytest

from koyojobs import Broker, Status, Workflow, execute_jobs_synchronously, sync
from koyojobs.testing import assert_enqueued, assert_not_enqueued, drain, enqueued_jobs
from tests import workflow_jobs as wj
from tests.conftest import wait_for_status
from tests.faults.conftest import WorkerProcess
from tests.integration.conftest import StartWorker


@pytest.fixture(autouse=True)
def _reset() -> None:
    wj.runs.clear()
    wj.seen_upstream.clear()


def _fan_in(collect: str) -> Workflow:
    """Two steps, then a plain def step reading both, then an always one after a failure."""
    wf = Workflow("plain fan-in")
    first = wf.add(wj.step("a"), name="a")
    second = wf.add(wj.step("b"), name="b")
    reader = wf.add(wj.plain_collect(collect), after=[first, second], name="reader")
    broken = wf.add(wj.fail("broken"), after=reader, name="broken")
    wf.add(wj.plain_collect("cleanup"), after=[reader, broken], name="cleanup", always=True)
    return wf


_READER_SAW = {"a": ("done", "a", None), "b": ("done", "b", None)}
_CLEANUP_SAW = {
    "reader": ("done", _READER_SAW, None),
    "broken": ("failed", None, "ValueError: broken broke"),
}


async def test_a_plain_def_step_reads_its_upstream_steps_in_a_worker(
    broker: Broker, start_worker: StartWorker
) -> None:
    run = await _fan_in("reader").enqueue()
    await start_worker(pool_size=4)
    cleanup = await wait_for_status(broker, run.job_ids["cleanup"], Status.DONE, timeout=20)
    assert wj.seen_upstream == {"reader": _READER_SAW, "cleanup": _CLEANUP_SAW}
    assert cleanup.result == _CLEANUP_SAW
    # Outside a workflow, a plain def job gets {} as an async one does.
    plain = await wj.plain_collect("alone")
    assert (await wait_for_status(broker, plain, Status.DONE)).result == {}


async def test_a_plain_def_step_reads_its_upstream_steps_in_a_worker_process(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's own pool and secret serve it: no KOYOJOBS_DSN, no psycopg connection.
    monkeypatch.delenv("KOYOJOBS_DSN", raising=False)
    monkeypatch.delenv("KOYOJOBS_SECRET", raising=False)
    async with Broker(dsn, secret="s3cret") as broker:
        run = await broker.enqueue(_fan_in("reader"))
        process = WorkerProcess(dsn, module="tests.workflow_jobs", secret="s3cret")
        await process.start()
        try:
            cleanup = await wait_for_status(broker, run.job_ids["cleanup"], Status.DONE, timeout=20)
            reader = await broker.get_job(run.job_ids["reader"])
        finally:
            process.signal(signal.SIGTERM)
            assert await process.wait(10) == 0, process.output()
    assert reader is not None and reader.result == _READER_SAW
    assert cleanup.result == _CLEANUP_SAW


async def test_a_plain_def_step_reads_its_upstream_steps_under_drain(broker: Broker) -> None:
    run = await _fan_in("reader").enqueue()
    assert await drain(broker) == {"done": 4, "failed": 1}
    assert wj.seen_upstream == {"reader": _READER_SAW, "cleanup": _CLEANUP_SAW}
    assert (await broker.get_job(run.job_ids["cleanup"])) is not None


async def test_a_plain_def_step_reads_its_upstream_steps_in_the_synchronous_mode() -> None:
    with execute_jobs_synchronously(), pytest.raises(ValueError, match="broken broke"):
        await _fan_in("reader").enqueue()
    assert wj.seen_upstream == {"reader": _READER_SAW, "cleanup": _CLEANUP_SAW}
    wj.seen_upstream.clear()

    def enqueue() -> None:  # koyojobs.sync.enqueue, where no event loop runs
        with execute_jobs_synchronously(), pytest.raises(ValueError, match="broken broke"):
            sync.enqueue(_fan_in("reader"))

    await asyncio.to_thread(enqueue)
    assert wj.seen_upstream == {"reader": _READER_SAW, "cleanup": _CLEANUP_SAW}


async def test_sync_upstream_in_an_async_def_step_says_to_await_upstream(
    broker: Broker, start_worker: StartWorker
) -> None:
    run = await Workflow().then(wj.step("a")).then(wj.sync_upstream_in_async()).enqueue()
    await start_worker()
    job = await wait_for_status(
        broker, run.job_ids["wf.sync_upstream_in_async"], Status.FAILED, timeout=10
    )
    assert job.last_error == (
        "RuntimeError: koyojobs.sync.upstream() was called inside a running event loop: "
        "await koyojobs.upstream() instead"
    )


async def test_assert_enqueued_finds_a_pending_step(broker: Broker) -> None:
    wf = Workflow()
    first = wf.add(wj.step("first"), name="first")
    wf.add(wj.step("second"), after=first, name="second")
    run = await wf.enqueue()
    found = await assert_enqueued(wj.step, "second")
    assert (found.id, found.status) == (run.job_ids["second"], Status.PENDING)
    assert [(j.args, j.status) for j in await enqueued_jobs(wj.step)] == [
        (("first",), Status.READY),
        (("second",), Status.PENDING),
    ]
    with pytest.raises(AssertionError, match=r"wf\.step is enqueued 1 time\(s\): \('second'\)"):
        await assert_not_enqueued(wj.step, "second")
    with pytest.raises(AssertionError, match=r"ready or pending wf\.step jobs: "):
        await assert_enqueued(wj.step, "third")
    assert await drain(broker) == {"done": 2}
    await assert_not_enqueued(wj.step)
