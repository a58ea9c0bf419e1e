"""What operators do to workflow steps, on a real PostgreSQL: a retry revives what a
failure cancelled, bulk cancels and deletes end a step for its dependents, and two
cascades at once never deadlock."""

from __future__ import annotations

import asyncio

import pytest

from koyojobs import Broker, Status, Workflow, define_job
from koyojobs.outcomes import Decision, as_columns, succeeded
from koyojobs.sql import QUERIES
from koyojobs.testing import drain
from tests.workflow_jobs import step_statuses

runs: list[str] = []
broken: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()
    broken.clear()


@define_job(name="wfops.switch", max_attempts=1)
async def switch(label: str) -> str:
    """Fails while its label is in ``broken``."""
    runs.append(label)
    if label in broken:
        raise ValueError(f"{label} broke")
    return label


@define_job(name="wfops.held", queue="wfops-held")
async def held(label: str) -> str:
    """A step in a queue these tests drain only when they say so."""
    runs.append(label)
    return label


async def test_retrying_a_failed_step_revives_the_steps_its_failure_cancelled(
    broker: Broker,
) -> None:
    wf = Workflow("revive")
    fetch = wf.add(switch("fetch"), name="fetch")
    bad = wf.add(switch("bad"), after=fetch, name="bad")
    other = wf.add(switch("other"), after=fetch, name="other")
    notify = wf.add(switch("notify"), after=[bad, other], name="notify")
    archive = wf.add(switch("archive"), after=notify, name="archive")
    wf.add(switch("cleanup"), after=[bad, archive], name="cleanup", always=True)
    run = await wf.enqueue()
    broken.add("bad")
    await drain(broker)
    assert await step_statuses(broker, run.id) == {
        "fetch": Status.DONE,
        "bad": Status.FAILED,
        "other": Status.DONE,
        "notify": Status.CANCELLED,
        "archive": Status.CANCELLED,
        "cleanup": Status.DONE,
    }

    broken.clear()
    runs.clear()
    assert await broker.retry_job(run.job_ids["bad"])
    after_retry = await broker.get_workflow(run.id)
    assert after_retry is not None
    assert {n: j.status for n, j in after_retry.steps.items()} == {
        "fetch": Status.DONE,
        "bad": Status.READY,
        "other": Status.DONE,
        "notify": Status.PENDING,
        "archive": Status.PENDING,
        "cleanup": Status.DONE,  # it ran already: left as it is
    }
    assert after_retry.steps["notify"].last_error is None
    await drain(broker)
    assert runs == ["bad", "notify", "archive"]
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.DONE


async def test_a_step_of_a_second_failed_branch_stays_cancelled_until_that_one_is_retried(
    broker: Broker,
) -> None:
    wf = Workflow("two failures")
    left = wf.add(switch("left"), name="left")
    right = wf.add(switch("right"), name="right")
    wf.add(switch("join"), after=[left, right], name="join")
    run = await wf.enqueue()
    broken.update({"left", "right"})
    await drain(broker)
    assert (await step_statuses(broker, run.id))["join"] is Status.CANCELLED

    broken.clear()
    assert await broker.retry_job(run.job_ids["left"])
    # Reviving it now would strand it: "right" failed and would never release it.
    assert (await step_statuses(broker, run.id))["join"] is Status.CANCELLED
    await drain(broker)
    assert (await step_statuses(broker, run.id))["join"] is Status.CANCELLED

    assert await broker.retry_many(ids=[run.job_ids["right"]]) == 1
    assert (await step_statuses(broker, run.id))["join"] is Status.PENDING
    await drain(broker)
    assert await step_statuses(broker, run.id) == {
        "left": Status.DONE,
        "right": Status.DONE,
        "join": Status.DONE,
    }


