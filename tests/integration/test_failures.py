"""Failures: retries, backoff, retry(), timeouts, unknown names, bad payloads."""

from __future__ import annotations

import pickle

import pendulum

from koyojobs import Broker, Status
from tests import jobs
from tests.conftest import insert_raw_job, wait_for_status
from tests.integration.conftest import StartWorker


async def test_a_failing_job_is_retried_then_done(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await wait_for_status(broker, await jobs.fails_twice(), Status.DONE)
    assert (job.attempts, job.result) == (3, "third time")
    assert job.last_error == "ValueError: attempt 2 fails"


async def test_attempts_spent_is_failed_with_error_and_traceback(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await wait_for_status(broker, await jobs.always_fails(), Status.FAILED)
    assert job.attempts == 2
    assert job.last_error == "ValueError: always"
    assert job.last_traceback is not None
    assert "Traceback" in job.last_traceback
    assert "in always_fails" in job.last_traceback
    assert job.finished_at is not None


async def test_retry_with_a_delay_reschedules_and_counts_an_attempt(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await jobs.retries_once(0.5)
    first = await broker.get_job(job_id)
    assert first is not None
    job = await wait_for_status(broker, job_id, Status.DONE)
    assert job.result == 2
    assert job.attempts == 2
    assert job.last_error == "retry() requested"
    assert job.scheduled_at >= first.scheduled_at.add(seconds=0.5)
    assert ("swallowed", job_id) not in jobs.runs  # except Exception did not catch it


async def test_a_job_past_its_timeout_is_cancelled_as_a_failed_attempt(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await wait_for_status(broker, await jobs.too_slow(), Status.FAILED)
    assert job.last_error is not None
    assert "ran past its timeout of 0.2s" in job.last_error


async def _insert_raw(broker: Broker, name: str, args: bytes, max_attempts: int = 2) -> int:
    return await insert_raw_job(broker, name, args, max_attempts)


async def test_an_unknown_job_name_is_retried_then_failed_naming_it(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await _insert_raw(
        broker,
        "gone.in_this_deploy",
        broker.serializer.sign_arguments(pickle.dumps(((), {})), "gone.in_this_deploy"),
    )
    await broker.pool.execute("UPDATE koyojobs_jobs SET max_attempts = 2 WHERE id = $1", job_id)
    job = await wait_for_status(broker, job_id, Status.FAILED, timeout=15)
    assert job.attempts == 2
    assert job.last_error is not None
    assert "unknown job 'gone.in_this_deploy'" in job.last_error


async def test_an_unreadable_payload_fails_at_once_and_the_worker_goes_on(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    bad = await _insert_raw(broker, "tests.jobs.echo", b"\x80\x05garbage", max_attempts=5)
    job = await wait_for_status(broker, bad, Status.FAILED)
    assert job.attempts == 1
    assert job.last_error is not None
    assert job.last_error.startswith("cannot deserialize payload")
    stored = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs WHERE id = $1", bad)
    assert stored == b"\x80\x05garbage"  # kept for inspection
    good = await wait_for_status(broker, await jobs.echo("next"), Status.DONE)
    assert good.result == "next"


async def test_an_unserializable_result_fails_the_attempt_clearly(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await wait_for_status(broker, await jobs.returns_generator(), Status.FAILED, timeout=30)
    assert job.last_error is not None
    assert "result of job 'tests.jobs.returns_generator' cannot be serialized" in job.last_error


async def test_cancel_a_ready_job_and_it_never_runs(broker: Broker) -> None:
    job_id = await jobs.echo("nope")
    assert job_id is not None
    assert await broker.cancel(job_id)
    job = await broker.get_job(job_id)
    assert job is not None
    assert job.status is Status.CANCELLED
    assert job.finished_at is not None
    assert not await broker.cancel(job_id)  # already finished
    assert not await broker.cancel(job_id + 999)


async def test_cancel_a_running_async_job_stops_it_within_a_heartbeat(
    broker: Broker, start_worker: StartWorker
) -> None:
    worker = await start_worker(lease=0.6)
    job_id = await jobs.wait_for_gate("forever")
    await wait_for_status(broker, job_id, Status.RUNNING)
    assert await broker.cancel(job_id)
    deadline = pendulum.now().add(seconds=5)
    while worker.running and pendulum.now() < deadline:
        await _pause()
    assert worker.running == 0
    job = await broker.get_job(job_id)
    assert job is not None
    assert job.status is Status.CANCELLED


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.01)


async def test_a_backoff_past_what_the_database_holds_stalls_nothing(
    broker: Broker, start_worker: StartWorker
) -> None:
    # An infinite delay does not fit in an interval: before it was bounded,
    # the batch holding it failed every round and the worker claimed nothing.
    await start_worker()
    endless = await jobs.fails_with_endless_backoff()
    job = await wait_for_status(broker, endless, Status.READY)
    while job.attempts == 0:
        job = await wait_for_status(broker, endless, Status.READY)
    assert job.last_error == "ValueError: again, some day"
    assert job.scheduled_at > pendulum.now().add(days=300)
    after = await jobs.echo("still working")
    assert (await wait_for_status(broker, after, Status.DONE)).result == "still working"


async def test_an_outcome_the_database_refuses_holds_back_no_other(
    broker: Broker, start_worker: StartWorker
) -> None:
    # A trigger refuses to mark one job done, as a constraint or a value out
    # of range would: before, the whole batch failed every round, the worker
    # claimed nothing more, and the refused job stayed running for good.
    ids = await broker.enqueue_many([jobs.echo(i) for i in range(20)])
    assert ids is not None
    refused = ids[7]
    await broker.pool.execute("CREATE TABLE refused (id bigint)")
    await broker.pool.execute("INSERT INTO refused VALUES ($1)", refused)
    await broker.pool.execute(
        "CREATE FUNCTION refuse_done() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'done' AND NEW.id IN (SELECT id FROM refused) THEN "
        "RAISE EXCEPTION 'job % may not be done', NEW.id; END IF; RETURN NEW; END $$"
    )
    await broker.pool.execute(
        "CREATE TRIGGER refuse_done BEFORE UPDATE ON koyojobs_jobs "
        "FOR EACH ROW EXECUTE FUNCTION refuse_done()"
    )
    await start_worker(pool_size=8)
    for job_id in ids:
        if job_id != refused:
            assert (await wait_for_status(broker, job_id, Status.DONE)).result is not None
    job = await wait_for_status(broker, refused, Status.FAILED)
    assert job.last_error is not None
    assert job.last_error.startswith("the outcome could not be stored: RaiseError:"), job
    assert f"job {refused} may not be done" in job.last_error
    later = await jobs.echo("after")
    assert (await wait_for_status(broker, later, Status.DONE)).result == "after"
