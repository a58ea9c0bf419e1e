"""Unique jobs as workflow steps (schema 0011): a unique step holds its key from its
enqueue on, pending included; a held key refuses the workflow; the index is replaced
without a moment without one, CONCURRENTLY by `koyojobs migrate` on a big table."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from koyojobs import Broker, Status, Workflow, WorkflowError, chain, sync
from koyojobs.errors import SchemaError
from koyojobs.schema import build_indexes, migrate
from koyojobs.testing import drain
from koyojobs.workflow_unique import StepKeyHeldError
from tests import workflow_jobs as wj
from tests.integration.conftest import StartWorker

NEW, OLD = "koyojobs_jobs_unique_held_idx", "koyojobs_jobs_unique_idx"


@pytest.fixture(autouse=True)
def _reset() -> None:
    wj.runs.clear()


def _waits_for_a_step(key: str) -> Workflow:
    return chain(wj.step("first"), wj.unique_step(key, "second"), name="keyed")


async def _counts(broker: Broker) -> tuple[int, int]:
    row = await broker.pool.fetchrow(
        "SELECT (SELECT count(*) FROM koyojobs_workflows), (SELECT count(*) FROM koyojobs_jobs)"
    )
    assert row is not None
    return row[0], row[1]


async def _indexes(broker: Broker) -> list[str]:
    rows = await broker.pool.fetch(
        "SELECT indexname FROM pg_indexes WHERE indexname = ANY($1::text[]) ORDER BY 1",
        [NEW, OLD],
    )
    return [row[0] for row in rows]


async def test_a_pending_unique_step_holds_its_key_until_it_ends(
    broker: Broker, start_worker: StartWorker
) -> None:
    run = await _waits_for_a_step("k1").enqueue()
    step_id = run.job_ids["wf.unique"]
    assert (await broker.get_job(step_id)).status is Status.PENDING  # type: ignore[union-attr]
    # A plain enqueue of the key returns the waiting step's id, as for any holder.
    assert await broker.enqueue(wj.unique_step("k1", "plain")) == step_id
    assert await broker.enqueue_many([wj.unique_step("k1", "many")]) == [step_id]
    # The step's release (pending -> ready) inside a worker's claim statement.
    await start_worker()
    done = await broker.wait(step_id, timeout=30)
    assert done.status is Status.DONE, done.last_error
    assert wj.runs == ["first", "second"]
    # Once it ended, the key is free again.
    assert await broker.enqueue(wj.unique_step("k1", "after")) != step_id


async def test_a_held_key_refuses_the_workflow_and_inserts_nothing(broker: Broker) -> None:
    holder = await broker.enqueue(wj.unique_step("k2", "plain"))
    before = await _counts(broker)
    with pytest.raises(StepKeyHeldError) as caught:
        await _waits_for_a_step("k2").enqueue()
    assert str(caught.value) == (
        f"workflow 'keyed', step 'wf.unique': job {holder} holds its unique key "
        "(pending, ready or running); nothing was enqueued"
    )
    assert (caught.value.step, caught.value.holder) == ("wf.unique", holder)
    assert isinstance(caught.value, WorkflowError)
    assert await _counts(broker) == before
    # A pending step holds it too: a second workflow of the key is refused.
    await broker.cancel(holder)
    first = await _waits_for_a_step("k2").enqueue()
    with pytest.raises(StepKeyHeldError, match=f"job {first.job_ids['wf.unique']} holds"):
        await _waits_for_a_step("k2").enqueue()


async def test_refused_inside_the_callers_transaction_which_stays_usable(
    broker: Broker, dsn: str
) -> None:
    holder = await broker.enqueue(wj.unique_step("k3"))
    before = await _counts(broker)
    async with broker.pool.acquire() as conn, conn.transaction():
        with pytest.raises(StepKeyHeldError, match=f"job {holder} holds"):
            await _waits_for_a_step("k3").enqueue(connection=conn)
        assert await conn.fetchval("SELECT 1") == 1
        await broker.enqueue(wj.step("in the same transaction"), connection=conn)
    assert await _counts(broker) == (before[0], before[1] + 1)

    def blocking(autocommit: bool) -> str:
        with psycopg.connect(dsn, autocommit=autocommit) as pconn:
            if not autocommit:
                pconn.execute("SELECT 1")  # in a transaction
            try:
                sync.enqueue(_waits_for_a_step("k3"), connection=pconn)
            except StepKeyHeldError as exc:
                pconn.execute("SELECT 1")  # the transaction is still usable
                return str(exc)
        raise AssertionError("enqueued")

    for autocommit in (False, True):
        assert f"job {holder} holds" in await asyncio.to_thread(blocking, autocommit)
    assert await _counts(broker) == (before[0], before[1] + 1)


def test_two_steps_of_one_workflow_cannot_share_a_key() -> None:
    wf = Workflow("twice")
    wf.add(wj.unique_step("k4"), name="one")
    with pytest.raises(WorkflowError) as caught:
        wf.add(wj.unique_step("k4", "other label"), name="two")
    assert str(caught.value) == (
        "workflow 'twice', step 'two': same unique key as step 'one' "
        "(steps of one workflow cannot share a unique key)"
    )
    assert [s.name for s in wf.steps] == ["one"]
    wf.add(wj.unique_step("k5"), name="three")  # another key is fine


async def _wait_until_blocked(broker: Broker, pid: int) -> None:
    """Until backend ``pid`` waits for a lock (a row of pg_locks not granted): a wait
    on the database's state, not a sleep standing in for one."""
    deadline = time.monotonic() + 10
    query = "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)"
    while time.monotonic() < deadline:
        if await broker.pool.fetchval(query, pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_a_race_with_a_concurrent_insert_of_the_key_is_the_same_error(
    broker: Broker,
) -> None:
    async with broker.pool.acquire() as other, broker.pool.acquire() as conn:
        tx = other.transaction()
        await tx.start()
        holder = await broker.enqueue(wj.unique_step("k6"), connection=other)
        # Not committed: the workflow's look does not see it; its insert then
        # waits on the index for the other transaction, which commits.
        enqueue = asyncio.create_task(_waits_for_a_step("k6").enqueue(connection=conn))
        await _wait_until_blocked(broker, conn.get_server_pid())
        await tx.commit()
        with pytest.raises(StepKeyHeldError) as caught:
            await enqueue
        assert caught.value.holder == holder
        assert str(caught.value).startswith(f"workflow 'keyed', step 'wf.unique': job {holder}")
    assert await _counts(broker) == (0, 1)


async def test_a_plain_unique_job_is_not_retried_while_a_step_holds_its_key(
    broker: Broker,
) -> None:
    failed = await broker.enqueue(wj.unique_step("k7", fail=True))
    assert await drain(broker) == {"failed": 1}
    run = await _waits_for_a_step("k7").enqueue()
    step_id = run.job_ids["wf.unique"]
    assert await broker.unique_holder(failed) == step_id
    assert await broker.retry_job(failed) is False
    assert await broker.retry_many(ids=[failed]) == 0
    assert (await broker.get_job(failed)).status is Status.FAILED  # type: ignore[union-attr]
    await broker.cancel_workflow(run.id)
    assert await broker.unique_holder(failed) is None
    assert await broker.retry_job(failed) is True


async def test_a_cancelled_unique_step_is_not_revived_while_its_key_is_held(
    broker: Broker,
) -> None:
    def failing() -> Workflow:
        wf = Workflow("revive")
        broke = wf.add(wj.fail("broke"), name="broke")
        wf.add(wj.unique_step("k8", "keyed"), after=broke, name="keyed")
        return wf

    run = await failing().enqueue()
    assert await drain(broker) == {"failed": 1}
    keyed = run.job_ids["keyed"]
    holder = await broker.enqueue(wj.unique_step("k8", "plain"))
    assert await broker.retry_job(run.job_ids["broke"]) is True
    job = await broker.get_job(keyed)
    assert job is not None and job.status is Status.CANCELLED
    assert job.last_error == "upstream step 'broke' failed"
    # Once the key is free, a retry of the failed step revives it.
    await broker.cancel(holder)
    assert await drain(broker) == {"failed": 1}
    assert await broker.retry_job(run.job_ids["broke"]) is True
    assert (await broker.get_job(keyed)).status is Status.PENDING  # type: ignore[union-attr]


async def _rerun_0011_over(broker: Broker, rows: int) -> None:
    """0011 applied again, as an upgrade would, on a table of ``rows`` jobs with 0005's index."""
    await broker.pool.execute(
        f"DROP INDEX {NEW}; "
        f"CREATE UNIQUE INDEX {OLD} ON koyojobs_jobs (unique_key) "
        "WHERE unique_key IS NOT NULL AND status IN ('ready', 'running'); "
        "DELETE FROM koyojobs_migrations WHERE version = 11"
    )
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args, status) "
        "SELECT 'n', 'q', '\\x00', 'done' FROM generate_series(1, $1)",
        rows,
    )
    assert await migrate(broker.pool) == [11]


