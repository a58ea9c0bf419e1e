"""Enqueuing: ids, records, transactions, bulk, ordering, wake-ups."""

from __future__ import annotations

import dataclasses
import time

import pendulum
import pytest

from koyojobs import Broker, Status, schedule_at
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker


@dataclasses.dataclass(frozen=True)
class Order:
    id: int
    lines: tuple[str, ...]


async def test_enqueue_returns_an_id_and_the_record_reads_back(broker: Broker) -> None:
    before = pendulum.now("UTC")
    job_id = await jobs.echo("Bogdan")
    assert isinstance(job_id, int)
    job = await broker.get_job(job_id)
    assert job is not None
    assert (job.id, job.name, job.queue, job.priority) == (job_id, "tests.jobs.echo", "default", 50)
    assert (job.status, job.attempts, job.max_attempts) == (Status.READY, 0, 3)
    assert job.created_at >= before.subtract(seconds=5)
    assert job.scheduled_at <= pendulum.now("UTC").add(seconds=5)
    assert job.started_at is None
    assert job.finished_at is None
    assert job.result is None
    assert await broker.get_job(job_id + 1000) is None


async def test_dill_arguments_round_trip_through_a_worker(
    broker: Broker, start_worker: StartWorker
) -> None:
    offset = 10
    when = pendulum.datetime(2031, 5, 6, 7, 8, tz="Asia/Tokyo")
    value = {
        "lambda": lambda x: x * 2,
        "closure": (lambda x: x + offset),
        "dataclass": Order(7, ("a", "b")),
        "time": when,
        "bytes": b"\x00\x01\xff",
    }
    await start_worker()
    job = await wait_for_status(broker, await jobs.echo(value), Status.DONE)
    result = job.result
    assert result["lambda"](4) == 8
    assert result["closure"](1) == 11
    assert result["dataclass"] == Order(7, ("a", "b"))
    assert result["time"] == when
    assert result["time"].timezone_name == "Asia/Tokyo"
    assert result["bytes"] == b"\x00\x01\xff"


async def test_enqueue_in_a_rolled_back_transaction_never_existed(broker: Broker) -> None:
    async with broker.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="roll back"):
            async with conn.transaction():
                job_id = await broker.enqueue(jobs.echo(1), connection=conn)
                raise RuntimeError("roll back")
    assert job_id is not None
    assert await broker.get_job(job_id) is None


async def test_enqueue_in_a_committed_transaction_wakes_workers_on_commit(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker(poll_interval=30)
    async with broker.pool.acquire() as conn, conn.transaction():
        job_id = await broker.enqueue(jobs.echo("tx"), connection=conn)
        assert job_id is not None
        # Inside the transaction no worker could see it; after commit it runs
        # long before the 30 s poll.
    job = await wait_for_status(broker, job_id, Status.DONE, timeout=5)
    assert job.result == "tx"


async def test_enqueue_many_in_one_statement_keeps_order(broker: Broker) -> None:
    sent: list[str] = []
    async with broker.pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        ids = await broker.enqueue_many([jobs.echo(i) for i in range(500)], connection=conn)
    assert ids is not None
    assert len(ids) == 500
    assert ids == sorted(ids)
    # asyncpg's own type introspection aside, one statement reached the jobs table.
    ours = [q for q in sent if "koyojobs_jobs" in q]
    assert len(ours) == 1
    assert ours[0].lstrip().startswith("INSERT INTO koyojobs_jobs")
    assert await broker.enqueue_many([]) == []
    async with broker.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, name, args FROM koyojobs_jobs ORDER BY id")
    values = [broker.serializer.load_arguments(r["args"], r["name"])[0][0] for r in rows]
    assert values == list(range(500))


async def test_enqueue_rejects_what_is_not_a_job_call(broker: Broker) -> None:
    with pytest.raises(TypeError, match="needs a job call"):
        await broker.enqueue(jobs.echo)  # type: ignore[call-overload]
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 0


async def test_enqueue_many_rejects_what_is_not_a_job_call(broker: Broker) -> None:
    with pytest.raises(TypeError, match="needs job calls"):
        await broker.enqueue_many([jobs.echo(1), "echo(2)"])  # type: ignore[list-item]


async def test_order_is_priority_then_scheduled_at_then_enqueue_order(
    broker: Broker, start_worker: StartWorker
) -> None:
    now = pendulum.now("UTC")
    await broker.enqueue_many(
        [
            jobs.ordered("p50-first"),
            jobs.ordered("p50-second"),
            schedule_at(now.subtract(minutes=1), jobs.ordered("p50-scheduled-earlier")),
            jobs.ordered_urgent("p0"),
        ]
    )
    await start_worker(queue="ordered", pool_size=1)
    deadline = time.monotonic() + 10
    while len(jobs.runs) < 4 and time.monotonic() < deadline:
        await _tick()
    assert [label for _, label in jobs.runs] == [
        "p0",
        "p50-scheduled-earlier",
        "p50-first",
        "p50-second",
    ]


async def test_each_queue_wakes_only_its_own_subscribers(broker: Broker) -> None:
    woken: list[str] = []
    await broker.subscribe("default", lambda: woken.append("default"))
    await broker.subscribe("emails", lambda: woken.append("emails"))
    await broker.subscribe("ordered", lambda: woken.append("ordered"))
    await jobs.echo(1)
    await jobs.ordered("last")
    # Notifications arrive in commit order: once "ordered" is here, a wrong
    # wake-up of "emails" for the first insert would be here too.
    deadline = time.monotonic() + 5
    while "ordered" not in woken and time.monotonic() < deadline:
        await _tick()
    assert woken == ["default", "ordered"]


async def _tick(seconds: float = 0.01) -> None:
    import asyncio

    await asyncio.sleep(seconds)
