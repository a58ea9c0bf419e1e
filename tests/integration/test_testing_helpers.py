"""koyojobs.testing: what users' tests assert with."""

from __future__ import annotations

import pytest

from koyojobs import Broker, Status, define_job
from koyojobs.testing import assert_enqueued, assert_not_enqueued, drain, enqueued_jobs
from tests import jobs


@define_job(name="helpers.greet", queue="helpers")
async def greet(name: str, punctuation: str = "!") -> str:
    return f"hi {name}{punctuation}"


@define_job(name="helpers.chain", queue="helpers")
async def chain(n: int) -> int:
    if n > 0:
        await chain(n - 1)
    return n


async def test_assert_enqueued_matches_arguments_as_the_function_binds_them(
    broker: Broker,
) -> None:
    await assert_not_enqueued(greet)
    job_id = await greet("ada")
    found = await assert_enqueued(greet, name="ada", punctuation="!")
    assert found.id == job_id and found.args == ("ada",)
    await assert_enqueued(greet, "ada")
    with pytest.raises(AssertionError, match=r"helpers.greet\('bob'\) is not enqueued; .*'ada'"):
        await assert_enqueued(greet, "bob")
    with pytest.raises(AssertionError, match=r"helpers.greet is enqueued 1 time"):
        await assert_not_enqueued(greet)
    await assert_not_enqueued(greet, "bob")
    assert [j.args for j in await enqueued_jobs(greet)] == [("ada",)]


async def test_drain_runs_due_jobs_here_including_the_ones_they_enqueue(broker: Broker) -> None:
    first = await greet("ada")
    await chain(2)
    other_queue = await jobs.echo("untouched")
    counts = await drain(broker, queue="helpers")
    assert counts == {"done": 4}  # greet, chain(2), chain(1), chain(0)
    job = await broker.get_job(first)
    assert job is not None and job.status is Status.DONE and job.result == "hi ada!"
    untouched = await broker.get_job(other_queue)
    assert untouched is not None and untouched.status is Status.READY
    await assert_not_enqueued(chain)


async def test_drain_counts_failures_and_retries(broker: Broker) -> None:
    await jobs.always_fails()  # max_attempts=2, backoff 0: fails, retried at once, fails
    assert await drain(broker) == {"ready": 1, "failed": 1}
