"""Workflow steps as jobs: koyojobs.sync.upstream() in plain def steps, hooks, timeouts,
periodic jobs, pending steps in the counts, unique steps; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal

import pytest

from koyojobs import (
    Broker,
    CallNext,
    RunningJob,
    Status,
    Workflow,
    chain,
    execute_jobs_synchronously,
    sync,
)
from koyojobs.testing import assert_enqueued, assert_not_enqueued, drain, enqueued_jobs
from tests import workflow_jobs as wj
from tests.conftest import wait_for_status
from tests.faults.conftest import WorkerProcess, until
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


async def test_hooks_fire_for_steps_with_their_workflow_id(
    broker: Broker, start_worker: StartWorker
) -> None:
    wj.hook_log.clear()
    wf = Workflow("hooked")
    ok = wf.add(wj.hooked("ok", False), name="ok")
    broken = wf.add(wj.hooked("broken", True), after=ok, name="broken")
    wf.add(wj.step("never"), after=broken, name="never")
    run = await wf.enqueue()
    plain = await wj.hooked("plain", False)  # not a step: no workflow id
    await start_worker()
    await wait_for_status(broker, run.job_ids["never"], Status.CANCELLED, timeout=10)
    await wait_for_status(broker, plain, Status.DONE)
    # on_success once, on_failure once after the last of 2 attempts (a def hook, on a
    # worker thread): each sees the step's workflow, as outcome.job and as current_job().
    assert sorted(wj.hook_log) == [
        ("failure", "broken", run.id, run.id, 2),
        ("success", "ok", run.id, run.id, 1),
        ("success", "plain", None, None, 1),
    ]

    wj.hook_log.clear()  # the synchronous mode: the inline workflow's (negative) id
    with execute_jobs_synchronously(), pytest.raises(ValueError, match="broken broke"):
        await chain(wj.hooked("ok", False), wj.hooked("broken", True)).enqueue()
    [(_, _, first, _, _), *_] = wj.hook_log
    assert first is not None and first < 0
    assert sorted(wj.hook_log) == [
        ("failure", "broken", first, first, 1),  # an exception is not retried in this mode
        ("success", "ok", first, first, 1),
    ]


async def test_middleware_sees_a_steps_workflow_id(broker: Broker) -> None:
    seen: list[tuple[str, int | None]] = []

    async def middleware(job: RunningJob, call_next: CallNext) -> object:
        seen.append((job.name, job.workflow_id))
        return await call_next()

    async with Broker(broker.database, middleware=[middleware]) as wrapped:
        run = await wrapped.enqueue(Workflow().then(wj.step("mw")))
        await wrapped.enqueue(wj.step("plain"))
        assert await drain(wrapped) == {"done": 2}
    assert seen == [("wf.step", run.id), ("wf.step", None)]


async def test_a_step_that_times_out_is_retried_then_fails_and_cancels_its_dependents(
    broker: Broker, start_worker: StartWorker
) -> None:
    wf = Workflow("slow")
    slow = wf.add(wj.too_slow("slow"), name="slow")
    after = wf.add(wj.step("after"), after=slow, name="after")
    wf.add(wj.step("later"), after=after, name="later")
    slow_def = wf.add(wj.too_slow_def("slow-def"), name="slow-def")
    wf.add(wj.step("after-def"), after=slow_def, name="after-def")
    wf.add(wj.collect("cleanup"), after=[slow, slow_def], name="cleanup", always=True)
    run = await wf.enqueue()
    await start_worker(pool_size=4)
    await wait_for_status(broker, run.job_ids["cleanup"], Status.DONE, timeout=20)
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.FAILED
    steps = found.steps
    assert (steps["slow"].status, steps["slow"].attempts) == (Status.FAILED, 2)
    assert (
        steps["slow"].last_error == "TimeoutError: job 'wf.too_slow' ran past its timeout of 0.2s"
    )
    assert steps["slow-def"].last_error == (
        "TimeoutError: job 'wf.too_slow_def' ran past its timeout of 0.2s"
    )
    for name, upstream in (("after", "slow"), ("later", "slow"), ("after-def", "slow-def")):
        assert steps[name].status is Status.CANCELLED, name
        assert steps[name].last_error == f"upstream step {upstream!r} failed", name
    assert sorted(wj.runs) == ["cleanup", "slow#1", "slow#2", "slow-def"]
    assert {k: v[0] for k, v in wj.seen_upstream["cleanup"].items()} == {
        "slow": "failed",
        "slow-def": "failed",
    }


async def test_a_periodic_job_runs_as_a_step_and_its_schedule_goes_on(
    broker: Broker, start_worker: StartWorker
) -> None:
    wf = Workflow("with a periodic step")
    first = wf.add(wj.step("first"), name="first")
    periodic = wf.add(wj.periodic_step(), after=first, name="periodic")
    wf.add(wj.collect("last"), after=periodic, name="last")
    run = await wf.enqueue()
    await start_worker()
    await start_worker(queue="wf-periodic-step")
    await wait_for_status(broker, run.job_ids["last"], Status.DONE, timeout=15)
    assert wj.seen_upstream["last"] == {"periodic": ("done", "ticked", None)}
    # The ticks go on beside the step: at least one ran as a plain job.
    await until(lambda: "periodic_step:False" in wj.runs, timeout=10, what="a tick ran")
    assert wj.runs.count("periodic_step:True") == 1


async def test_a_periodic_job_enqueues_a_workflow_each_tick(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    await start_worker(queue="wf-periodic")

    async def two_ticks_done() -> list[int]:
        rows = await broker.pool.fetch(
            "SELECT id FROM koyojobs_jobs WHERE name = 'wf.periodic_workflow' "
            "AND status = 'done' ORDER BY id"
        )
        return [row["id"] for row in rows] if len(rows) >= 2 else []

    ticks = await until(two_ticks_done, timeout=15, what="two ticks done")
    for tick in ticks[:2]:
        job = await broker.get_job(tick)
        assert job is not None and job.workflow_id is None
        found = await broker.get_workflow(job.result)
        assert found is not None and found.name == "per tick"
        last = found.steps["wf.collect"]
        done = await wait_for_status(broker, last.id, Status.DONE, timeout=10)
        assert done.result == {"wf.step": ("done", "tick-first", None)}
