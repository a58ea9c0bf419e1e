"""Workflows without a database: the graph's checks at add, and the synchronous mode."""

from __future__ import annotations

import asyncio

import pytest

from koyojobs import (
    Status,
    Workflow,
    WorkflowError,
    chain,
    execute_jobs_synchronously,
    group,
    report_progress,
    sync,
    upstream,
)
from koyojobs.serializer import Serializer
from koyojobs.workflows import insert_parameters, overall_status
from tests import workflow_jobs as wj


@pytest.fixture(autouse=True)
def _reset() -> None:
    wj.runs.clear()
    wj.seen_upstream.clear()


def test_default_names_are_the_jobs_made_unique() -> None:
    wf = Workflow()
    names = [wf.add(wj.step(str(n))).name for n in range(3)]
    assert names == ["wf.step", "wf.step-2", "wf.step-3"]
    assert wf.add(wj.step("x"), name="wf.step-5").name == "wf.step-5"
    assert wf.add(wj.step("y")).name == "wf.step-4"
    assert wf.add(wj.step("z")).name == "wf.step-6"


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ("fetch", "workflow 'w', step 'late': after= takes a step or steps, got 'fetch'"),
        (3, "workflow 'w', step 'late': after= takes a step or steps, got 3"),
        ([None], "workflow 'w', step 'late': after= takes steps (what add() returns), got None"),
    ],
)
def test_an_after_that_is_not_a_step_is_a_one_line_error(after: object, message: str) -> None:
    wf = Workflow("w")
    wf.add(wj.step("fetch"), name="fetch")
    with pytest.raises(WorkflowError) as caught:
        wf.add(wj.step("late"), after=after, name="late")  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert [s.name for s in wf.steps] == ["fetch"]  # nothing added


def test_a_step_of_another_workflow_or_a_taken_name_is_refused_naming_the_step() -> None:
    one, two = Workflow("one"), Workflow("two")
    foreign = two.add(wj.step("x"), name="x")
    with pytest.raises(
        WorkflowError,
        match=r"^workflow 'one', step 'y': after= names step 'x' of another workflow$",
    ):
        one.add(wj.step("y"), after=foreign, name="y")
    one.add(wj.step("y"), name="y")
    with pytest.raises(WorkflowError, match=r"^workflow 'one': a step is already named 'y'$"):
        one.add(wj.step("again"), name="y")
    with pytest.raises(WorkflowError, match="control characters"):
        one.add(wj.step("bad"), name="a\nb")


def test_a_cycle_cannot_be_built_after_only_names_earlier_steps() -> None:
    # A step exists only once add() returned it, so no step can wait for
    # itself or for a later one: the graph add() builds is acyclic.
    wf = Workflow()
    a = wf.add(wj.step("a"))
    b = wf.add(wj.step("b"), after=a)
    assert b.after == (a,) and a.after == ()


def test_an_empty_workflow_is_not_enqueued() -> None:
    with pytest.raises(WorkflowError, match=r"^workflow 'empty' has no steps to enqueue$"):
        insert_parameters(Workflow("empty"), Serializer(), None)


def test_chain_and_group_then() -> None:
    wf = chain(wj.step("a"), wj.step("b"), wj.step("c"))
    assert [[u.name for u in s.after] for s in wf.steps] == [[], ["wf.step"], ["wf.step-2"]]
    fan = group(wj.shard(1), wj.shard(2)).then(wj.total()).then(wj.step("end"))
    assert [u.name for u in fan.steps[2].after] == ["wf.shard", "wf.shard-2"]
    assert [u.name for u in fan.steps[3].after] == ["wf.total"]


def test_overall_status() -> None:
    assert overall_status([Status.DONE, Status.DONE]) is Status.DONE
    assert overall_status([Status.DONE, Status.CANCELLED]) is Status.CANCELLED
    assert overall_status([Status.RUNNING, Status.FAILED]) is Status.RUNNING


async def test_upstream_outside_a_workflow_is_empty() -> None:
    assert await upstream() == {}


def test_report_progress_outside_a_job_raises() -> None:
    with pytest.raises(RuntimeError, match="outside a running job"):
        report_progress(0.5)


async def test_the_synchronous_mode_runs_steps_in_dependency_order_with_upstream() -> None:
    wf = Workflow("onboard")
    fetch = wf.add(wj.step("fetch"), name="fetch")
    sizes = [
        wf.add(wj.plain_step(f"resize-{px}"), after=fetch, name=f"resize-{px}") for px in (64, 256)
    ]
    done = wf.add(wj.collect("notify"), after=sizes, name="notify")
    wf.add(wj.collect("cleanup"), after=[fetch, *sizes, done], name="cleanup", always=True)
    with execute_jobs_synchronously():
        run = await wf.enqueue()
    assert wj.runs == ["fetch", "resize-64", "resize-256", "notify", "cleanup"]
    assert wj.seen_upstream["notify"] == {
        "resize-64": ("done", "resize-64", None),
        "resize-256": ("done", "resize-256", None),
    }
    assert run.id < 0 and all(job_id < 0 for job_id in run.job_ids.values())
    assert list(run.job_ids) == ["fetch", "resize-64", "resize-256", "notify", "cleanup"]


async def test_the_synchronous_mode_cancels_dependents_runs_always_steps_then_raises() -> None:
    wf = Workflow()
    bad = wf.add(wj.fail("bad"), name="bad")
    later = wf.add(wj.step("later"), after=bad, name="later")
    wf.add(wj.collect("cleanup"), after=[bad, later], name="cleanup", always=True)
    with execute_jobs_synchronously(), pytest.raises(ValueError, match="bad broke"):
        await wf.enqueue()
    assert wj.runs == ["bad", "cleanup"]
    assert wj.seen_upstream["cleanup"] == {
        "bad": ("failed", None, "ValueError: bad broke"),
        "later": ("cancelled", None, "upstream step 'bad' failed"),
    }


def test_koyojobs_sync_in_the_synchronous_mode_runs_the_steps() -> None:
    with execute_jobs_synchronously():
        run = sync.enqueue(chain(wj.plain_step("a"), wj.collect("b")))
    assert wj.runs == ["a", "b"]
    assert wj.seen_upstream["b"] == {"wf.plain_step": ("done", "a", None)}
    assert set(run.job_ids) == {"wf.plain_step", "wf.collect"}


async def test_koyojobs_sync_refuses_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError, match=r"await wf\.enqueue"):
        sync.enqueue(chain(wj.step("a")))
    await asyncio.sleep(0)