async def test_a_retried_step_counts_again_for_an_always_step_still_waiting(
    broker: Broker,
) -> None:
    wf = Workflow("always waits")
    first = wf.add(switch("first"), name="first")
    slow = wf.add(held("slow"), name="slow")
    wf.add(switch("cleanup"), after=[first, slow], name="cleanup", always=True)
    run = await wf.enqueue()
    broken.add("first")
    await drain(broker)  # "first" fails; "cleanup" still waits for "slow"
    assert (await step_statuses(broker, run.id))["cleanup"] is Status.PENDING

    broken.clear()
    assert await broker.retry_job(run.job_ids["first"])
    await drain(broker)  # "first" ends again: "cleanup" must still wait for "slow"
    assert (await step_statuses(broker, run.id))["cleanup"] is Status.PENDING
    assert "cleanup" not in runs

    await drain(broker, "wfops-held")
    await drain(broker)
    assert runs[-2:] == ["slow", "cleanup"]


async def test_a_bulk_cancel_cancels_the_dependents_of_the_steps_it_cancels(
    broker: Broker,
) -> None:
    wf = Workflow()
    first = wf.add(switch("first"), name="first")
    waiting = wf.add(held("waiting"), after=first, name="waiting")
    wf.add(held("cleanup"), after=waiting, name="cleanup", always=True)
    run = await wf.enqueue()
    assert await broker.cancel_many(queue="default") == 1
    assert await step_statuses(broker, run.id) == {
        "first": Status.CANCELLED,
        "waiting": Status.CANCELLED,
        "cleanup": Status.READY,
    }
    waiting_job = await broker.get_job(run.job_ids["waiting"])
    assert waiting_job is not None
    assert waiting_job.last_error == "upstream step 'first' cancelled"


async def test_a_bulk_cancel_takes_pending_steps_and_their_dependents(broker: Broker) -> None:
    wf = Workflow()
    first = wf.add(held("first"), name="first")
    second = wf.add(switch("second"), after=first, name="second")
    wf.add(held("third"), after=second, name="third")
    run = await wf.enqueue()
    assert await broker.cancel_many(queue="default", status="pending") == 1
    assert await step_statuses(broker, run.id) == {
        "first": Status.READY,
        "second": Status.CANCELLED,
        "third": Status.CANCELLED,
    }


async def test_deleting_a_step_before_it_ended_cancels_its_dependents(broker: Broker) -> None:
    wf = Workflow()
    first = wf.add(switch("first"), name="first")
    wf.add(held("second"), after=first, name="second")
    run = await wf.enqueue()
    assert await broker.delete_many(queue="default", status="ready") == 1
    second = await broker.get_job(run.job_ids["second"])
    assert second is not None and second.status is Status.CANCELLED
    assert second.last_error == "upstream step 'first' cancelled"


@pytest.mark.parametrize("attempt", range(2))
async def test_two_cascades_over_shared_steps_at_once_do_not_deadlock(
    broker: Broker, attempt: int
) -> None:
    # Each statement ends one step failed and one done; each doomed set is the
    # other's counted set: locking them in two passes, as 0008 did, deadlocked.
    wf = Workflow()
    a_bad = wf.add(switch("a_bad"), name="a_bad")
    a_ok = wf.add(switch("a_ok"), name="a_ok")
    b_bad = wf.add(switch("b_bad"), name="b_bad")
    b_ok = wf.add(switch("b_ok"), name="b_ok")
    for n in range(1500):
        wf.add(held(f"x{n}"), after=[a_bad, b_ok], name=f"x{n}")
        wf.add(held(f"y{n}"), after=[b_bad, a_ok], name=f"y{n}")
    run = await wf.enqueue()
    claim = QUERIES["finish_and_claim"]
    rows = await broker.pool.fetch(claim, "default", 4, 30.0, "w", *as_columns([]))
    attempt_of = {row["id"]: row["attempts"] for row in rows}
    assert len(attempt_of) == 4

    def ended(bad: str, ok: str) -> list[list[object]]:
        failed = Decision(Status.FAILED, error=f"{bad} broke")
        done = succeeded(broker.serializer.dump_result(ok, "x"))
        return as_columns(
            [
                (run.job_ids[bad], attempt_of[run.job_ids[bad]], failed),
                (run.job_ids[ok], attempt_of[run.job_ids[ok]], done),
            ]
        )

    async with broker.pool.acquire() as one, broker.pool.acquire() as two:
        await asyncio.gather(
            one.fetch(claim, "default", 0, 30.0, "w", *ended("a_bad", "a_ok")),
            two.fetch(claim, "default", 0, 30.0, "w", *ended("b_bad", "b_ok")),
        )
    statuses = await step_statuses(broker, run.id)
    assert {statuses[f"x{n}"] for n in range(1500)} == {Status.CANCELLED}
    assert {statuses[f"y{n}"] for n in range(1500)} == {Status.CANCELLED}


