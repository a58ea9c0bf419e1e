"""koyojobs.sync: enqueue from synchronous code, on psycopg connections, against a real
PostgreSQL and real workers. (The Django connection: tests/django_project.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pendulum
import psycopg
import pytest

from koyojobs import Broker, Status, execute_jobs_synchronously, schedule_at, sync
from koyojobs.testing import assert_enqueued, assert_not_enqueued
from tests import jobs
from tests.conftest import wait_for_status
from tests.integration.conftest import StartWorker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KOYOJOBS_DSN", dsn)
    monkeypatch.delenv("KOYOJOBS_SECRET", raising=False)
    sync.configure()
    yield
    sync.configure()  # closes the connections kept for this test's database


async def _count(broker: Broker) -> int:
    found: int = await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs")
    return found


async def test_own_connection_stores_the_async_paths_bytes_signed_alike(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOYOJOBS_SECRET", "k1")
    async with Broker(dsn) as broker:
        async_id = await broker.enqueue(jobs.echo({"a": [1, 2]}))
        sync_id = await asyncio.to_thread(sync.enqueue, jobs.echo({"a": [1, 2]}))
        rows = await broker.pool.fetch(
            "SELECT id, name, queue, priority, max_attempts, args FROM koyojobs_jobs ORDER BY id"
        )
    assert [r["id"] for r in rows] == [async_id, sync_id]
    assert dict(rows[0]) | {"id": 0} == dict(rows[1]) | {"id": 0}
    assert rows[1]["args"].startswith(b"KJS2")  # signed


async def test_a_rolled_back_transaction_leaves_no_job(broker: Broker, dsn: str) -> None:
    def enqueue_and_roll_back() -> int | None:
        with psycopg.connect(dsn) as conn:
            job_id = sync.enqueue(jobs.echo(1), connection=conn)
            ids = sync.enqueue_many([jobs.echo(2), jobs.echo(3)], connection=conn)
            assert ids is not None and len(ids) == 2
            conn.rollback()
            return job_id

    assert await asyncio.to_thread(enqueue_and_roll_back) is not None
    assert await _count(broker) == 0


async def test_a_commit_wakes_an_idle_worker_by_notify(
    broker: Broker, dsn: str, start_worker: StartWorker
) -> None:
    await start_worker(poll_interval=30)
    # Once a first job's outcome is written, the worker has claimed and found
    # nothing more: it sleeps until woken or for 30 s.
    await wait_for_status(broker, await broker.enqueue(jobs.echo("first")), Status.DONE)
    assert broker.listener is not None and broker.listener.connected

    def enqueue_and_commit() -> int | None:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute("SELECT 1")
            return sync.enqueue(jobs.echo("woken"), connection=conn)

    job_id = await asyncio.to_thread(enqueue_and_commit)
    assert job_id is not None
    # Well under the 30 s poll: only the NOTIFY of the commit can explain it.
    job = await wait_for_status(broker, job_id, Status.DONE, timeout=5)
    assert job.result == "woken"


async def test_enqueue_many_on_a_connection_keeps_order_and_schedules(
    broker: Broker, dsn: str
) -> None:
    later = pendulum.now("UTC").add(hours=1)

    def insert() -> list[int] | None:
        with psycopg.connect(dsn) as conn:
            calls = [jobs.echo(0), schedule_at(later, jobs.echo(1)), jobs.ordered("x")]
            return sync.enqueue_many(calls, connection=conn)

    ids = await asyncio.to_thread(insert)
    assert ids is not None and len(ids) == 3
    rows = await broker.pool.fetch(
        "SELECT id, name, queue, scheduled_at > now() + interval '50 minutes' AS later "
        "FROM koyojobs_jobs ORDER BY id"
    )
    assert [r["id"] for r in rows] == ids
    assert [(r["name"], r["queue"], r["later"]) for r in rows] == [
        ("tests.jobs.echo", "default", False),
        ("tests.jobs.echo", "default", True),
        ("tests.jobs.ordered", "ordered", False),
    ]
    assert await asyncio.to_thread(sync.enqueue_many, []) == []


async def test_eight_threads_enqueueing_at_once_lose_nothing(broker: Broker) -> None:
    per_thread = 50
    barrier = threading.Barrier(8)
    found: list[list[int]] = []

    def enqueue_some(thread: int) -> None:
        barrier.wait()
        ids = []
        for n in range(per_thread):
            job_id = sync.enqueue(jobs.echo((thread, n)))
            assert job_id is not None
            ids.append(job_id)
        found.append(ids)

    threads = [threading.Thread(target=enqueue_some, args=(t,)) for t in range(8)]

    def start_and_join() -> None:
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    await asyncio.to_thread(start_and_join)
    ids = [job_id for ids in found for job_id in ids]
    assert len(ids) == len(set(ids)) == 8 * per_thread
    stored = await broker.pool.fetch("SELECT id FROM koyojobs_jobs")
    assert sorted(r["id"] for r in stored) == sorted(ids)
    for thread in range(8):
        await assert_enqueued(jobs.echo, (thread, per_thread - 1))


async def test_a_connection_ended_by_the_server_is_replaced(broker: Broker) -> None:
    assert await asyncio.to_thread(sync.enqueue, jobs.echo(1)) == 1
    # With a timeout it returns once the session is gone: its goodbye has been sent.
    ended = await broker.pool.fetch(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE query LIKE 'INSERT INTO koyojobs_jobs%' AND datname = current_database()"
    )
    assert [row[0] for row in ended] == [True]
    assert await asyncio.to_thread(sync.enqueue, jobs.echo(2)) == 2


async def test_assert_enqueued_sees_what_sync_enqueued(broker: Broker) -> None:
    await assert_not_enqueued(jobs.echo)
    await asyncio.to_thread(sync.enqueue, jobs.echo(7))
    await asyncio.to_thread(sync.enqueue_many, [jobs.echo(8), jobs.echo(9)])
    for value in (7, 8, 9):
        await assert_enqueued(jobs.echo, value)


def test_the_synchronous_mode_runs_the_job_inline() -> None:
    jobs.runs.clear()
    with execute_jobs_synchronously():
        assert sync.enqueue(jobs.echo("inline")) < 0  # the inline run's: no row has it
        assert all(i < 0 for i in sync.enqueue_many([jobs.echo(1), jobs.echo(2)]))
    assert jobs.runs == [("echo", "inline"), ("echo", 1), ("echo", 2)]
    with execute_jobs_synchronously(), pytest.raises(ValueError, match="always"):
        sync.enqueue(jobs.always_fails())


async def test_called_in_an_event_loop_it_says_to_await(broker: Broker) -> None:
    with pytest.raises(RuntimeError) as caught:
        sync.enqueue(jobs.echo(1))
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "koyojobs.sync.enqueue() was called inside a running event loop: "
        "await the job call instead (await my_job(...))"
    )
    with pytest.raises(RuntimeError, match=r"^koyojobs.sync.enqueue_many\(\) was called inside"):
        sync.enqueue_many([jobs.echo(1)])
    assert await _count(broker) == 0


def test_a_non_job_call_is_named() -> None:
    with pytest.raises(TypeError) as caught:
        sync.enqueue(jobs.echo.fn)  # type: ignore[call-overload]
    assert str(caught.value).startswith(
        "koyojobs.sync.enqueue() needs a job call such as my_job(1, 2), got <function echo"
    )
    with pytest.raises(TypeError, match=r"enqueue_many\(\) needs job calls .*, got 3$"):
        sync.enqueue_many([jobs.echo(1), 3])  # type: ignore[list-item]


async def test_a_connection_of_an_unknown_type_is_named(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(TypeError) as caught:
            await asyncio.to_thread(sync.enqueue, jobs.echo(1), conn)
    finally:
        await conn.close()
    assert str(caught.value) == (
        "connection= must be a psycopg 3 connection or a Django connection, got "
        "asyncpg.connection.Connection "
        "(an asyncpg connection: await broker.enqueue(call, connection=conn))"
    )
    with pytest.raises(TypeError, match=r"got builtins\.object$"):
        await asyncio.to_thread(sync.enqueue, jobs.echo(1), object())


def test_no_dsn_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOYOJOBS_DSN")
    with pytest.raises(RuntimeError) as caught:
        sync.enqueue(jobs.echo(1))
    assert str(caught.value) == (
        "no database to enqueue on: set KOYOJOBS_DSN, pass connection=..., "
        "or call koyojobs.sync.configure(dsn=...)"
    )


def test_a_database_that_refuses_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOYOJOBS_DSN", "postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(ConnectionError) as caught:
        sync.enqueue(jobs.echo(1))
    message = str(caught.value)
    assert message.startswith("cannot connect to postgresql://nobody:***@127.0.0.1:1/none: ")
    assert "\n" not in message and "secret" not in message


def test_importing_koyojobs_imports_neither_psycopg_nor_django() -> None:
    code = (
        "import sys, koyojobs, koyojobs.sync, koyojobs.testing, koyojobs.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'django')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_a_caller_transaction_costs_one_round_trip(dsn: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT 1")
        with trace.open("w") as out:
            conn.pgconn.trace(out.fileno())
            started = time.monotonic()
            sync.enqueue(jobs.echo(1), connection=conn)
            conn.pgconn.untrace()
    assert time.monotonic() - started < 5
    # Each message's line: time, F (frontend) or B (backend), length, type, fields.
    messages = [
        (fields[1], fields[3])
        for fields in (line.split("\t") for line in trace.read_text().splitlines())
        if len(fields) > 3 and fields[1] in ("F", "B")
    ]
    directions = "".join(direction for direction, _ in messages)
    # Parse, Bind, Describe, Execute, Sync in one flight, then the answer: one round trip.
    assert directions == "FFFFFBBBBBB", messages
    assert [kind for direction, kind in messages if direction == "F"][-1] == "Sync"


def _kept_backend(dsn: str) -> int:
    # White-box: the server session of the connection koyojobs.sync keeps for dsn.
    (conn,) = sync._idle[dsn]
    backend: int = conn.info.backend_pid
    return backend


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents(dsn: str) -> None:
    assert sync.enqueue(jobs.echo(1)) == 1
    parent_backend = _kept_backend(dsn)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, as a pre-forking web server's worker
        code = 1
        try:
            sync.enqueue(jobs.echo(2))
            os.write(writer, str(_kept_backend(dsn)).encode())
            sync.configure()  # closes what the child opened, as its exit would
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    _, status = os.waitpid(pid, 0)
    child_backend = int(os.read(reader, 64) or 0)
    os.close(reader)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_backend not in (0, parent_backend)
    assert sync.enqueue(jobs.echo(3)) == 3
    assert _kept_backend(dsn) == parent_backend  # the parent's session lived on


def test_a_malformed_dsn_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOYOJOBS_DSN", "postgresql://u:hunter2@h:notaport/db")
    with pytest.raises(ConnectionError) as caught:
        sync.enqueue(jobs.echo(1))
    message = str(caught.value)
    assert message.startswith("cannot connect to postgresql://u:***@h:notaport/db: ")
    assert "\n" not in message and "hunter2" not in message


def test_the_synchronous_mode_refuses_a_wrong_connection_too() -> None:
    with execute_jobs_synchronously(), pytest.raises(TypeError, match=r"got builtins\.object$"):
        sync.enqueue(jobs.echo(1), connection=object())


async def test_unique_and_limited_jobs_enqueue_from_sync_code_as_from_async(
    broker: Broker, dsn: str
) -> None:
    from tests import flow_jobs

    first = await asyncio.to_thread(sync.enqueue, flow_jobs.unique_by_user(5, "a"))
    with psycopg.connect(dsn) as conn:
        ids = await asyncio.to_thread(
            sync.enqueue_many,
            [flow_jobs.unique_by_user(5, "b"), flow_jobs.free(1), flow_jobs.unique_by_user(6)],
            connection=conn,
        )
    assert ids is not None and ids[0] == first and len(set(ids)) == 3
    same = await broker.enqueue(flow_jobs.unique_by_user(6, "c"))
    assert same == ids[2]
    limited = await asyncio.to_thread(sync.enqueue, flow_jobs.per_tenant("/dev/null", "acme", 0))
    key = await broker.pool.fetchval("SELECT limit_key FROM koyojobs_jobs WHERE id = $1", limited)
    assert key == "flow.per_tenant\x1facme"
