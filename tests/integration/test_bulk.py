"""Bulk actions: retry_many, cancel_many, delete_many, in batches that never wait for a worker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from koyojobs import Broker, Status


async def insert(
    broker: Broker, count: int, status: str, queue: str = "bulk", name: str = "bulk.job"
) -> list[int]:
    rows = await broker.pool.fetch(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, finished_at) "
        "SELECT $4, $2, $3, '\\x00', "
        "       CASE WHEN $3 IN ('done', 'failed', 'cancelled') THEN now() END "
        "FROM generate_series(1, $1) RETURNING id",
        count,
        queue,
        status,
        name,
    )
    return [row["id"] for row in rows]


async def statuses(broker: Broker, queue: str) -> dict[str, int]:
    rows = await broker.pool.fetch(
        "SELECT status, count(*) FROM koyojobs_jobs WHERE queue = $1 GROUP BY 1", queue
    )
    return {row[0]: row[1] for row in rows}


async def test_retry_many_retries_every_match_across_batches(broker: Broker) -> None:
    await insert(broker, 250, "failed")
    await insert(broker, 7, "failed", queue="other")
    await insert(broker, 3, "done")
    assert await broker.retry_many(queue="bulk", batch=100) == 250
    assert await statuses(broker, "bulk") == {"ready": 250, "done": 3}
    assert await statuses(broker, "other") == {"failed": 7}
    attempts = await broker.pool.fetchval(
        "SELECT max(attempts) FROM koyojobs_jobs WHERE queue = 'bulk'"
    )
    assert attempts == 0
    assert await broker.retry_many(status=None, batch=100) == 10  # every finished one left


async def test_cancel_many_and_delete_many(broker: Broker) -> None:
    await insert(broker, 120, "ready")
    await insert(broker, 4, "failed")
    assert await broker.cancel_many(queue="bulk", batch=50) == 120
    assert await statuses(broker, "bulk") == {"cancelled": 120, "failed": 4}
    assert await broker.delete_many(queue="bulk", status="cancelled", batch=50) == 120
    assert await statuses(broker, "bulk") == {"failed": 4}
    with pytest.raises(ValueError, match="delete does not apply to running jobs"):
        await broker.delete_many(status="running")
    with pytest.raises(ValueError, match="retry does not apply to ready jobs"):
        await broker.retry_many(status=["failed", "ready"])


async def test_name_prefix_names_and_ids_narrow(broker: Broker) -> None:
    await insert(broker, 5, "failed", name="shop.mail.send")
    await insert(broker, 5, "failed", name="shop.mail.bounce")
    await insert(broker, 5, "failed", name="shop.pay")
    assert await broker.retry_many(name="shop.pay") == 5
    assert await broker.retry_many(name_prefix="shop.mail.b") == 5
    ids = await insert(broker, 5, "failed", name="shop.other")
    assert await broker.delete_many(ids=ids[:2]) == 2
    assert await broker.delete_many(names=["shop.mail.send"]) == 5
    remaining = await broker.pool.fetchval(
        "SELECT count(*) FROM koyojobs_jobs WHERE status = 'failed'"
    )
    assert remaining == 3


async def test_a_unique_key_is_retried_once_and_not_while_held(broker: Broker) -> None:
    key, held = uuid.uuid4(), uuid.uuid4()
    twins = await insert(broker, 2, "failed")
    blocked = await insert(broker, 1, "failed")
    holder = await insert(broker, 1, "ready")
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET unique_key = $2 WHERE id = ANY($1::bigint[])", twins, key
    )
    await broker.pool.execute(
        "UPDATE koyojobs_jobs SET unique_key = $2 WHERE id = ANY($1::bigint[])",
        blocked + holder,
        held,
    )
    assert await broker.retry_many(queue="bulk") == 1
    assert await broker.job_status(twins[1]) is Status.READY  # the newest of the two
    assert await broker.job_status(twins[0]) is Status.FAILED
    assert await broker.job_status(blocked[0]) is Status.FAILED


async def test_a_row_a_worker_holds_is_skipped_not_waited_for(broker: Broker) -> None:
    ids = await insert(broker, 10, "failed")
    async with broker.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT FROM koyojobs_jobs WHERE id = $1 FOR UPDATE", ids[3])
        # Were the bulk action to wait for the lock, this would time out.
        retried = await asyncio.wait_for(broker.retry_many(queue="bulk", batch=4), 10)
    assert retried == 9
    assert await broker.job_status(ids[3]) is Status.FAILED