def _fan_in(width: int) -> Workflow:
    wf = Workflow("fan-in")
    parts = [wf.add(switch(f"part{n}"), name=f"part{n}") for n in range(width)]
    wf.add(switch("total"), after=parts, name="total")
    return wf


async def _end_parts(broker: Broker, run_ids: dict[str, int], names: list[str]) -> None:
    """Claim and end ``names`` (done, or failed when broken), one statement each."""
    claim = QUERIES["finish_and_claim"]
    for name in names:
        job_id = run_ids[name]
        await broker.pool.execute(
            "UPDATE koyojobs_jobs SET status = 'running', attempts = attempts + 1, "
            "lease_expires_at = now() + interval '1 minute' WHERE id = $1",
            job_id,
        )
        attempt = await broker.pool.fetchval(
            "SELECT attempts FROM koyojobs_jobs WHERE id = $1", job_id
        )
        decision = (
            Decision(Status.FAILED, error=f"{name} broke")
            if name in broken
            else succeeded(broker.serializer.dump_result(name, "x"))
        )
        await broker.pool.fetch(
            claim, "none", 0, 30.0, "w", *as_columns([(job_id, attempt, decision)])
        )


async def test_a_fan_in_counting_in_shards_is_released_by_its_last_upstream_step_only(
    broker: Broker,
) -> None:
    run = await _fan_in(40).enqueue()
    shards = await broker.pool.fetchval(
        "SELECT count(*) FROM koyojobs_step_counts WHERE job_id = $1", run.job_ids["total"]
    )
    assert shards == 16
    names = [f"part{n}" for n in range(40)]
    for n, name in enumerate(names, 1):
        await _end_parts(broker, run.job_ids, [name])
        total = await broker.get_job(run.job_ids["total"])
        assert total is not None
        assert total.status is (Status.READY if n == 40 else Status.PENDING), (n, name)


async def test_a_failed_upstream_of_a_sharded_fan_in_cancels_it_and_its_retry_revives_it(
    broker: Broker,
) -> None:
    run = await _fan_in(40).enqueue()
    broken.add("part7")
    await drain(broker)
    found = await broker.get_workflow(run.id)
    assert found is not None
    assert found.steps["total"].status is Status.CANCELLED
    assert found.steps["total"].last_error == "upstream step 'part7' failed"

    broken.clear()
    runs.clear()
    assert await broker.retry_job(run.job_ids["part7"])
    assert (await step_statuses(broker, run.id))["total"] is Status.PENDING
    await drain(broker)
    assert runs == ["part7", "total"]


async def test_retrying_a_done_upstream_step_of_a_sharded_fan_in_makes_it_wait_again(
    broker: Broker,
) -> None:
    run = await _fan_in(40).enqueue()
    names = [f"part{n}" for n in range(40)]
    await _end_parts(broker, run.job_ids, names[:39])
    # part0 ran already; run again, it must end again before "total" starts.
    assert await broker.retry_job(run.job_ids["part0"])
    await _end_parts(broker, run.job_ids, names[39:])
    assert (await step_statuses(broker, run.id))["total"] is Status.PENDING
    await _end_parts(broker, run.job_ids, ["part0"])
    assert (await step_statuses(broker, run.id))["total"] is Status.READY


async def test_an_always_step_counting_in_shards_runs_once_every_upstream_step_ended(
    broker: Broker,
) -> None:
    wf = Workflow()
    parts = [wf.add(switch(f"part{n}"), name=f"part{n}") for n in range(40)]
    wf.add(switch("cleanup"), after=parts, name="cleanup", always=True)
    run = await wf.enqueue()
    broken.update({"part3", "part20"})
    await _end_parts(broker, run.job_ids, [f"part{n}" for n in range(39)])
    assert (await step_statuses(broker, run.id))["cleanup"] is Status.PENDING
    await _end_parts(broker, run.job_ids, ["part39"])
    assert (await step_statuses(broker, run.id))["cleanup"] is Status.READY
