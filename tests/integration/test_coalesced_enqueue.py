"""Coalesced enqueue (koyojobs.enqueuer): calls awaited at once share a statement,
each with its own id or its own error, on a real PostgreSQL.

Rows inserted by one transaction share their ``xmin``: the number of distinct
``xmin`` is the number of statements (each its own commit) the jobs took.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from koyojobs import Broker, define_job
from koyojobs.enqueuer import Coalescer
from tests import jobs


@define_job(name="tests.coalesced.refused")
async def refused(value: Any) -> None:
    """A job whose every row the test's CHECK constraint refuses."""


@define_job(name="tests.coalesced.once", unique=True)
async def once(key: str) -> str:
    return key


async def _transactions(broker: Broker) -> int:
    count: int = await broker.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM koyojobs_jobs")
    return count


async def test_calls_awaited_at_once_share_statements_and_each_gets_its_own_id(
    broker: Broker,
) -> None:
    ids = await asyncio.gather(*(jobs.echo(n) for n in range(50)))
    assert len(set(ids)) == 50
    rows = await broker.pool.fetch("SELECT id FROM koyojobs_jobs ORDER BY id")
    assert sorted(ids) == [r["id"] for r in rows]
    for n, job_id in enumerate(ids):  # each caller's id is its own call's row
        payload = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs WHERE id = $1", job_id)
        assert broker.serializer.load_arguments(payload, "tests.jobs.echo") == ((n,), {})
    # The first goes alone at once; the 49 that came while it was in flight go together.
    assert await _transactions(broker) == 2


async def test_a_lone_call_goes_at_once_in_a_statement_of_its_own(broker: Broker) -> None:
    for n in range(3):
        await jobs.echo(n)
    assert await _transactions(broker) == 3


async def test_a_row_the_database_refuses_fails_only_its_own_caller(broker: Broker) -> None:
    await broker.pool.execute(
        "ALTER TABLE koyojobs_jobs ADD CONSTRAINT test_refuse "
        "CHECK (name <> 'tests.coalesced.refused')"
    )
    calls = [refused(n) if n in (7, 13) else jobs.echo(n) for n in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errors == [7, 13]
    assert all(isinstance(results[i], asyncpg.CheckViolationError) for i in errors)
    stored = await broker.pool.fetch("SELECT id FROM koyojobs_jobs ORDER BY id")
    assert sorted(r for r in results if isinstance(r, int)) == [r["id"] for r in stored]
    assert len(stored) == 18


async def test_unique_calls_at_once_get_one_job(broker: Broker) -> None:
    ids = await asyncio.gather(*(once("k") for _ in range(10)), *(once("j") for _ in range(5)))
    assert len(set(ids[:10])) == 1 and len(set(ids[10:])) == 1 and ids[0] != ids[10]
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 2
    # And while one is ready, a later call gets its id too.
    assert await once("k") == ids[0]


async def test_an_enqueue_into_the_callers_transaction_is_never_coalesced(
    broker: Broker,
) -> None:
    async with broker.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        others = [asyncio.ensure_future(jobs.echo(n)) for n in range(10)]
        mine = await broker.enqueue(jobs.echo("mine"), connection=conn)
        await asyncio.gather(*others)
        await transaction.rollback()
    assert await broker.get_job(mine) is None  # rolled back with the caller's transaction
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 10


async def test_a_caller_cancelled_while_its_call_waits_inserts_nothing(broker: Broker) -> None:
    first = asyncio.ensure_future(jobs.echo("first"))
    second = asyncio.ensure_future(jobs.echo("second"))
    await asyncio.sleep(0)  # both started: the first in flight, the second waiting
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    first_id = await first
    assert [r["id"] for r in await broker.pool.fetch("SELECT id FROM koyojobs_jobs")] == [first_id]


async def test_when_the_pool_cannot_give_a_connection_every_waiting_caller_hears_it(
    broker: Broker,
) -> None:
    coalescer = Coalescer(lambda: broker.pool, broker.serializer, flushers=1)
    held = [await broker.pool.acquire() for _ in range(broker.pool.get_max_size())]
    try:
        blocked = asyncio.ensure_future(coalescer.enqueue(_consumed(jobs.echo(0))))
        waiting = [
            asyncio.ensure_future(coalescer.enqueue(_consumed(jobs.echo(n)))) for n in (1, 2)
        ]
        await asyncio.sleep(0.05)
        assert not blocked.done() and not any(w.done() for w in waiting)
    finally:
        for conn in held:
            await broker.pool.release(conn)
    assert isinstance(await blocked, int)
    ids = await asyncio.gather(*waiting)
    assert len(set(ids)) == 2
    assert await _transactions(broker) == 2  # the two waiting went together


def _consumed(call: Any) -> Any:
    call.consume()
    return call
