"""The integration examples of docs/examples, run against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import svcs
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from docs.examples import di_container, fastapi_app, svcs_registry
from koyojobs import Broker, Database, Status, Worker, execute_jobs_synchronously
from tests.conftest import wait_for_status

# Test-sized timings: a worker stopped at the end of a test does not wait long.
WORKER_OPTIONS: dict[str, Any] = {"lease": 2.0, "poll_interval": 0.5, "shutdown_grace": 1.0}


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's ASGITransport does not run the lifespan: LifespanManager does,
    # and its .app carries the lifespan's state into the requests.
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def count(dsn: str, query: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval(query, *args)
        return value
    finally:
        await conn.close()


# -- FastAPI --------------------------------------------------------------------


async def test_fastapi_enqueues_in_the_request_transaction_and_the_worker_runs_it(
    dsn: str, broker: Broker
) -> None:
    app = fastapi_app.create_app(dsn, **WORKER_OPTIONS)
    async with serve(app) as client:
        response = await client.post("/signups", json={"email": "ada@example.com"})
        assert response.status_code == 201, response.text
        signup = response.json()
        job_id = signup["welcome_job_id"]

        job = await wait_for_status(broker, job_id, Status.DONE, Status.FAILED)
        assert job.status is Status.DONE, job.last_error
        assert job.name == "examples.fastapi.send_welcome"
        assert job.queue == fastapi_app.EMAILS_QUEUE
        assert job.result == "welcome sent to ada@example.com"

        response = await client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "id": job_id,
            "name": "examples.fastapi.send_welcome",
            "status": "done",
            "attempts": 1,
            "result": "welcome sent to ada@example.com",
            "last_error": None,
        }
        assert (await client.get(f"/jobs/{job_id + 1000}")).status_code == 404

    # The job ran against the app's own table.
    welcomed = "SELECT count(*) FROM signups WHERE id = $1 AND welcomed_at IS NOT NULL"
    assert await count(dsn, welcomed, signup["id"]) == 1


async def test_fastapi_a_request_that_fails_after_enqueueing_leaves_no_job(dsn: str) -> None:
    # No worker: the jobs stay in the table for counting.
    app = fastapi_app.create_app(dsn, run_worker=False)
    async with serve(app) as client:
        first = await client.post("/signups", json={"email": "ada@example.com"})
        assert first.status_code == 201, first.text
        # The duplicate email is caught at commit, after the job was enqueued.
        again = await client.post("/signups", json={"email": "ada@example.com"})
        assert again.status_code == 409, again.text
        other = await client.post("/signups", json={"email": "grace@example.com"})
        assert other.status_code == 201, other.text

    assert await count(dsn, "SELECT count(*) FROM signups") == 2
    assert await count(dsn, "SELECT count(*) FROM koyojobs_jobs") == 2
    kept = [first.json()["welcome_job_id"], other.json()["welcome_job_id"]]
    assert await count(dsn, "SELECT count(*) FROM koyojobs_jobs WHERE id = ANY($1)", kept) == 2


async def test_fastapi_under_the_synchronous_mode_the_welcome_runs_in_the_request(
    dsn: str,
) -> None:
    # What a test of the app does: no worker, jobs inline. The welcome runs on
    # the request's connection, so it sees the signup before the commit, and
    # rolls back with a request that fails.
    with execute_jobs_synchronously():
        async with serve(fastapi_app.create_app(dsn, run_worker=False)) as client:
            response = await client.post("/signups", json={"email": "ada@example.com"})
            assert response.status_code == 201, response.text
            assert response.json()["welcome_job_id"] < 0  # the inline run's: no row
            again = await client.post("/signups", json={"email": "ada@example.com"})
            assert again.status_code == 409, again.text

    welcomed = "SELECT count(*) FROM signups WHERE welcomed_at IS NOT NULL"
    assert await count(dsn, welcomed) == await count(dsn, "SELECT count(*) FROM signups") == 1
    assert await count(dsn, "SELECT count(*) FROM koyojobs_jobs") == 0


async def test_fastapi_app_reads_its_dsn_from_the_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KOYOJOBS_DSN", raising=False)
    with pytest.raises(RuntimeError, match="KOYOJOBS_DSN"):
        fastapi_app.create_app()
    monkeypatch.setenv("KOYOJOBS_DSN", dsn)
    async with serve(fastapi_app.create_app(run_worker=False)) as client:
        response = await client.post("/signups", json={"email": "env@example.com"})
        assert response.status_code == 201, response.text


# -- svcs -----------------------------------------------------------------------


async def test_svcs_container_gives_the_broker_and_pings_the_components(dsn: str) -> None:
    registry = await svcs_registry.create_registry(dsn, **WORKER_OPTIONS)
    try:
        async with svcs.Container(registry) as container:
            broker, db, worker = await container.aget(Broker, Database, Worker)
            assert broker.database is db and worker.broker is broker

            job_id = await broker.enqueue(svcs_registry.send_report("weekly"))
            assert job_id is not None
            job = await wait_for_status(broker, job_id, Status.DONE, Status.FAILED)
            assert job.status is Status.DONE, job.last_error
            assert job.result == "weekly report sent"

            pings = container.get_pings()
            assert sorted(p.name for p in pings) == [
                "koyojobs.broker.Broker",
                "koyojobs.database.Database",
            ]
            for ping in pings:
                await ping.aping()  # raises if unhealthy
    finally:
        await registry.aclose()

    # Closing the registry stopped the components: the pings now fail.
    assert not db.started
    with pytest.raises(RuntimeError, match="not started"):
        await svcs_registry.ping_broker(broker)
    with pytest.raises(RuntimeError, match="not started"):
        await svcs_registry.ping_database(db)


# -- dependency-injector --------------------------------------------------------


async def _resources(started_or_stopped: Awaitable[None] | None) -> None:
    # init_resources() and shutdown_resources() return an awaitable when the
    # resources are async, as these are.
    assert started_or_stopped is not None
    await started_or_stopped


async def test_dependency_injector_resources_start_the_components_and_a_job_runs(
    dsn: str,
) -> None:
    container = di_container.Container()
    container.config.from_dict({"dsn": dsn, "worker": WORKER_OPTIONS})
    await _resources(container.init_resources())
    try:
        db = await container.database.async_()
        broker = await container.broker.async_()
        worker = await container.worker.async_()
        assert db.started and broker.database is db and worker.broker is broker
        assert worker.queue == "default"
        assert worker.poll_interval == WORKER_OPTIONS["poll_interval"]

        job_id = await broker.enqueue(di_container.resize_image("cat.png", 128))
        assert job_id is not None
        job = await wait_for_status(broker, job_id, Status.DONE, Status.FAILED)
        assert job.status is Status.DONE, job.last_error
        assert job.result == "cat.png resized to 128px"
    finally:
        await _resources(container.shutdown_resources())

    # Stopped in reverse: the worker, the broker, then the pool.
    assert not any(p.initialized for p in (container.worker, container.broker, container.database))
    assert not db.started and worker.running == 0
    with pytest.raises(RuntimeError, match="not started"):
        _ = broker.pool


async def test_dependency_injector_needs_a_dsn() -> None:
    container = di_container.Container()
    with pytest.raises(Exception, match="dsn"):
        await _resources(container.init_resources())
    assert not container.database.initialized
