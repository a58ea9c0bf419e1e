"""Faults of the database side: a dropped LISTEN connection, a restarting server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from koyojobs import Broker, Status, Worker, set_current_broker
from koyojobs.testing import TemporaryPostgres
from tests.conftest import wait_for_status
from tests.faults import jobs
from tests.faults.conftest import until


@pytest.fixture
def listener_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # Attached to the listener's logger itself, so the records arrive even if
    # something (the CLI's logging setup) stopped "koyojobs" from propagating.
    logger = logging.getLogger("koyojobs.listener")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


async def test_a_dropped_listen_connection_reconnects_and_wakeups_are_fast_again(
    broker: Broker, dsn: str, listener_log: pytest.LogCaptureFixture
) -> None:
    # A 30 s poll: a job picked up within seconds was woken by a notification.
    async with Worker(broker, poll_interval=30, lease=2.0):
        listener = broker.listener
        assert listener is not None
        started = time.monotonic()
        await wait_for_status(broker, await jobs.quick(1), Status.DONE, timeout=5)
        assert time.monotonic() - started < 5

        old_pid = listener.backend_pid
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        finally:
            await conn.close()
        await until(lambda: listener.reconnects >= 1, timeout=10, what="LISTEN reconnected")
        assert listener.backend_pid not in (None, old_pid)

        started = time.monotonic()
        job = await wait_for_status(broker, await jobs.quick(2), Status.DONE, timeout=5)
        assert time.monotonic() - started < 5, "woken by the 30 s poll, not by NOTIFY"
        assert job.result == 2

    warnings = [
        r.getMessage()
        for r in listener_log.records
        if r.name == "koyojobs.listener" and r.levelno == logging.WARNING
    ]
    assert any("LISTEN connection lost" in m for m in warnings), warnings
    assert any("LISTEN connection restored" in m for m in warnings), warnings


@pytest.mark.timeout(120)
async def test_a_database_restart_under_load_loses_no_job_and_runs_none_twice_at_once() -> None:
    pg = TemporaryPostgres()
    await asyncio.to_thread(pg.start)
    try:
        await _restart_under_load(pg)
    finally:
        await asyncio.to_thread(pg.stop)


async def _restart_under_load(pg: TemporaryPostgres) -> None:
    # The cluster runs with synchronous_commit=off, under which an immediate
    # (crash) restart may forget commits it acknowledged: turn it back on here.
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")
    finally:
        await conn.close()

    jobs.runs.clear()
    enqueued: list[int] = []
    errors: defaultdict[str, int] = defaultdict(int)
    progress = asyncio.Event()
    stop = asyncio.Event()

    async def produce(broker: Broker) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                # Mostly short jobs, and some still running when the server goes.
                job_id = await jobs.work(1.0 if n % 10 == 0 else 0.01)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                errors[type(exc).__name__] += 1
            else:
                assert job_id is not None
                enqueued.append(job_id)
            if len(enqueued) - _finished() > 100:
                # Enough backlog: enqueue again on progress, or soon anyway.
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 0.05)

    def _finished() -> int:
        return len({r[0] for r in jobs.runs if r[3] is not None})

    def state() -> str:
        # What the process was doing, for a failure's message.
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=3, file=stacks)
        return (
            f"{len(enqueued)} enqueued, {dict(errors)}, running: {[w.running for w in workers]}, "
            f"latest runs: {jobs.runs[-8:]} at {time.monotonic()}\n{stacks.getvalue()}"
        )

    async def done_count(broker: Broker) -> int:
        try:
            return int(
                await broker.pool.fetchval(
                    "SELECT count(*) FROM koyojobs_jobs WHERE status = 'done'"
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return -1  # the server is away: ask again

    async def more_done(broker: Broker, n: int) -> None:
        base = max(0, await done_count(broker))

        async def reached() -> bool:
            progress.set()
            return await done_count(broker) >= base + n

        await until(reached, timeout=30, what=f"{n} more jobs done", details=state)

    async def long_job_running() -> None:
        # So that the restart cuts through a run, its lease and its outcome.
        await until(
            lambda: any(
                r[3] is None and r[4] > 0.1 and time.monotonic() - r[2] < 0.2 for r in jobs.runs
            ),
            timeout=10,
            what="a long job running",
            interval=0.005,
            details=state,
        )

    async with Broker(pg.dsn) as broker:
        set_current_broker(broker)
        workers = [Worker(broker, pool_size=4, lease=0.25, poll_interval=0.1) for _ in range(2)]
        producer = asyncio.create_task(produce(broker))
        try:
            for worker in workers:
                await worker.start()
            await more_done(broker, 100)
            await long_job_running()
            await asyncio.to_thread(pg.restart, "fast")
            await more_done(broker, 100)
            await long_job_running()
            await asyncio.to_thread(pg.restart, "immediate")
            await more_done(broker, 100)
            stop.set()
            await producer

            async def settled() -> bool:
                try:
                    rows = await broker.pool.fetch(
                        "SELECT status, count(*) AS n FROM koyojobs_jobs GROUP BY 1"
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    return False
                return {r["status"]: r["n"] for r in rows}.keys() == {"done"}

            await until(settled, timeout=30, what="every job done", interval=0.1)
        finally:
            stop.set()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            for worker in workers:
                await worker.stop()
            set_current_broker(None)

        rows = await broker.pool.fetch("SELECT id, status, attempts FROM koyojobs_jobs")

    statuses = {r["id"]: r["status"] for r in rows}
    attempts = {r["id"]: r["attempts"] for r in rows}
    # Every enqueue that returned an id made a job, and it is done; so is every
    # job whose enqueue raised but had committed.
    assert set(enqueued) <= set(statuses)
    assert set(statuses.values()) == {"done"}
    # Each claim ran the body at most once, and one job never ran twice at once.
    by_job: defaultdict[int, list[list[float]]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for job_id, attempt, began, ended, _ in jobs.runs:
        assert (job_id, attempt) not in seen, f"claim {attempt} of job {job_id} ran twice"
        seen.add((job_id, attempt))
        assert attempt <= attempts[job_id]
        by_job[job_id].append([began, ended])
    assert set(by_job) == set(statuses), "a job is done that never ran"
    for job_id, spans in by_job.items():
        spans.sort()
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert end is not None and end <= begin, f"job {job_id} ran twice at once: {spans}"
    print(
        f"{len(enqueued)} enqueued, {sum(errors.values())} enqueue errors {dict(errors)}, "
        f"{len(jobs.runs) - len(by_job)} runs lost and redone"
    )


async def test_a_run_whose_lease_renewal_hangs_stops_before_its_lease_can_lapse(
    broker: Broker, dsn: str
) -> None:
    lease = 0.5
    jobs.runs.clear()
    set_current_broker(broker)
    try:
        async with Worker(broker, lease=lease, poll_interval=0.1):
            job_id = await jobs.work(3.0)
            await until(lambda: jobs.runs, what="the job started")
            # Another session locks the row: the worker's renewal waits on it,
            # and no one can rescue the job meanwhile.
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT 1 FROM koyojobs_jobs WHERE id = $1 FOR UPDATE", job_id
                    )
                    locked = time.monotonic()
                    await until(
                        lambda: jobs.runs[0][3] is not None,
                        timeout=2 * lease,
                        what="the run stopped while its renewal hangs",
                        interval=0.005,
                    )
                    assert jobs.runs[0][3] - locked < lease + 0.1
            finally:
                await conn.close()
            job = await wait_for_status(broker, job_id, Status.DONE, timeout=10)
    finally:
        set_current_broker(None)
    assert job.attempts == 2
    (_, _, _, first_end, _), (_, _, second_start, _, _) = jobs.runs
    assert first_end <= second_start


@pytest.mark.timeout(30)
async def test_the_pools_failed_reconnects_are_one_line_with_their_cause(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncpg's pool reopens its floor of connections (min_size) by itself when
    # one is lost, and logs each failed try at WARNING with a traceback: in an
    # outage, a traceback a second in the worker's log for a refused connection.
    from koyojobs import Database
    from tests.proxy import BlackholeProxy

    proxy = BlackholeProxy(dsn)
    await proxy.start()
    database = Database(proxy.dsn, min_size=1, max_size=2)
    await database.start()
    logger = logging.getLogger("asyncpg.pool")
    logger.addHandler(caplog.handler)
    try:
        await proxy.stop()  # the pool's connection is lost, and a new one refused
        await until(
            lambda: [r for r in caplog.records if r.name == "asyncpg.pool"],
            what="the pool's failed reconnect logged",
        )
    finally:
        logger.removeHandler(caplog.handler)
        await database.stop()
    [record, *_] = [r for r in caplog.records if r.name == "asyncpg.pool"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None, "a traceback for a refused connection"
    assert "cause=ConnectionRefusedError" in record.getMessage(), record.getMessage()


@pytest.mark.timeout(60)
async def test_a_stop_that_cannot_reach_the_database_logs_one_line_per_failure(
    dsn: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Outcomes to write and a run to put back, and the database out of reach:
    # a refused connection is one line with its cause, as everywhere else.
    from tests.proxy import BlackholeProxy

    proxy = BlackholeProxy(dsn)
    await proxy.start()
    finish = tmp_path / "finish"
    logger = logging.getLogger("koyojobs.worker")
    logger.addHandler(caplog.handler)
    try:
        async with Broker(proxy.dsn) as broker:
            worker = Worker(broker, lease=5.0, poll_interval=0.2, shutdown_grace=0.5)
            await worker.start()
            try:
                quick = await broker.enqueue(jobs.finish_when_file(str(finish)))
                stuck = await broker.enqueue(jobs.hang())
                async with Broker(dsn, migrate=False) as direct:
                    await until(
                        lambda: direct.pool.fetchval(
                            "SELECT count(*) = 2 FROM koyojobs_jobs"
                            " WHERE id = ANY($1::bigint[]) AND status = 'running'",
                            [quick, stuck],
                        ),
                        what="both jobs running",
                    )
                await proxy.stop()  # every connection closed, every new one refused
                finish.touch()  # an outcome that cannot be written
            finally:
                await worker.stop()
    finally:
        logger.removeHandler(caplog.handler)
    stopping = [
        r
        for r in caplog.records
        if r.getMessage().startswith(("recording outcomes at stop failed", "could not put"))
    ]
    assert {r.getMessage().split(";")[0] for r in stopping} == {
        "recording outcomes at stop failed",
        "could not put unfinished jobs back",
    }, [r.getMessage() for r in stopping]
    assert all(r.exc_info is None for r in stopping), "a traceback for a refused connection"
    assert all(getattr(r, "cause", None) for r in stopping), "no cause on the line"
