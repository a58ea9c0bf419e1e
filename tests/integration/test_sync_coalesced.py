"""koyojobs.sync.enqueue from many threads at once (koyojobs.coalesce_threads), on a real
PostgreSQL: shared statements, each caller its own id or its own error.

Rows inserted by one transaction share their ``xmin``: the number of distinct
``xmin`` is the number of statements the jobs took.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from koyojobs import Broker, sync
from tests import jobs
from tests.integration.test_coalesced_enqueue import refused


@pytest.fixture(autouse=True)
def _own_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KOYOJOBS_DSN", dsn)
    monkeypatch.delenv("KOYOJOBS_SECRET", raising=False)
    sync.configure()
    yield
    sync.configure()


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each in a thread of its own, all released at one moment; results or errors."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def _statements(broker: Broker) -> int:
    found: int = await broker.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM koyojobs_jobs")
    return found


def _enqueue(call: Any) -> Callable[[], Any]:
    return lambda: sync.enqueue(call)


async def test_threads_enqueueing_at_once_share_statements_each_with_its_own_id(
    broker: Broker,
) -> None:
    results = await asyncio.to_thread(_at_once, [_enqueue(jobs.echo(n)) for n in range(40)])
    assert all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 40
    for n, job_id in enumerate(results):
        payload = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs WHERE id = $1", job_id)
        assert broker.serializer.load_arguments(payload, "tests.jobs.echo") == ((n,), {})
    assert await _statements(broker) <= 20  # one each would be 40


async def test_a_lone_call_goes_at_once_in_a_statement_of_its_own(broker: Broker) -> None:
    for n in range(3):
        await asyncio.to_thread(sync.enqueue, jobs.echo(n))
    assert await _statements(broker) == 3


async def test_a_row_the_database_refuses_fails_only_its_own_thread(broker: Broker) -> None:
    await broker.pool.execute(
        "ALTER TABLE koyojobs_jobs ADD CONSTRAINT test_refuse "
        "CHECK (name <> 'tests.coalesced.refused')"
    )
    calls = [_enqueue(refused(n) if n in (3, 17) else jobs.echo(n)) for n in range(30)]
    results = await asyncio.to_thread(_at_once, calls)
    errors = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errors == [3, 17], results
    assert all(isinstance(results[i], psycopg.errors.CheckViolation) for i in errors)
    stored = await broker.pool.fetch("SELECT id FROM koyojobs_jobs ORDER BY id")
    assert sorted(r for r in results if isinstance(r, int)) == [r["id"] for r in stored]
