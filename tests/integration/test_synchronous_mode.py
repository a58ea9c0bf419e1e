"""The synchronous mode with ``enqueue(..., connection=conn)``: the job runs on that
connection, inside the caller's transaction."""

from __future__ import annotations

from typing import Any

import pytest

from koyojobs import (
    Broker,
    RunningJob,
    Workflow,
    current_broker,
    define_job,
    execute_jobs_synchronously,
)


class WelcomeFailedError(Exception):
    pass


def _broker() -> Broker:
    broker = current_broker()
    assert broker is not None
    return broker


@define_job(name="sync_mode.welcome")
async def welcome(user_id: int) -> int:
    # As the docs' FastAPI job does: through the broker's pool.
    status = await _broker().pool.execute("UPDATE users SET welcomed = true WHERE id = $1", user_id)
    if status != "UPDATE 1":
        raise WelcomeFailedError(f"no user {user_id} to welcome ({status})")
    await log_welcome(user_id)  # a job call from a job runs inline too
    return user_id


@define_job(name="sync_mode.log_welcome")
async def log_welcome(user_id: int) -> None:
    async with _broker().pool.acquire() as conn:
        await conn.execute("INSERT INTO welcome_log (user_id) VALUES ($1)", user_id)


@pytest.fixture
async def tables(broker: Broker) -> None:
    await broker.pool.execute(
        "CREATE TABLE users (id int PRIMARY KEY, welcomed boolean NOT NULL DEFAULT false);"
        "CREATE TABLE welcome_log (user_id int NOT NULL)"
    )


async def _welcomed(broker: Broker) -> list[tuple[int, bool, int]]:
    rows = await broker.pool.fetch(
        "SELECT id, welcomed, (SELECT count(*) FROM welcome_log l WHERE l.user_id = u.id) AS n"
        "  FROM users u ORDER BY id"
    )
    return [(r["id"], r["welcomed"], r["n"]) for r in rows]


@pytest.mark.usefixtures("tables")
async def test_the_job_sees_the_callers_transaction_and_commits_or_rolls_back_with_it(
    broker: Broker,
) -> None:
    with execute_jobs_synchronously():
        async with broker.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO users (id) VALUES (1)")
            assert await broker.enqueue(welcome(1), connection=conn) < 0  # no row
        with pytest.raises(RuntimeError, match="roll back"):
            async with broker.pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO users (id) VALUES (2)")
                assert len(await broker.enqueue_many([welcome(2)], connection=conn)) == 1
                raise RuntimeError("roll back")
    assert await _welcomed(broker) == [(1, True, 1)]
    assert await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs") == 0


@pytest.mark.usefixtures("tables")
async def test_a_failing_job_reaches_the_caller_whose_transaction_stays_usable(
    broker: Broker,
) -> None:
    with execute_jobs_synchronously():
        async with broker.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO users (id) VALUES (1)")
            with pytest.raises(WelcomeFailedError, match="no user 7"):
                await broker.enqueue(welcome(7), connection=conn)
            await broker.enqueue(welcome(1), connection=conn)
        # Outside a transaction the job runs on the connection all the same.
        async with broker.pool.acquire() as conn:
            await conn.execute("INSERT INTO users (id) VALUES (3)")
            await broker.enqueue(welcome(3), connection=conn)
    assert await _welcomed(broker) == [(1, True, 1), (3, True, 1)]


backends: list[int] = []


@define_job(name="sync_mode.backend")
async def backend() -> None:
    pool = _broker().pool
    backends.append(await pool.fetchval("SELECT pg_backend_pid()"))
    conn = await pool.acquire()
    try:
        backends.append(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await pool.release(conn)


async def test_a_job_on_the_callers_connection_gets_that_connection_from_acquire(
    broker: Broker,
) -> None:
    backends.clear()
    with execute_jobs_synchronously():
        async with broker.pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await broker.enqueue(backend(), connection=conn)
    assert backends == [pid, pid]


async def test_the_brokers_middleware_wraps_a_job_run_on_the_callers_connection(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def record(job: RunningJob, call_next: Any) -> Any:
        seen.append(job.name)
        return await call_next()

    # An empty KOYOJOBS_SECRET is an error for a new broker; the bound copy is no new broker.
    async with Broker(dsn, middleware=[record], secret="key") as broker:
        monkeypatch.setenv("KOYOJOBS_SECRET", "")
        async with broker.pool.acquire() as conn, conn.transaction():
            with execute_jobs_synchronously():
                await broker.enqueue(plain(3), connection=conn)
    assert seen == ["sync_mode.plain"]


@define_job(name="sync_mode.plain")
async def plain(n: int) -> int:
    return n


@define_job(name="sync_mode.log_then_fail")
async def log_then_fail(user_id: int) -> None:
    await log_welcome(user_id)
    raise WelcomeFailedError(f"logged {user_id}, then failed")


@pytest.mark.usefixtures("tables")
async def test_a_workflows_failing_step_rolls_back_its_own_writes_only(broker: Broker) -> None:
    wf = Workflow("on the caller's connection")
    first = wf.add(welcome(1), name="welcome")
    broken = wf.add(log_then_fail(1), after=first, name="broken")
    wf.add(welcome(2), after=broken, name="after-broken")  # cancelled: never runs
    wf.add(welcome(3), after=broken, name="cleanup", always=True)
    with execute_jobs_synchronously():
        async with broker.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO users (id) VALUES (1), (2), (3)")
            with pytest.raises(WelcomeFailedError, match="logged 1, then failed"):
                await wf.enqueue(connection=conn)
            assert await conn.fetchval("SELECT count(*) FROM users") == 3  # still usable
    # The failed step's log row went with its savepoint; the others' stayed.
    assert await _welcomed(broker) == [(1, True, 1), (2, False, 0), (3, True, 1)]
