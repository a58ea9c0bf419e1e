"""Workers: NOTIFY wake-ups, results, threads, concurrency, scheduling, stop."""

from __future__ import annotations

import asyncio
import time

import pendulum
import pytest

from koyojobs import Broker, Status, Worker, schedule_at
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_an_idle_worker_is_woken_by_notify_not_by_polling(
    broker: Broker, start_worker: StartWorker
) -> None:
    worker = await start_worker(poll_interval=30)
    await _until(lambda: broker.listener is not None)
    # A job enqueued before the worker's first round would be claimed by that
    # round, notification or not: let a first one pass, then time a second.
    await wait_for_status(broker, await jobs.echo("first"), Status.DONE, timeout=5)
    started = time.monotonic()
    job = await wait_for_status(broker, await jobs.echo("hi"), Status.DONE, timeout=5)
    # Well under the 30 s poll: only a notification can explain it.
    assert time.monotonic() - started < 5
    assert job.result == "hi"
    assert job.attempts == 1
    assert job.started_at is not None
    assert job.finished_at is not None
    assert worker.running == 0


async def test_a_plain_def_runs_on_the_workers_thread_pool(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(pool_size=3)
    ids = await broker.enqueue_many([jobs.plain_echo(i) for i in range(12)])
    assert ids is not None
    results = [(await wait_for_status(broker, i, Status.DONE)).result for i in ids]
    assert [r["value"] for r in results] == list(range(12))
    assert not any(r["in_main_thread"] for r in results)
    assert len({r["thread"] for r in results}) <= 3


async def test_at_most_pool_size_jobs_run_at_once(
    broker: Broker, start_worker: StartWorker
) -> None:
    ids = await broker.enqueue_many([jobs.track_concurrency("g") for _ in range(10)])
    assert ids is not None
    worker = await start_worker(pool_size=4)
    await _until(lambda: jobs.concurrency["now"] == 4)
    assert worker.running == 4
    jobs.gates["g"].set()
    for job_id in ids:
        await wait_for_status(broker, job_id, Status.DONE)
    assert jobs.concurrency["max"] == 4


async def test_current_job_describes_the_running_job(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await jobs.who_am_i()
    job = await wait_for_status(broker, job_id, Status.DONE)
    info = job.result
    assert (info["id"], info["name"], info["queue"]) == (job_id, "tests.jobs.who_am_i", "default")
    assert (info["attempt"], info["max_attempts"]) == (1, 3)
    assert info["scheduled_at"] == job.scheduled_at


async def test_a_job_call_inside_a_job_uses_the_workers_broker(
    broker: Broker, start_worker: StartWorker
) -> None:
    from koyojobs import set_current_broker

    await start_worker()
    job_id = await jobs.spawn_child(5)
    set_current_broker(None)  # the child must not need the process default
    parent = await wait_for_status(broker, job_id, Status.DONE)
    child = await wait_for_status(broker, parent.result, Status.DONE)
    assert child.result == 5
    assert child.name == "tests.jobs.echo"


async def test_a_scheduled_job_starts_on_time_without_waiting_for_a_poll(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(poll_interval=30)
    await _until(lambda: broker.listener is not None)
    when = pendulum.now("UTC").add(seconds=1)
    job_id = await schedule_at(when, jobs.echo("later"))
    job = await wait_for_status(broker, job_id, Status.DONE, timeout=10)
    assert job.started_at is not None
    assert job.started_at >= job.scheduled_at
    # The worker slept until the job was due: seconds, not the 30 s poll.
    assert (job.started_at - job.scheduled_at).in_seconds() < 5


async def test_graceful_stop_puts_unfinished_jobs_back_without_counting_them(
    broker: Broker,
) -> None:
    worker = Worker(broker, lease=5, poll_interval=0.5, shutdown_grace=0.3)
    await worker.start()
    quick = await jobs.echo("quick")
    stuck = await jobs.wait_for_gate("never")
    await wait_for_status(broker, quick, Status.DONE)
    await wait_for_status(broker, stuck, Status.RUNNING)
    await worker.stop()
    job = await broker.get_job(stuck)
    assert job is not None
    assert (job.status, job.attempts) == (Status.READY, 0)
    # And another worker takes it.
    jobs.gates["never"].set()
    async with Worker(broker, lease=5, poll_interval=0.5):
        done = await wait_for_status(broker, stuck, Status.DONE)
    assert done.attempts == 1


async def test_graceful_stop_lets_running_jobs_finish_within_the_grace(broker: Broker) -> None:
    worker = Worker(broker, lease=5, poll_interval=0.5, shutdown_grace=10)
    await worker.start()
    job_id = await jobs.wait_for_gate("soon")
    await wait_for_status(broker, job_id, Status.RUNNING)
    stopping = asyncio.create_task(worker.stop())
    await _until(lambda: worker.stopping)
    jobs.gates["soon"].set()
    await stopping
    job = await broker.get_job(job_id)
    assert job is not None
    assert job.status is Status.DONE
    assert job.result == "soon"


async def test_callers_asking_at_once_share_one_listen_connection(broker: Broker) -> None:
    queues = [f"q{i}" for i in range(20)]
    await asyncio.gather(*(broker.subscribe(q, lambda: None) for q in queues))
    listening = await broker.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert listening == 1


async def test_a_worker_whose_start_fails_leaves_nothing_running(dsn: str) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    async with Broker(dsn, listen_dsn=unreachable) as broker:
        worker = Worker(broker, pool_size=2)
        with pytest.raises(ConnectionRefusedError):
            await worker.start()
        assert all(not lane._tasks for lane in worker._lanes)  # no claim loop left behind
        assert worker._executor is None
