"""The synchronous mode: jobs run inline, no database."""

from __future__ import annotations

import threading
from typing import Any

import pendulum
import pytest

from koyojobs import (
    Broker,
    SerializationError,
    current_job,
    define_job,
    execute_jobs_synchronously,
    retry,
    schedule_at,
)

seen: list[Any] = []  # what the jobs saw: tuples, ids, attempt numbers


@define_job(name="sync.record")
async def record(value: object) -> str:
    job = current_job()
    assert job is not None
    seen.append((value, job.name, job.attempt))
    return "ok"


@define_job(name="sync.plain")
def plain(value: int) -> int:
    seen.append(("plain", value, threading.current_thread() is threading.main_thread()))
    return value


@define_job(name="sync.flaky", max_attempts=3)
async def flaky() -> None:
    job = current_job()
    assert job is not None
    seen.append(job.attempt)
    if job.attempt < 3:
        retry()


@define_job(name="sync.always_retries", max_attempts=2)
async def always_retries() -> None:
    retry(0)


@define_job(name="sync.boom")
async def boom() -> None:
    raise ValueError("boom")


@define_job(name="sync.returns_generator")
async def returns_generator() -> object:
    return (i for i in range(3))


@define_job(name="sync.which_id")
async def which_id() -> None:
    job = current_job()
    assert job is not None
    seen.append(job.id)


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


async def test_runs_now_in_this_task_and_returns_an_id_no_stored_job_has() -> None:
    with execute_jobs_synchronously():
        assert execute_jobs_synchronously.enabled()
        first = await record({"k": 1})
        second = await plain(3)
    # Negative (identity columns start at 1), and one per run.
    assert first < 0 and second < first
    assert not execute_jobs_synchronously.enabled()
    assert seen == [({"k": 1}, "sync.record", 1), ("plain", 3, True)]


async def test_the_id_returned_is_the_runs_own() -> None:
    with execute_jobs_synchronously():
        job_id = await which_id()
    assert seen == [job_id]


async def test_arguments_round_trip_through_the_serializer() -> None:
    value = {"when": pendulum.now()}
    with execute_jobs_synchronously():
        await record(value)
    assert seen[0][0] == value
    assert seen[0][0] is not value


async def test_the_exception_reaches_the_caller() -> None:
    with execute_jobs_synchronously(), pytest.raises(ValueError, match="boom"):
        await boom()


async def test_retry_runs_again_at_once_up_to_max_attempts() -> None:
    with execute_jobs_synchronously():
        await flaky()
        assert seen == [1, 2, 3]
        with pytest.raises(RuntimeError, match=r"retry\(\) on its last attempt \(2 of 2\)"):
            await always_retries()


async def test_schedule_at_runs_now() -> None:
    with execute_jobs_synchronously():
        await schedule_at(pendulum.now().add(days=1), record("later"))
    assert seen == [("later", "sync.record", 1)]


async def test_broker_enqueue_runs_inline_without_a_database() -> None:
    broker = Broker("postgresql://nowhere.invalid/none")
    with execute_jobs_synchronously():
        one = await broker.enqueue(record(1))
        many = await broker.enqueue_many([record(2), plain(3)])
    assert one < 0 and len(many) == 2 and all(i < one for i in many)
    assert [s[0] for s in seen] == [1, 2, "plain"]


async def test_an_unserializable_result_is_caught() -> None:
    with execute_jobs_synchronously(), pytest.raises(SerializationError, match="result of job"):
        await returns_generator()


def test_enable_and_disable_for_a_repl() -> None:
    execute_jobs_synchronously.enable()
    try:
        assert execute_jobs_synchronously.enabled()
    finally:
        execute_jobs_synchronously.disable()
    assert not execute_jobs_synchronously.enabled()


def test_retry_and_current_job_outside_a_job() -> None:
    assert current_job() is None
    with pytest.raises(RuntimeError, match="outside a running job"):
        retry()


async def test_retry_is_not_swallowed_by_except_exception() -> None:
    @define_job(name="sync.swallower", max_attempts=2)
    async def swallower() -> None:
        job = current_job()
        assert job is not None
        seen.append(job.attempt)
        try:
            retry(0) if job.attempt == 1 else None
        except Exception:
            seen.append("swallowed")

    with execute_jobs_synchronously():
        await swallower()
    assert seen == [1, 2]