async def test_0011_replaces_the_unique_index_on_a_small_table(broker: Broker) -> None:
    assert await _indexes(broker) == [NEW]  # the template was migrated empty
    await _rerun_0011_over(broker, 100_000)
    assert await _indexes(broker) == [NEW]
    await _waits_for_a_step("k9").enqueue()


async def test_on_a_big_table_migrate_builds_the_index_concurrently(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    await _rerun_0011_over(broker, 100_001)
    assert await _indexes(broker) == [OLD]
    # Until the index exists, a workflow with a unique step is refused...
    with pytest.raises(SchemaError) as caught:
        await _waits_for_a_step("k10").enqueue()
    assert str(caught.value) == (
        "workflow 'keyed', step 'wf.unique' is a unique job, and unique steps need the index "
        "koyojobs_jobs_unique_held_idx, not built yet: run koyojobs migrate"
    )
    # ... while plain unique jobs and workflows without one work as before.
    first = await broker.enqueue(wj.unique_step("k10"))
    assert await broker.enqueue(wj.unique_step("k10")) == first
    await chain(wj.step("a"), wj.step("b")).enqueue()

    assert await build_indexes(broker.pool) == [NEW]
    assert await _indexes(broker) == [NEW]
    assert await build_indexes(broker.pool) == []
    assert await broker.enqueue(wj.unique_step("k10")) == first
    run = await _waits_for_a_step("k11").enqueue()
    assert await broker.enqueue(wj.unique_step("k11")) == run.job_ids["wf.unique"]


async def test_a_build_that_failed_half_way_is_built_again(broker: Broker) -> None:
    await broker.pool.execute(
        f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{NEW}'::regclass"
    )
    with pytest.raises(SchemaError, match="run koyojobs migrate"):
        await _waits_for_a_step("k12").enqueue()
    assert await build_indexes(broker.pool) == [NEW]
    await _waits_for_a_step("k12").enqueue()


async def test_the_claim_loop_survives_a_released_unique_step(
    broker: Broker, start_worker: StartWorker
) -> None:
    # Several workflows whose unique steps wait, and plain enqueues of their
    # keys meanwhile: each key stays with its step, every release succeeds.
    runs = [await _waits_for_a_step(f"c{n}").enqueue() for n in range(5)]
    for n, run in enumerate(runs):
        assert await broker.enqueue(wj.unique_step(f"c{n}")) == run.job_ids["wf.unique"]
    await start_worker()
    for run in runs:
        job = await broker.wait(run.job_ids["wf.unique"], timeout=30)
        assert job.status is Status.DONE, job.last_error
